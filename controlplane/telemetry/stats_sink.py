"""The sidecars' DNS counters, streamed to the control plane (the boundary of dns_traffic.py).

Each sidecar's bootstrap (``bootstrap.stats_sink_config``) adds Envoy's
``envoy.stat_sinks.metrics_service``: at every stats flush Envoy sends its
counters on one long-lived ``envoy.service.metrics.v3.MetricsService/
StreamMetrics`` stream over ``xds_cluster``, the same gRPC port and
credentials as ADS. The first message of a stream names the node; later ones
carry only metrics.

What is sent. Envoy 1.40's metrics service has no filter of its own
(``MetricsServiceConfig``: grpc_service, transport_api_version,
report_counters_as_deltas, emit_tags_as_labels, histogram_emit_mode,
batch_size; a per-sink matcher is envoyproxy/envoy#26030, still open), so the
bootstrap's ``stats_config.stats_matcher`` decides which stats exist at all:
the DNS filter's, plus a handful of xDS and TLS health stats (see
``bootstrap.SIDECAR_STATS``). Envoy sends only stats that were ever used, so a
steady sidecar's message is about 2 KB, most of it the DNS filter's three
histograms, which are ignored here.

Who may report. A report counts only for a node with a connected ADS stream,
under that stream's tenant, and only the counters of that tenant's listener
(``dns_filter.tenant.<tenant>.*``); with authentication on, the metrics stream
must carry the credentials of the node itself (the same ``Authenticator`` as
ADS, and the node id bound to it: ``auth.node_refusal``), within the caller's
caps (``identity/limits.py``). Counters must be finite, non-negative, at most
2**53, and never go down within a stream. Anything else is refused and counted
by reason (``dnscp_stats_reports_total{outcome}``) and per node
(``dnscp_stats_refused_reports_total{tenant,node,reason}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc

from controlplane.core.errors import AuthUnavailable, Unauthenticated
from controlplane.core.model import Workload
from controlplane.identity.auth import (
    Authenticator,
    Identity,
    authorize,
    node_refusal,
    tenant_refusal,
)
from controlplane.identity.limits import CallerLimits
from controlplane.telemetry import metrics_protos
from controlplane.telemetry.traffic import KINDS, DnsTraffic, Report

log = logging.getLogger("controlplane.stats")

METRICS_SERVICE = "envoy.service.metrics.v3.MetricsService"
DNS_PREFIX = "dns_filter."
# Envoy's DNS filter counter -> the field of Report it feeds.
COUNTERS = {"downstream_rx_queries": "queries", "externally_resolved_queries": "forwarded",
            "unanswered_queries": "nxdomain"}


# The largest counter accepted: a float holds every integer up to 2**53 exactly; Envoy's
# counters are uint64, and no sidecar counts 9e15 queries.
MAX_COUNTER = float(2**53)


def counter_problem(value: float) -> str | None:
    """Why a counter's value is refused (a reason counted per node), or None."""
    if not math.isfinite(value):
        return "not_finite"
    if value < 0:
        return "negative"
    if value > MAX_COUNTER:
        return "too_large"
    return None


def parse(message: Any, *, node: str, tenant: str, namespace: str
          ) -> tuple[Report, int, str | None]:
    """A ``StreamMetricsMessage``'s DNS counters of ``tenant`` as a Report, how many DNS
    counters named another tenant (refused), and why the counters are refused (NaN,
    infinite, negative, too large), or None."""
    prefix = f"{DNS_PREFIX}tenant.{tenant}."
    values = {"queries": 0.0, "forwarded": 0.0, "nxdomain": 0.0}
    envoy_ms = 0
    foreign = 0
    problem = None
    for family in message.envoy_metrics:
        name = family.name
        if family.type != metrics_protos.COUNTER or not name.startswith(DNS_PREFIX):
            continue
        if not name.startswith(prefix):
            foreign += 1
            continue
        field = COUNTERS.get(name[len(prefix):])
        if field is None:
            continue
        for metric in family.metric:
            problem = problem or counter_problem(metric.counter.value)
            values[field] += metric.counter.value
            envoy_ms = max(envoy_ms, metric.timestamp_ms)
    problem = problem or next(
        (p for p in map(counter_problem, values.values()) if p), None)  # sums too
    return Report(node=node, tenant=tenant, namespace=namespace, envoy_time=envoy_ms / 1000,
                  **values), foreign, problem


def went_down(report: Report, last: Report | None) -> bool:
    """A counter lower than in the stream's previous report: not an Envoy restart (that
    opens a new stream), so refused as ``not_monotonic``."""
    return last is not None and (report.queries < last.queries
                                 or report.forwarded < last.forwarded
                                 or report.nxdomain < last.nxdomain)


class NodeDirectory:
    """node id -> (tenant, workload) of the connected ADS streams, read from the hub's
    ``connections`` and rebuilt at most every ``refresh`` seconds (or on a miss)."""

    def __init__(self, connections: Callable[[], Iterable[Any]], *, refresh: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._connections = connections
        self._refresh = refresh
        self._clock = clock
        self._built = -1e9
        self._nodes: dict[str, tuple[str, Workload]] = {}
        self._callers: dict[str, str] = {}

    def _rebuild(self) -> None:
        nodes: dict[str, tuple[str, Workload]] = {}
        callers: dict[str, str] = {}
        for conn in self._connections():
            w, key = conn.workload, conn.view_key
            if w is not None and key is not None and w.node_id:
                nodes[w.node_id] = (key.tenant, w)
                callers[w.node_id] = getattr(conn, "caller", "")
        self._nodes, self._callers = nodes, callers
        self._built = self._clock()

    def caller(self, node: str) -> str:
        """Who opened the node's ADS stream (``Identity.key``; "" without auth), as of the
        last ``lookup``."""
        return self._callers.get(node, "")

    def lookup(self, node: str) -> tuple[str, Workload] | None:
        now = self._clock()
        if now - self._built > self._refresh:
            self._rebuild()
        found = self._nodes.get(node)
        if found is None and now - self._built > self._refresh / 10:
            self._rebuild()  # a sidecar that just connected
            found = self._nodes.get(node)
        return found


class MetricsSink:
    """The ``StreamMetrics`` handler: a thin loop around ``DnsTraffic.report``.

    With an authenticator, a stream must carry the ADS credentials; its node (named in
    the first message) must be bound to that identity (``auth.node_refusal``:
    PERMISSION_DENIED) and within the caller's caps (``limits``: RESOURCE_EXHAUSTED).
    Each report's counters are checked: finite, non-negative, at most ``MAX_COUNTER``,
    never lower than the same stream's previous report (a lower value on a *new* stream
    is an Envoy restart, which ``DnsTraffic`` handles). A bad report is refused and
    counted for its node by reason; the stream goes on."""

    def __init__(self, traffic: DnsTraffic, directory: NodeDirectory, *,
                 authenticator: Authenticator | None = None,
                 limits: CallerLimits | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.traffic = traffic
        self.directory = directory
        self.authenticator = authenticator
        self.limits = limits or CallerLimits()
        self.clock = clock
        self.streams = 0  # open now

    def ingest(self, message: Any, node: str, identity: Identity | None,
               last: Report | None = None) -> tuple[str, Report | None]:
        """The outcome of one message, and the report that the stream's next one must
        not go below (``last`` unless this one is accepted)."""
        found = self.directory.lookup(node) if node else None
        if found is None:
            self.traffic.reject("unknown_node", node=node)
            return "unknown_node", last
        tenant, workload = found
        if identity is not None and (
                authorize(identity, workload) is not None
                or tenant_refusal(identity, tenant) is not None
                or self.directory.caller(node) not in ("", identity.key)):
            # another caller's node (its ADS stream is not this token's), or a tenant that
            # is not the token's: the node's counters are not this caller's to report
            self.traffic.reject("wrong_identity", node=node, tenant=tenant)
            return "wrong_identity", last
        report, foreign, problem = parse(message, node=node, tenant=tenant,
                                         namespace=workload.namespace)
        if foreign:
            self.traffic.reject("other_tenant", node=node, tenant=tenant)
        if problem is None and went_down(report, last):
            problem = "not_monotonic"
        if problem is not None:
            self.traffic.reject(problem, node=node, tenant=tenant)
            if self.traffic.refused[tenant][node][problem] == 1:  # the first one, not a flood
                log.warning("stats report of node %s refused: %s (counted in "
                            "dnscp_stats_refused_reports_total from now on)", node, problem,
                            extra={"node": node, "tenant": tenant})
            return problem, last
        return self.traffic.report(report, now=self.clock()), report

    async def stream_metrics(self, requests: AsyncIterator[Any],
                             context: grpc.aio.ServicerContext) -> Any:
        identity = None
        if self.authenticator is not None:
            try:
                identity = await self.authenticator.identify(
                    tuple(context.invocation_metadata() or ()))
            except (Unauthenticated, AuthUnavailable) as exc:
                code = (grpc.StatusCode.UNAVAILABLE if isinstance(exc, AuthUnavailable)
                        else grpc.StatusCode.UNAUTHENTICATED)
                self.traffic.reject("unauthenticated")
                await context.abort(code, str(exc))
        node = ""
        held = False
        last: Report | None = None
        self.streams += 1
        try:
            async for message in requests:
                if message.HasField("identifier") and not node:  # the stream's first message
                    node = message.identifier.node.id
                    if identity is not None:
                        await self._admit(identity, node, context)
                        held = True
                _, last = self.ingest(message, node, identity, last)
        finally:
            self.streams -= 1
            if held and identity is not None:
                self.limits.release("stats", identity, node)
        return metrics_protos.StreamMetricsResponse()

    async def _admit(self, identity: Identity, node: str,
                     context: grpc.aio.ServicerContext) -> None:
        """End the stream unless ``identity`` may report for ``node`` now."""
        denied = node_refusal(identity, node)
        if denied:
            self.traffic.reject("wrong_node", node=node)
            log.warning("stats stream refused: %s", denied, extra={"node": node})
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, denied)
        full = self.limits.admit("stats", identity, node)
        if full:
            self.traffic.reject("too_many_streams", node=node)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, full)


def add_metrics_service(server: grpc.aio.Server, sink: MetricsSink) -> None:
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(METRICS_SERVICE, {
        "StreamMetrics": grpc.stream_unary_rpc_method_handler(
            sink.stream_metrics,
            request_deserializer=metrics_protos.StreamMetricsMessage.FromString,
            response_serializer=metrics_protos.StreamMetricsResponse.SerializeToString,
        )})])


async def run_traffic(traffic: DnsTraffic, tenants: Callable[[], Iterable[str]],
                      stop: asyncio.Event, *, clock: Callable[[], float] = time.time,
                      history_file: Path | None = None) -> None:
    """Every ``traffic.tick`` seconds: age out silent sidecars, record a history point.
    With ``history_file``: the history is read from it first, and written to it with
    every coarse point and at stop (off the event loop), so a restart keeps it."""
    if history_file is not None:
        restored = await asyncio.to_thread(_read_history, traffic, history_file, clock())
        if restored:
            log.info("traffic history: %d points back from %s", restored, history_file)
    ticks = 0
    try:
        while not stop.is_set():
            now = clock()
            gone = traffic.expire(now=now, tenants=tenants())
            if gone:
                log.info("%d sidecars stopped reporting DNS counters and aged out", gone)
            traffic.sample(now=now)
            ticks += 1
            if history_file is not None and ticks % traffic.coarse_every == 0:
                await asyncio.to_thread(_write_history, traffic.history_state(), history_file)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), traffic.tick)
    finally:
        if history_file is not None:
            _write_history(traffic.history_state(), history_file)


def _read_history(traffic: DnsTraffic, path: Path, now: float) -> int:
    """What ``_write_history`` kept; a missing file is a first start, a broken one is
    logged and ignored (the history starts empty)."""
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as exc:
        log.warning("traffic history: %s not read (%s); starting empty", path, exc)
        return 0
    return traffic.restore_history(state, now=now)


def _write_history(state: dict[str, object], path: Path) -> None:
    """Written whole and renamed into place: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".new")
    try:
        tmp.write_text(json.dumps(state, separators=(",", ":")))
        tmp.replace(path)
    except OSError as exc:
        log.warning("traffic history: %s not written (%s)", path, exc)


HELP = {
    "queries": "DNS queries the tenant's sidecars received",
    "local": "DNS queries the tenant's sidecars answered themselves, from the table "
             "(records or NXDOMAIN)",
    "forwarded": "DNS queries the tenant's sidecars forwarded to the tenant resolver",
    "nxdomain": "DNS queries answered without a record (NXDOMAIN; NOTIMP for unsupported "
                "types), locally or by the tenant resolver",
}


# Why a counter report is refused (dnscp_stats_reports_total{outcome}).
REFUSALS = ("unauthenticated", "wrong_node", "too_many_streams", "unknown_node",
            "wrong_identity", "other_tenant", "not_finite", "negative", "too_large",
            "not_monotonic", "overflow")


class TrafficCollector:
    """``/metrics``: per tenant totals and rates, per sidecar query rate, the sink's health."""

    def __init__(self, traffic: DnsTraffic, *, clock: Callable[[], float] = time.time) -> None:
        self.traffic = traffic
        self.clock = clock

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        t = self.traffic
        now = self.clock()
        totals = t.tenant_totals()
        for i, kind in enumerate(KINDS[:4]):
            family = CounterMetricFamily(f"dnscp_dns_{kind}", HELP[kind] + " (from the "
                                         "sidecars' counters, streamed, and the tenant "
                                         "resolvers' reports)", labels=["tenant"])
            for tenant, values in sorted(totals.items()):
                family.add_metric([tenant], values[i])
            yield family
        rates = GaugeMetricFamily(
            "dnscp_dns_rate", "Per-second rate per tenant over the sidecars' last two "
            "reports, by kind (queries, local, forwarded, nxdomain, denied, warn)",
            labels=["tenant", "kind"])
        for tenant, values in sorted(t.tenant_rates(now=now).items()):
            for kind, value in zip(KINDS, values, strict=True):
                rates.add_metric([tenant, kind], value)
        yield rates
        per_sidecar = GaugeMetricFamily(
            "dnscp_sidecar_dns_query_rate", "DNS queries per second of one sidecar (the "
            "other kinds per sidecar: GET /api/v1/traffic/sidecars)", labels=["tenant", "node"])
        for car in sorted(t.sidecars.values(), key=lambda c: c.node):
            per_sidecar.add_metric([car.tenant, car.node], t.sidecar_rates(car, now)[0])
        yield per_sidecar
        reporting = GaugeMetricFamily("dnscp_stats_sidecars",
                                      "Sidecars whose DNS counters arrive, by tenant",
                                      labels=["tenant"])
        for tenant, n in sorted(t.tenant_sidecars().items()):
            reporting.add_metric([tenant], n)
        yield reporting
        outcomes = CounterMetricFamily(
            "dnscp_stats_reports", "Counter reports from the sidecars by outcome (accepted; "
            "refused: " + ", ".join(REFUSALS) + ")", labels=["outcome"])
        for outcome, n in sorted(t.reports.items()):
            outcomes.add_metric([outcome], n)
        yield outcomes
        per_node = CounterMetricFamily(
            "dnscp_stats_refused_reports", "Counter reports refused, per node and reason "
            "(tenant \"\" when the node has no ADS stream)", labels=["tenant", "node", "reason"])
        for tenant, nodes in sorted(t.refused.items()):
            for node, reasons in nodes.items():
                for reason, n in sorted(reasons.items()):
                    per_node.add_metric([tenant, node, reason], n)
        yield per_node
        yield CounterMetricFamily("dnscp_stats_sidecars_aged_out",
                                  "Sidecars dropped after they stopped reporting",
                                  value=t.aged_out)
