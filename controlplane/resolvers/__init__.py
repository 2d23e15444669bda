"""The tenant resolvers: one unbound per forwarding tenant, configured from
``controlplane.translate.unbound`` and started, reloaded and supervised here (``pool``);
their query reports read on a thread each (``reports``; dnstap's wire formats in
``dnstap``, pure).

May import: ``identity``, ``runtime``, ``translate``, ``dns``, ``policy``, ``core``.
"""
