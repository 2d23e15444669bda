"""Static tokens stand for one tenant exactly (issue 19, finding 3): ``tenant:`` binds the
view and every report to one DnsPolicy, labels are bound exactly, node ids listed under a
token's ``nodes:`` are that token's only, and a token that could get more than one
tenant's view is refused. The real Envoy and the real attacks:
e2e/test_attacker_channels_e2e.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.app import _check_static_tokens
from controlplane.core.errors import ConfigError, Unauthenticated
from controlplane.core.inventory import Inventory
from controlplane.core.model import Namespace, Workload
from controlplane.core.settings import Settings
from controlplane.hub.hub import Hub
from controlplane.hub.streams import Connection
from controlplane.identity.auth import (
    Identity,
    TokenAuthenticator,
    authorize,
    node_refusal,
    tenant_refusal,
)
from controlplane.policy.selection import static_token_problem
from controlplane.telemetry.stats_sink import MetricsSink, NodeDirectory
from controlplane.telemetry.traffic import DnsTraffic
from controlplane.translate.types import LISTENER_TYPE
from tests.factories import connect, node, policy
from tests.test_stats_sink import envoy_message

SHOP = {"team": "shop"}


def shop_policies(*extra: Any) -> list[Any]:
    """red and blue share namespace shop, split by pod selector."""
    return [policy("red", SHOP, pod_labels={"app": "red"}),
            policy("blue", SHOP, pod_labels={"app": "blue"}), *extra]


def tokens(*entries: dict[str, Any]) -> TokenAuthenticator:
    return TokenAuthenticator.from_data({"tokens": list(entries)})


def by_name(auth: TokenAuthenticator) -> dict[str, Identity]:
    return {i.name: i for i in auth.identities}


# -- the tokens file ------------------------------------------------------------------------

def test_the_tokens_file_reads_tenant_labels_and_reserves_listed_nodes() -> None:
    ids = by_name(tokens(
        {"name": "red-vm", "token": "r", "namespace": "shop", "tenant": "red",
         "nodes": ["red-vm-*.shop"]},
        {"name": "blue", "token": "b", "namespace": "shop", "labels": {"app": "blue"}},
        {"name": "any", "token": "a", "namespace": "shop", "tenant": "blue"}))
    assert ids["red-vm"].tenant == "red" and ids["red-vm"].reserved == ()
    assert ids["blue"].bind_labels and ids["blue"].labels == (("app", "blue"),)
    assert not ids["any"].bind_labels
    assert ids["any"].reserved == (("red-vm-*.shop", "red-vm"),)


@pytest.mark.parametrize("tenant", ["", 3, ["red"]])
def test_a_tenant_must_be_a_name(tenant: object) -> None:
    with pytest.raises(ConfigError, match=r"tokens\[0\].tenant"):
        tokens({"token": "t", "namespace": "shop", "tenant": tenant})


def test_a_refused_token_says_why_and_the_others_still_work() -> None:
    auth = tokens({"name": "a", "token": "ta", "namespace": "shop"},
                  {"name": "b", "token": "tb", "namespace": "shop", "tenant": "red"})
    auth.refused = {"a": "could get the view of any of the tenants blue, red"}
    with pytest.raises(Unauthenticated, match="token 'a' is refused: could get the view"):
        asyncio.run(auth.identify([("authorization", "Bearer ta")]))
    assert asyncio.run(auth.identify([("authorization", "Bearer tb")])).name == "b"


# -- labels bound exactly, node ids, tenants --------------------------------------------------

@pytest.mark.parametrize(("claimed", "refusal"), [
    ({"app": "red"}, None),
    ({}, None),  # left out: the view is chosen with the token's labels anyway
    ({"app": "blue"}, "token 'red' has label app=red, but node 'vm.shop' claims "
                      "label app=blue"),
    ({"app": "red", "tier": "db"}, "token 'red' has no label 'tier', but node 'vm.shop' "
                                   "claims label tier=db"),
])
def test_a_label_bound_token_cannot_add_or_change_labels(claimed: dict[str, str],
                                                         refusal: str | None) -> None:
    red = by_name(tokens({"name": "red", "token": "r", "namespace": "shop",
                          "labels": {"app": "red"}}))["red"]
    workload = Workload("vm.shop", namespace="shop", labels=tuple(sorted(claimed.items())))
    assert authorize(red, workload) == refusal


def test_another_tokens_listed_node_is_that_tokens_only() -> None:
    ids = by_name(tokens(
        {"name": "red-vm", "token": "r", "namespace": "shop", "nodes": ["red-vm-1.shop"]},
        {"name": "shop", "token": "s", "namespace": "shop", "tenant": "blue"}))
    assert node_refusal(ids["red-vm"], "red-vm-1.shop") is None
    assert node_refusal(ids["shop"], "blue-vm.shop") is None
    assert node_refusal(ids["shop"], "red-vm-1.shop") == (
        "token 'shop' may not speak for node 'red-vm-1.shop': token 'red-vm' lists it "
        "under nodes:")


def test_a_tenant_bound_token_reports_for_its_tenant_only() -> None:
    red = Identity("red", "shop", tenant="red")
    assert tenant_refusal(red, "red") is None
    assert tenant_refusal(red, "blue") == "token 'red' stands for tenant 'red', not for 'blue'"
    assert tenant_refusal(Identity("any", "shop"), "blue") is None


# -- what a token may stand for in a configuration ---------------------------------------------

@pytest.mark.parametrize(("labels", "tenant", "extra", "problem"), [
    ({}, "red", [], None),
    ({"app": "red"}, "red", [], None),
    ({"app": "red"}, "", [], None),  # bound exactly: red only
    ({"app": "green"}, "", [], None),  # no tenant: the default view, nobody else's
    ({}, "", [], "without labels or a tenant it could get the view of any of the tenants "
                 "blue, red (namespace 'shop'): name one with 'tenant:' or give it labels "
                 "that select one"),
    ({}, "gone", [], "its tenant 'gone' has no DnsPolicy"),
    ({}, "elsewhere", [policy("elsewhere", {"team": "other"})],
     "DnsPolicy 'elsewhere' does not select namespace 'shop', the token's"),
    ({"app": "blue"}, "red", [], "its labels {'app': 'blue'} in namespace 'shop' get "
                                 "DnsPolicy 'blue', not 'red'"),
])
def test_what_a_static_token_may_stand_for(labels: dict[str, str], tenant: str,
                                           extra: list[Any], problem: str | None) -> None:
    assert static_token_problem(namespace="shop", namespace_labels=SHOP, labels=labels,
                                tenant=tenant, policies=shop_policies(*extra)) == problem


def shop_hub(*extra: Any) -> Hub:
    hub = Hub(Settings())
    hub.set_inventory(Inventory.of([Namespace("shop", (("team", "shop"),)),
                                    *shop_policies(*extra)]))
    return hub


def test_before_serving_a_token_that_cannot_stand_for_one_tenant_stops_the_start() -> None:
    auth = tokens({"name": "shop-any", "token": "a", "namespace": "shop"},
                  {"name": "shop-red", "token": "r", "namespace": "shop", "tenant": "red"},
                  {"name": "old", "token": "o", "namespace": "shop", "tenant": "gone"})
    with pytest.raises(ConfigError) as info:
        _check_static_tokens(shop_hub(), [auth], fatal=True)
    message = str(info.value)
    assert "static token 'shop-any': without labels or a tenant it could get the view of " \
           "any of the tenants blue, red" in message
    assert "static token 'old': its tenant 'gone' has no DnsPolicy" in message
    assert "'shop-red'" not in message and "'r'" not in message  # never the secret


def test_after_a_change_only_the_bad_tokens_are_refused_until_good_again(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    auth = tokens({"name": "shop-any", "token": "a", "namespace": "shop"},
                  {"name": "shop-red", "token": "r", "namespace": "shop", "tenant": "red"})
    hub = shop_hub()
    _check_static_tokens(hub, [auth], fatal=False)
    assert set(auth.refused) == {"shop-any"}
    assert "static token 'shop-any' refused: without labels" in caplog.text
    # blue goes away: the namespace has one tenant, the token is good again
    hub.set_inventory(Inventory.of([Namespace("shop", (("team", "shop"),)),
                                    policy("red", SHOP, pod_labels={"app": "red"})]))
    _check_static_tokens(hub, [auth], fatal=False)
    assert auth.refused == {}
    assert "static token 'shop-any' accepted again" in caplog.text


# -- the view and the reports of a tenant-bound token ------------------------------------------

def test_a_tenant_bound_stream_gets_its_tenants_view_whatever_it_claims() -> None:
    hub = shop_hub()
    conn = hub.open(peer="test")
    conn.stream.receive(discovery_pb2.DiscoveryRequest(
        type_url=LISTENER_TYPE, node=node("vm.shop", "shop", LABELS={"app": "blue"})))
    hub.attach(conn, tenant="red", caller="token red")
    assert conn.view_key is not None and conn.view_key.tenant == "red"
    assert conn.caller == "token red"
    # a configuration change re-chooses every view: still red's
    hub.set_inventory(Inventory.of([Namespace("shop", (("team", "shop"),)),
                                    *shop_policies(policy("green", SHOP))]))
    assert conn.view_key.tenant == "red"
    unbound = connect(hub, node("other.shop", "shop", LABELS={"app": "blue"}))
    assert unbound.view_key is not None and unbound.view_key.tenant == "blue"


class Conn:
    def __init__(self, node_id: str, tenant: str, caller: str) -> None:
        self.workload = Workload(node_id=node_id, namespace="shop")
        self.view_key = type("Key", (), {"tenant": tenant})()
        self.caller = caller


def test_a_stats_report_counts_only_for_the_caller_that_holds_the_nodes_stream() -> None:
    conns: list[Connection | Conn] = [Conn("red-vm.shop", "red", "token red-vm"),
                                      Conn("blue-vm.shop", "blue", "token shop")]
    traffic = DnsTraffic()
    sink = MetricsSink(traffic, NodeDirectory(lambda: conns), clock=lambda: 100.0)
    shop = Identity("shop", "shop")  # no tenant: the node's stream decides
    red = "dns_filter.tenant.red.downstream_rx_queries"
    outcome, _ = sink.ingest(envoy_message("red-vm.shop", {red: 7_000_000}), "red-vm.shop",
                             shop)
    assert outcome == "wrong_identity"
    blue_bound = Identity("shop", "shop", tenant="blue")
    assert sink.ingest(envoy_message("red-vm.shop", {red: 7_000_000}), "red-vm.shop",
                       blue_bound)[0] == "wrong_identity"
    assert sink.ingest(envoy_message("red-vm.shop", {red: 5}), "red-vm.shop",
                       Identity("red-vm", "shop"))[0] == "accepted"
    assert traffic.sidecars["red-vm.shop"].values
    assert traffic.refused["red"]["red-vm.shop"] == {"wrong_identity": 2}
