"""What the sidecars report and what we log: the stats sink (``stats_sink``) and the
per-tenant traffic it feeds (``traffic``, pure), Envoy's metrics-service wire types
(``metrics_protos``), the query log (``querylog``) and the gRPC service that fills it
(``querylog_service``), the tenant resolvers' reports made into the same records and
counters (``resolver_reports``), a tenant resolver's forwarding from its unbound counters
(``resolver_forwarding``, pure), structured logs (``logs``).

May import: ``identity``, ``runtime``, ``policy``, ``core``.
"""
