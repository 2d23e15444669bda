"""External policy decisions: the CheckRequest asked, the answer read, the cache, the
failure mode, and what the tenant's view makes of them."""

from __future__ import annotations

import pytest
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf.struct_pb2 import Struct

from controlplane.core.errors import BadDecision, InputError
from controlplane.core.inventory import Inventory
from controlplane.core.manifests import parse_object
from controlplane.core.model import (
    DefaultAction,
    DnsPolicy,
    FailureMode,
    LabelSelector,
    Namespace,
    PolicyServer,
    Service,
)
from controlplane.core.settings import DnsSettings
from controlplane.dns.status import policy_status
from controlplane.dns.views import build_tenant_view, cluster_records
from controlplane.policy.decisions import (
    DecisionCache,
    ExternalDecision,
    Question,
    check_request,
    decision_from_response,
    failure_mode,
)
from tests.factories import policy_manifest


def test_check_request_carries_the_question() -> None:
    req = check_request(Question(tenant="acme", name="www.example.com", qtype="AAAA",
                                 namespace="shop", labels=(("app", "web"),),
                                 service_account="web", node="web-1.shop",
                                 namespaces=("shop",)))
    attrs = req.attributes
    assert attrs.request.http.host == "www.example.com"
    assert (attrs.request.http.method, attrs.request.http.path) == ("DNS", "/AAAA")
    assert dict(attrs.request.http.headers)["x-dns-tenant"] == "acme"
    assert dict(attrs.source.labels) == {"app": "web"}
    assert attrs.source.principal == "spiffe://cluster.local/ns/shop/sa/web"
    assert dict(attrs.context_extensions) == {"dns.name": "www.example.com", "dns.type": "AAAA",
                                              "dns.tenant": "acme", "dns.namespace": "shop",
                                              "dns.namespaces": "shop",
                                              "dns.node": "web-1.shop"}
    assert dict(attrs.request.http.headers)["x-dns-namespaces"] == "shop"
    assert check_request(Question(tenant="acme", name="x")).attributes.request.http.path == "/"


def _resp(code: int, meta: dict[str, object] | None = None) -> external_auth_pb2.CheckResponse:
    r = external_auth_pb2.CheckResponse()
    r.status.code = code
    if meta:
        s = Struct()
        s.update(meta)
        r.dynamic_metadata.CopyFrom(s)
    return r


@pytest.mark.parametrize(("resp", "expected"), [
    (_resp(0), (True, 100.0 + 60)),
    (_resp(7), (False, 160.0)),
    (_resp(16), (False, 160.0)),
    (_resp(0, {"dns.ttl_seconds": 5}), (True, 105.0)),
    (_resp(7, {"ttl_seconds": 0}), (False, 100.0)),
    (_resp(13), "neither OK nor a denial"),
    (_resp(0, {"dns.ttl_seconds": "soon"}), "must be a number of seconds"),
    (_resp(0, {"dns.ttl_seconds": -1}), "must be a number of seconds"),
    (_resp(0, {"dns.per_type": "yes"}), "dns.per_type must be true or false"),
])
def test_decision_from_response(resp: external_auth_pb2.CheckResponse,
                                expected: tuple[bool, float] | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(BadDecision, match=expected):
            decision_from_response(resp, now=100.0, default_ttl=60)
        return
    got = decision_from_response(resp, now=100.0, default_ttl=60)
    assert (got.allow, got.expires_at) == expected and got.from_server


def test_cache_lifetimes_changes_and_bound() -> None:
    cache = DecisionCache(max_entries=2)
    d = ExternalDecision(True, expires_at=10, decided_at=0, source="server")
    assert cache.put("t", "a", d) is True
    assert cache.put("t", "a", d) is False  # same answer: no change
    assert cache.get("t", "a", now=9) == d and cache.get("t", "a", now=10) is None
    assert cache.last("t", "a") == d  # expired but remembered
    cache.put("t", "b", d)
    cache.put("u", "c", d)
    assert len(cache) == 2 and cache.last("t", "a") is None  # the oldest went first
    cache.drop_tenant("t")
    assert [k for k, _ in cache.tenant("u")] == ["c"] and len(cache) == 1


@pytest.mark.parametrize(("action", "written", "expected"), [
    (DefaultAction.DENY, None, FailureMode.CLOSED),
    (DefaultAction.ALLOW, None, FailureMode.OPEN),
    (DefaultAction.WARN, None, FailureMode.OPEN),
    (DefaultAction.DENY, FailureMode.OPEN, FailureMode.OPEN),
    (DefaultAction.ALLOW, FailureMode.CLOSED, FailureMode.CLOSED),
])
def test_failure_mode_defaults(action: DefaultAction, written: FailureMode | None,
                               expected: FailureMode) -> None:
    policy = DnsPolicy(name="t", namespace_selector=LabelSelector(), default_action=action,
                       policy_server=PolicyServer("ps:9191", failure_mode=written))
    assert failure_mode(policy) is expected


INV = Inventory.of([
    Namespace("shop", (("t", "shop"),)),
    Service("shop", "web", cluster_ips=("10.0.0.1",)),
    Service("shop", "admin", cluster_ips=("10.0.0.2",)),
    Service("shop", "legacy", cluster_ips=("10.0.0.3",)),
])


def _view(mode: FailureMode | None, decided: dict[str, bool]):  # type: ignore[no-untyped-def]
    policy = DnsPolicy(name="t", namespace_selector=LabelSelector((("t", "shop"),)),
                       default_action=DefaultAction.DENY, server_address="10.0.0.53",
                       blacklist=("legacy.shop.svc.cluster.local",),
                       policy_server=PolicyServer("10.0.0.9", failure_mode=mode))
    external = {n: ExternalDecision(a, 1e12, 0, "server") for n, a in decided.items()}
    view, err = build_tenant_view(policy, cluster_records(INV, zone="cluster.local"), INV,
                                  DnsSettings(), external=external)
    assert err is None
    return view


def test_table_names_follow_the_server_and_the_failure_mode() -> None:
    view = _view(None, {"web.shop.svc.cluster.local": True,
                        "admin.shop.svc.cluster.local": False})
    assert [e.record.name for e in view.entries] == ["web.shop.svc.cluster.local"]
    assert view.server_denied == ("admin.shop.svc.cluster.local",)
    # blacklisted: denied locally, never asked
    assert set(view.asked) == {"web.shop.svc.cluster.local", "admin.shop.svc.cluster.local"}
    # no decision yet: closed (DENY's default) leaves it out, open answers it
    assert [e.record.name for e in _view(None, {}).entries] == []
    assert {e.record.name for e in _view(FailureMode.OPEN, {}).entries} == {
        "web.shop.svc.cluster.local", "admin.shop.svc.cluster.local"}
    # the resolver asks the gate for what the RPZ lets through; DENY forwards anyway
    assert view.forward is not None and view.forward.gate is not None
    assert view.forward.gate.failure_open is False
    assert not any(t.name == "*" for t in view.forward.triggers)
    assert view.unenforced == ()


def test_policy_server_reachable_condition() -> None:
    policy = DnsPolicy(name="t", namespace_selector=LabelSelector(),
                       policy_server=PolicyServer("ps.example:9191"))
    for reach, status in (((True, ""), "True"), ((False, "UNAVAILABLE: refused"), "False")):
        got = policy_status(policy, "t", inventory=INV, error=None, view=None, proxies=[],
                            conflicts=set(), pods_watched=False, policy_server=reach)
        cond = {c["type"]: c for c in got["conditions"]}["PolicyServerReachable"]
        assert cond["status"] == status
    assert "refused" in cond["message"] and "failure mode" in cond["message"]


@pytest.mark.parametrize(("server", "reason"), [
    ({"address": "ps:9191", "protocol": "http"}, "only grpc"),
    ({"address": "ps:notaport"}, "invalid port"),
    ({"address": "ps", "failureMode": "maybe"}, "is not one of closed, open"),
    ({"address": "ps", "timeoutMs": 0}, "timeoutMs"),
    ({"address": "ps", "caBundle": "nope"}, "PEM"),
    ({"address": "ps", "unknown": 1}, "unknown fields"),
])
def test_bad_policy_server_settings_are_rejected(server: dict[str, object], reason: str) -> None:
    doc = policy_manifest("p", {"namespaceSelector": {}, "policy": {"server": server}})
    got = parse_object(doc, origin="p.yaml:1")
    assert isinstance(got, InputError) and reason in got.reason, got


@pytest.mark.parametrize("address", ["grpc://ps:9191", "http://policy:9191", ":9191",
                                     "policy.example:", "ps:0", "ps:70000", "::1", "1.2.3",
                                     "a..b", "ps/x", "[nope]:1"])
def test_policy_server_addresses_are_validated_strictly(address: str) -> None:
    doc = policy_manifest("p", {"namespaceSelector": {},
                                "policy": {"server": {"address": address}}})
    got = parse_object(doc, origin="p.yaml:1")
    assert isinstance(got, InputError) and "spec.policy.server.address" in got.reason, got


@pytest.mark.parametrize(("address", "protocol"), [
    ("policy.example", "GRPC"), ("policy.example:9191", "grpc"), ("10.0.0.1:9191", "Grpc"),
    ("[fd00::1]:9191", "grpc"), ("[fd00::1]", "grpc"), ("policy-server.ns.svc", "grpc")])
def test_good_policy_server_addresses_and_protocol_in_any_case(address: str,
                                                              protocol: str) -> None:
    doc = policy_manifest("p", {"namespaceSelector": {},
                                "policy": {"server": {"address": address,
                                                      "protocol": protocol}}})
    got = parse_object(doc, origin="p.yaml:1")
    assert not isinstance(got, InputError), got
    assert got.policy_server is not None and got.policy_server.protocol == "grpc"  # type: ignore[union-attr]
