"""The gRPC side of the query log: OpenTelemetry logs from the sidecars' DNS filters
(one record per WARN or denied query), fed into ``QueryLog`` (``querylog.py``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from controlplane.core.errors import AuthUnavailable, Unauthenticated
from controlplane.identity.auth import Authenticator, node_refusal, tenant_refusal
from controlplane.identity.limits import CallerLimits
from controlplane.telemetry.querylog import QueryLog, QueryRecord

log = logging.getLogger("controlplane.dns")

LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
# Generated (upb) classes without type stubs.
ExportRequest: Any = logs_service_pb2.ExportLogsServiceRequest  # type: ignore[attr-defined]
ExportResponse: Any = logs_service_pb2.ExportLogsServiceResponse  # type: ignore[attr-defined]


def _field(message: Any, name: str, old_name: str) -> Any:
    """OTLP renamed these fields (same numbers); the bundled classes may have either name."""
    descriptor = message.DESCRIPTOR.fields_by_name
    return getattr(message, name if name in descriptor else old_name)


class QueryLogService:
    """The ``Export`` handler.

    With an authenticator (the same as ADS), every call must carry the sidecar's
    credentials (``bootstrap.py`` has Envoy add them to every call on ``xds_cluster``):
    UNAUTHENTICATED without, UNAVAILABLE when they cannot be checked now. Each batch's
    node (the resource attribute ``node_name``) must be bound to that identity
    (``auth.node_refusal``: PERMISSION_DENIED) and within its caps (``limits``:
    RESOURCE_EXHAUSTED), and with ``node_caller`` the node's ADS stream must have been
    opened by the same caller (two tokens of one tenant cannot write for each other's
    nodes, as on the stats sink). With ``node_tenant``, a record counts only when its node
    has a connected ADS stream of the tenant it names. Refused records are counted by
    reason.
    """

    def __init__(self, query_log: QueryLog, *,
                 node_tenant: Callable[[str], str | None] | None = None,
                 on_record: Callable[[QueryRecord], None] | None = None,
                 authenticator: Authenticator | None = None,
                 limits: CallerLimits | None = None,
                 node_caller: Callable[[str], str] | None = None) -> None:
        self.query_log = query_log
        self.node_caller = node_caller
        self.node_tenant = node_tenant
        self.on_record = on_record
        self.authenticator = authenticator
        self.limits = limits or CallerLimits()

    async def export(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        identity = None
        if self.authenticator is not None:
            try:
                identity = await self.authenticator.identify(
                    tuple(context.invocation_metadata() or ()))
            except (Unauthenticated, AuthUnavailable) as exc:
                self.query_log.reject("unauthenticated", records=_count(request))
                code = (grpc.StatusCode.UNAVAILABLE if isinstance(exc, AuthUnavailable)
                        else grpc.StatusCode.UNAUTHENTICATED)
                await context.abort(code, str(exc))
        nodes = {_node(r) for r in request.resource_logs}
        if identity is not None:
            for node in sorted(nodes):
                owner = self.node_tenant(node) if self.node_tenant else None
                denied = node_refusal(identity, node) or (
                    tenant_refusal(identity, owner) if owner is not None else None)
                holder = self.node_caller(node) if self.node_caller else ""
                if not denied and holder and holder != identity.key:
                    denied = (f"node {node!r} is another caller's: its ADS stream was opened "
                              "with another token")
                if denied:
                    self.query_log.reject("wrong_node", records=_count(request))
                    log.warning("query log records refused: %s", denied,
                                extra={"node": node})
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, denied)
            admitted: list[str] = []
            try:
                for node in sorted(nodes):
                    full = self.limits.admit("querylog", identity, node)
                    if full:
                        self.query_log.reject("too_many_calls", records=_count(request))
                        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, full)
                    admitted.append(node)
                self._ingest(request)
            finally:
                for node in admitted:
                    self.limits.release("querylog", identity, node)
        else:
            self._ingest(request)
        return ExportResponse()

    def _ingest(self, request: Any) -> None:
        for resource_logs in request.resource_logs:
            node = _node(resource_logs)
            owner = self.node_tenant(node) if self.node_tenant else None
            for scope in _field(resource_logs, "scope_logs", "instrumentation_library_logs"):
                for record in _field(scope, "log_records", "logs"):
                    attrs = {kv.key: kv.value.string_value for kv in record.attributes}
                    tenant = attrs.get("tenant", "")
                    if self.node_tenant is not None and owner != tenant:
                        self.query_log.reject("not_the_nodes_tenant" if owner
                                              else "unknown_node")
                        continue
                    kept = self.query_log.ingest(tenant=tenant, node=node,
                                                 body=record.body.string_value)
                    if kept is not None and self.on_record is not None:
                        self.on_record(kept)


def _node(resource_logs: Any) -> str:
    return next((kv.value.string_value for kv in resource_logs.resource.attributes
                 if kv.key == "node_name"), "")


def _count(request: Any) -> int:
    return sum(len(_field(scope, "log_records", "logs"))
               for resource_logs in request.resource_logs
               for scope in _field(resource_logs, "scope_logs", "instrumentation_library_logs"))


def add_query_log_service(server: grpc.aio.Server, query_log: QueryLog,
                          node_tenant: Callable[[str], str | None] | None = None,
                          on_record: Callable[[QueryRecord], None] | None = None, *,
                          authenticator: Authenticator | None = None,
                          limits: CallerLimits | None = None,
                          node_caller: Callable[[str], str] | None = None) -> QueryLogService:
    """OpenTelemetry logs from the sidecars' DNS filters (per-query records): see
    ``QueryLogService``. ``on_record`` is told every WARN and deny record kept
    (per-sidecar counts, traffic.py)."""
    service = QueryLogService(query_log, node_tenant=node_tenant, on_record=on_record,
                              authenticator=authenticator, limits=limits,
                              node_caller=node_caller)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(LOGS_SERVICE, {
        "Export": grpc.unary_unary_rpc_method_handler(
            service.export,
            request_deserializer=ExportRequest.FromString,
            response_serializer=ExportResponse.SerializeToString,
        )})])
    return service


class QueryLogCollector:
    """``/metrics``: records refused at the service, by reason."""

    def __init__(self, query_log: QueryLog) -> None:
        self.query_log = query_log

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            "dnscp_query_log_refused", "Query-log records refused (unauthenticated, "
            "wrong_node, too_many_calls, unknown_node, not_the_nodes_tenant)",
            labels=["reason"])
        for reason in REFUSALS:
            family.add_metric([reason], self.query_log.refused[reason])
        yield family


REFUSALS = ("unauthenticated", "wrong_node", "too_many_calls", "unknown_node",
            "not_the_nodes_tenant")
