"""The tenant resolvers: one unbound per forwarding tenant, configured from
``controlplane.translate.unbound`` and started, reloaded and supervised here (``pool``).

May import: ``identity``, ``runtime``, ``translate``, ``dns``, ``policy``, ``core``.
"""
