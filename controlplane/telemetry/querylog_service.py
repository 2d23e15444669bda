"""The gRPC side of the query log: OpenTelemetry logs from the sidecars' DNS filters
(one record per WARN or denied query), fed into ``QueryLog`` (``querylog.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from controlplane.telemetry.querylog import QueryLog, QueryRecord

LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
# Generated (upb) classes without type stubs.
ExportRequest: Any = logs_service_pb2.ExportLogsServiceRequest  # type: ignore[attr-defined]
ExportResponse: Any = logs_service_pb2.ExportLogsServiceResponse  # type: ignore[attr-defined]


def _field(message: Any, name: str, old_name: str) -> Any:
    """OTLP renamed these fields (same numbers); the bundled classes may have either name."""
    descriptor = message.DESCRIPTOR.fields_by_name
    return getattr(message, name if name in descriptor else old_name)


def add_query_log_service(server: grpc.aio.Server, query_log: QueryLog,
                          node_tenant: Callable[[str], str | None] | None = None,
                          on_record: Callable[[QueryRecord], None] | None = None) -> None:
    """OpenTelemetry logs from the sidecars' DNS filters (per-query records).

    With ``node_tenant``, a record counts only when it comes from a connected
    node (an authenticated ADS stream when tokens are on) of the tenant it
    names, so a workload cannot fill another tenant's records. ``on_record`` is
    told every WARN and deny record kept (per-sidecar counts, traffic.py).
    """

    async def export(request: Any, context: grpc.aio.ServicerContext) -> Any:
        for resource_logs in request.resource_logs:
            resource = {kv.key: kv.value.string_value
                        for kv in resource_logs.resource.attributes}
            node = resource.get("node_name", "")
            owner = node_tenant(node) if node_tenant else None
            for scope in _field(resource_logs, "scope_logs", "instrumentation_library_logs"):
                for record in _field(scope, "log_records", "logs"):
                    attrs = {kv.key: kv.value.string_value for kv in record.attributes}
                    tenant = attrs.get("tenant", "")
                    if node_tenant is not None and owner != tenant:
                        query_log.reject(tenant, node)
                        continue
                    kept = query_log.ingest(tenant=tenant, node=node,
                                            body=record.body.string_value)
                    if kept is not None and on_record is not None:
                        on_record(kept)
        return ExportResponse()

    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(LOGS_SERVICE, {
        "Export": grpc.unary_unary_rpc_method_handler(
            export,
            request_deserializer=ExportRequest.FromString,
            response_serializer=ExportResponse.SerializeToString,
        )})])
