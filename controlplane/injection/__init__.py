"""Sidecar injection: what a pod gets (``sidecar``, pure), the AdmissionReview as a pure
function (``admission``) after its shape is checked (``review_shape``, pure), the HTTPS
webhook around it (``webhook``) and who called it (``caller``: the API server, proven,
or not), the Envoy bootstrap a sidecar starts with (``bootstrap``, pure), its DNS front's
addresses and kresd configuration (``front``, pure), and one sidecar run as processes
outside Kubernetes (``node``: ``controlplane sidecar``).

May import: ``identity``, ``runtime``, ``translate`` (the front's configuration), ``dns``
(its address type), ``core``.
"""
