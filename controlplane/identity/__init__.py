"""Who is calling: sidecar tokens, the authenticator interface and the binding of node ids
to callers (``auth``), per-caller caps on streams and node ids (``limits``), the
TokenReview implementation (``tokenreview``), who may read the admin API
(``admin_auth``), certificates made here (``certs``) and served from files (``tlsfiles``).

May import: ``core``. The Kubernetes calls behind the reviews live in ``controlplane.kube``.
"""
