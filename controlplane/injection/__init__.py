"""Sidecar injection: what a pod gets (``sidecar``, pure), the AdmissionReview as a pure
function (``admission``), the HTTPS webhook around it (``webhook``), and the Envoy
bootstrap a sidecar starts with (``bootstrap``, pure).

May import: ``identity``, ``runtime``, ``core``.
"""
