"""The channels sidecars write to, bound to the caller (issue 19, findings 1, 2, 4): node
ids bound to the identity, per-caller caps, the query log's per-tenant buffers and its
authenticated service, counters validated, the bootstrap's credentials on xds_cluster.
The real Envoy and the real attacks: e2e/test_attacker_channels_e2e.py."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import grpc
import pytest

from controlplane.core.errors import Unauthenticated
from controlplane.core.model import Workload
from controlplane.identity.auth import Identity, TokenAuthenticator, node_refusal
from controlplane.identity.limits import CallerLimits
from controlplane.injection.bootstrap import TOKEN_SECRET, bootstrap_config
from controlplane.policy.selection import CompiledPolicy
from controlplane.telemetry import metrics_protos
from controlplane.telemetry.querylog import QueryLog
from controlplane.telemetry.querylog_service import (
    LOGS_SERVICE,
    ExportRequest,
    _field,
    add_query_log_service,
)
from controlplane.telemetry.stats_sink import (
    MAX_COUNTER,
    METRICS_SERVICE,
    MetricsSink,
    NodeDirectory,
    add_metrics_service,
    counter_problem,
    parse,
)
from controlplane.telemetry.traffic import DnsTraffic
from tests.factories import policy

POD = Identity("pod acme/web-1", "acme", pod="web-1", bind_labels=True)
VM = Identity("acme-vms", "acme")
LISTED = Identity("billing", "acme", nodes=("billing-vm-*.acme",))


@pytest.mark.parametrize(("identity", "node", "allowed"), [
    (POD, "web-1.acme", True),
    (POD, "web-2.acme", False),  # another pod of the same namespace
    (POD, "web-1.foo", False),
    (VM, "vm-7.acme", True),
    (VM, "vm-7.foo", False),
    (VM, "acme", False),
    (VM, ".acme", False),
    (LISTED, "billing-vm-3.acme", True),
    (LISTED, "other.acme", False),
])
def test_node_ids_are_bound_to_the_identity(identity: Identity, node: str,
                                            allowed: bool) -> None:
    assert (node_refusal(identity, node) is None) is allowed


def test_static_tokens_may_list_their_nodes() -> None:
    auth = TokenAuthenticator.from_data({"tokens": [
        {"name": "billing", "token": "t", "namespace": "acme", "nodes": ["billing-vm-1.acme"]}]})
    identity = asyncio.run(auth.identify((("authorization", "Bearer t"),)))
    assert identity.nodes == ("billing-vm-1.acme",) and identity.key == "token billing"
    with pytest.raises(Exception, match="nodes must be a list"):
        TokenAuthenticator.from_data({"tokens": [
            {"token": "t", "namespace": "acme", "nodes": "billing-vm-1.acme"}]})


def test_caps_per_caller_and_channel() -> None:
    limits = CallerLimits(max_streams=3, max_nodes=2)
    assert [limits.admit("ads", POD, "web-1.acme") for _ in range(3)] == [None] * 3
    refusal = limits.admit("ads", POD, "web-1.acme")
    assert refusal is not None and "at most 3 per caller" in refusal
    assert limits.admit("stats", POD, "web-1.acme") is None  # another channel
    other = Identity("pod acme/web-2", "acme", pod="web-2")
    assert limits.admit("ads", other, "web-2.acme") is None  # another caller
    assert limits.admit("ads", VM, "a.acme") is None and limits.admit("ads", VM, "b.acme") is None
    nodes = limits.admit("ads", VM, "c.acme")
    assert nodes is not None and "node ids" in nodes
    limits.release("ads", POD, "web-1.acme")
    assert limits.admit("ads", POD, "web-1.acme") is None
    assert limits.refused == {("ads", "streams"): 1, ("ads", "nodes"): 1}
    assert limits.open_streams("ads") == 6 and limits.callers("ads") == 3


@pytest.mark.parametrize(("value", "problem"), [
    (0.0, None), (12.0, None), (MAX_COUNTER, None), (math.nan, "not_finite"),
    (math.inf, "not_finite"), (-math.inf, "not_finite"), (-1.0, "negative"),
    (MAX_COUNTER * 2, "too_large"), (1e300, "too_large"),
])
def test_counter_values(value: float, problem: str | None) -> None:
    assert counter_problem(value) == problem


def message(node: str | None, queries: float, tenant: str = "acme") -> Any:
    msg = metrics_protos.StreamMetricsMessage()
    if node is not None:
        msg.identifier.node.id = node
    family = msg.envoy_metrics.add(name=f"dns_filter.tenant.{tenant}.downstream_rx_queries",
                                   type=metrics_protos.COUNTER)
    family.metric.add(timestamp_ms=1000).counter.value = queries
    return msg


def test_parse_refuses_a_sum_that_overflows() -> None:
    msg = message("n", MAX_COUNTER)
    msg.envoy_metrics[0].metric.add(timestamp_ms=1000).counter.value = MAX_COUNTER
    assert parse(msg, node="n", tenant="acme", namespace="acme")[2] == "too_large"


class Conn:
    def __init__(self, node: str, tenant: str) -> None:
        self.workload = Workload(node_id=node, namespace=tenant)
        self.view_key = type("Key", (), {"tenant": tenant})()


class Tokens:
    """'acme' is pod acme/web-1, 'foo' is pod foo/web-9."""

    async def identify(self, metadata: Any) -> Identity:
        for k, v in metadata:
            if k == "authorization" and v == "Bearer acme":
                return POD
            if k == "authorization" and v == "Bearer foo":
                return Identity("pod foo/web-9", "foo", pod="web-9", bind_labels=True)
            if k == "authorization" and v == "Bearer acme-vm":  # a static token of acme's
                return Identity("token acme-vm", "acme")
        raise Unauthenticated("unknown token")


def test_the_stats_sink_validates_counters_per_stream() -> None:
    asyncio.run(_stats_sink())


async def _stats_sink() -> None:
    traffic = DnsTraffic()
    sink = MetricsSink(traffic, NodeDirectory(lambda: [Conn("web-1.acme", "acme")]),
                       authenticator=Tokens(), limits=CallerLimits(max_streams=1),
                       clock=lambda: 100.0)
    server = grpc.aio.server()
    add_metrics_service(server, sink)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.stream_unary(f"/{METRICS_SERVICE}/StreamMetrics",
                                        request_serializer=lambda m: m.SerializeToString(),
                                        response_deserializer=lambda b: b)

            async def send(messages: list[Any], token: str = "acme") -> grpc.StatusCode:
                async def gen() -> Any:
                    for m in messages:
                        yield m
                try:
                    await call(gen(), metadata=(("authorization", f"Bearer {token}"),))
                    return grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    return exc.code()

            assert await send([message("web-1.acme", 10), message(None, math.nan),
                               message(None, -1), message(None, 5), message(None, 20)]) \
                == grpc.StatusCode.OK
            assert traffic.sidecars["web-1.acme"].values[0] == 20
            assert await send([message("web-1.acme", 4)]) == grpc.StatusCode.OK  # a reset
            car = traffic.sidecars["web-1.acme"]
            assert car.values[0] == 4 and car.resets == 1
            assert await send([message("web-1.acme", 1, "foo")], "foo") == \
                grpc.StatusCode.PERMISSION_DENIED
    finally:
        await server.stop(0)
    assert traffic.refused["acme"]["web-1.acme"] == {"not_finite": 1, "negative": 1,
                                                    "not_monotonic": 1}
    assert traffic.refused[""]["web-1.acme"] == {"wrong_node": 1}
    assert traffic.tenant_totals()["acme"][0] == 24  # 20 retired at the reset, then 4


def test_the_query_log_keeps_a_buffer_per_tenant() -> None:
    policies = {t: CompiledPolicy.of(policy(t, blacklist=("*.bad.org",)))
                for t in ("acme", "foo")}
    log = QueryLog(lambda: policies, keep=10)
    log.classify(tenant="foo", node="f.foo", name="x.bad.org", qtype="A", rcode="NXDOMAIN")
    for i in range(25):
        log.classify(tenant="acme", node="a.acme", name=f"{i}.bad.org", qtype="A",
                     rcode="NXDOMAIN")
    assert len(log.recent(tenant="acme")) == 10
    assert [r["node"] for r in log.recent(tenant="foo")] == ["f.foo"]
    assert len(log.recent()) == 11 and log.recent(limit=1)[0]["name"] == "24.bad.org"
    del policies["foo"]  # foo deleted: its buffer goes when a new tenant's starts
    policies["bar"] = CompiledPolicy.of(policy("bar", blacklist=("*.bad.org",)))
    log.classify(tenant="bar", node="b.bar", name="y.bad.org", qtype="A", rcode="NXDOMAIN")
    assert set(log.records) == {"acme", "bar"}


def test_the_query_log_service_binds_records_to_the_caller() -> None:
    asyncio.run(_query_log_service())


def export_request(node: str, tenant: str, n: int = 1) -> Any:
    request = ExportRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.add(key="node_name").value.string_value = node
    scope = _field(resource_logs, "scope_logs", "instrumentation_library_logs").add()
    for i in range(n):
        record = _field(scope, "log_records", "logs").add()
        record.body.string_value = f"{i}.bad.org 1 3"
        record.attributes.add(key="tenant").value.string_value = tenant
    return request


async def _query_log_service() -> None:
    policies = {t: CompiledPolicy.of(policy(t, blacklist=("*.bad.org",)))
                for t in ("acme", "foo")}
    log = QueryLog(lambda: policies)
    owners = {"web-1.acme": "acme", "web-9.foo": "foo", "vm-2.acme": "acme"}
    # who opened each node's ADS stream: vm-2.acme's was another static token of acme's
    callers = {"web-1.acme": POD.key, "vm-2.acme": "token other-vm"}
    server = grpc.aio.server()
    add_query_log_service(server, log, owners.get, authenticator=Tokens(),
                          node_caller=lambda node: callers.get(node, ""))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(f"/{LOGS_SERVICE}/Export",
                                       request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=lambda b: b)

            async def send(request: Any, token: str | None) -> grpc.StatusCode:
                metadata = (("authorization", f"Bearer {token}"),) if token else ()
                try:
                    await call(request, metadata=metadata)
                    return grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    return exc.code()

            assert await send(export_request("web-9.foo", "foo"), None) == \
                grpc.StatusCode.UNAUTHENTICATED
            assert await send(export_request("web-9.foo", "foo"), "acme") == \
                grpc.StatusCode.PERMISSION_DENIED
            assert await send(export_request("web-1.acme", "foo"), "acme") == grpc.StatusCode.OK
            assert await send(export_request("web-1.acme", "acme", 3), "acme") == \
                grpc.StatusCode.OK
            # A token of the same tenant, for a node whose ADS stream another token holds.
            assert await send(export_request("vm-2.acme", "acme"), "acme-vm") == \
                grpc.StatusCode.PERMISSION_DENIED
    finally:
        await server.stop(0)
    assert log.recent(tenant="foo") == [] and len(log.recent(tenant="acme")) == 3
    assert log.refused == {"unauthenticated": 1, "wrong_node": 2, "not_the_nodes_tenant": 1}
    assert ("foo", "deny") not in log.counts


def test_the_bootstrap_puts_the_token_on_every_xds_cluster_call() -> None:
    inline = bootstrap_config(node_id="n.acme", namespace="acme", labels={}, token="t0k")
    (xds,) = [c for c in inline["static_resources"]["clusters"] if c["name"] == "xds_cluster"]
    options = xds["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    names = [f["name"] for f in options["http_filters"]]
    assert names == ["envoy.filters.http.credential_injector",
                     "envoy.filters.http.upstream_codec"]
    assert inline["static_resources"]["secrets"] == [
        {"name": TOKEN_SECRET, "generic_secret": {"secret": {"inline_string": "t0k"}}}]
    from_file = bootstrap_config(node_id="n.acme", namespace="acme", labels={},
                                 token_path="/run/token", xds_ca="ca.crt",
                                 xds_server_name="xds.test")
    (xds,) = [c for c in from_file["static_resources"]["clusters"]
              if c["name"] == "xds_cluster"]
    (lua, _) = xds["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"]
    assert 'io.open("/run/token", "r")' in lua["typed_config"]["default_source_code"][
        "inline_string"]
    assert "secrets" not in from_file["static_resources"]
    plain = bootstrap_config(node_id="n.acme", namespace="acme", labels={})
    (xds,) = [c for c in plain["static_resources"]["clusters"] if c["name"] == "xds_cluster"]
    assert "http_filters" not in xds["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    with pytest.raises(ValueError, match="no quotes"):
        bootstrap_config(node_id="n.acme", namespace="acme", labels={},
                         token_path='/run/"token', xds_ca="ca.crt", xds_server_name="x.test")


def test_ads_binds_the_node_id_and_caps_streams_per_caller() -> None:
    asyncio.run(_ads())


async def _ads() -> None:
    from envoy.config.core.v3 import base_pb2
    from envoy.service.discovery.v3 import discovery_pb2

    from controlplane.core.settings import Settings
    from controlplane.hub.hub import Hub
    from controlplane.translate.types import LISTENER_TYPE
    from controlplane.xds.server import ADS_SERVICE, add_ads_service

    hub = Hub(Settings())
    hub.readiness.loaded()
    limits = CallerLimits(max_streams=2)
    server = grpc.aio.server()
    add_ads_service(server, hub, Tokens(), limits)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            method = channel.stream_stream(
                f"/{ADS_SERVICE}/StreamAggregatedResources",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=discovery_pb2.DiscoveryResponse.FromString)

            async def open_stream(node_id: str) -> tuple[Any, grpc.StatusCode, str]:
                node = base_pb2.Node(id=node_id)
                node.metadata.update({"NAMESPACE": "acme"})
                call = method(metadata=(("authorization", "Bearer acme"),))
                await call.write(discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE,
                                                                node=node))
                try:
                    await call.read()
                    return call, grpc.StatusCode.OK, ""
                except grpc.aio.AioRpcError as exc:
                    return call, exc.code(), exc.details() or ""

            _, code, details = await open_stream("web-2.acme")  # another pod's node
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert "speaks for node 'web-1.acme' only" in details
            first, second = await open_stream("web-1.acme"), await open_stream("web-1.acme")
            assert (first[1], second[1]) == (grpc.StatusCode.OK, grpc.StatusCode.OK)
            _, code, details = await open_stream("web-1.acme")
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "pod acme/web-1 already holds 2 ads streams (at most 2 per caller)" in details
            first[0].cancel()
            async def released() -> None:  # the server sees the cancellation
                while limits.open_streams("ads") > 1:
                    await asyncio.sleep(0.01)
            await asyncio.wait_for(released(), 10)
            third = await open_stream("web-1.acme")
            assert third[1] == grpc.StatusCode.OK
            second[0].cancel()
            third[0].cancel()
    finally:
        await server.stop(grace=None)
    assert limits.refused == {("ads", "streams"): 1}


def _selector(**labels: str) -> Any:
    from controlplane.core.model import LabelSelector, labels_of
    return LabelSelector(match_labels=labels_of(labels))


def _expr(key: str, operator: str, *values: str) -> Any:
    from controlplane.core.model import LabelSelector, Requirement
    return LabelSelector(match_expressions=(Requirement(key, operator, values),))


@pytest.mark.parametrize(("fixed", "extra", "tenants"), [
    # red and blue share the namespace, split by pod selector
    ({}, [], ["blue", "red"]),  # a token without labels: either
    ({"app": "red"}, [], ["red"]),  # bound to red's label: red only
    ({"app": "red"}, ["wide"], ["red"]),  # red's selector cannot be escaped
    ({}, ["wide"], ["blue", "red", "wide"]),
    # a NotIn selector is escaped by claiming the excluded value: the wide policy
    ({"app": "green"}, ["notdb", "wide"], ["notdb", "wide"]),
    ({"app": "green", "tier": "web"}, ["notdb", "wide"], ["notdb"]),
])
def test_the_tenants_a_static_token_could_get(fixed: dict[str, str], extra: list[str],
                                              tenants: list[str]) -> None:
    from controlplane.policy.selection import reachable_tenants

    shared = {"team": "x"}
    policies = [policy("red", shared, selector=_expr("app", "In", "red")),
                policy("blue", shared, selector=_selector(app="blue")),
                policy("elsewhere", {"team": "y"})]
    more = {"wide": policy("wide", shared),
            "notdb": policy("notdb", shared, selector=_expr("tier", "NotIn", "db"))}
    policies += [more[name] for name in extra]
    assert reachable_tenants("shop", shared, fixed, policies) == tenants
