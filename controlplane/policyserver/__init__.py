"""External policy servers: the ext_authz gRPC client and the decider that fills the
decision cache (``client``). The cache itself is pure (``controlplane.policy.decisions``).

May import: ``identity``, ``runtime``, ``dns``, ``policy``, ``core``.
"""
