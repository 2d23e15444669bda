"""Who is calling: sidecar tokens and the authenticator interface (``auth``), the
TokenReview implementation (``tokenreview``), who may read the admin API
(``admin_auth``), certificates made here (``certs``) and served from files (``tlsfiles``).

May import: ``core``. The Kubernetes calls behind the reviews live in ``controlplane.kube``.
"""
