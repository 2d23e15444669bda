"""Translation golden files: manifests in, Envoy resources out as JSON.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 make test`` and
review the diff (refused when CI is set: see tests/golden_support.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.core.settings import DefaultView, DnsSettings, Settings
from controlplane.translate.types import LISTENER_TYPE
from tests.golden_support import (
    GOLDEN,
    load_inventory,
    resolver_files,
    resources_json,
    tenant_views,
    updating_goldens,
)

CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    inv = load_inventory(GOLDEN / case)
    assert inv.errors == ()
    views = tenant_views(inv, Settings())
    actual = {tenant: resources_json(view) for tenant, view in sorted(views.items())}
    expected_path = GOLDEN / case / "expected.json"
    if updating_goldens():
        expected_path.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    expected = json.loads(expected_path.read_text())
    assert actual == expected


@pytest.mark.parametrize("case", CASES)
def test_golden_resolver_config(case: str) -> None:
    """The tenant resolvers' files (unbound.conf, the policy's RPZ zone, dnsdist.conf)."""
    views = tenant_views(load_inventory(GOLDEN / case), Settings())
    for tenant, view in sorted(views.items()):
        for name, text in resolver_files(view).items():
            path = GOLDEN / case / "resolvers" / tenant / name
            if updating_goldens():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
            assert text == path.read_text(), f"{case}/{tenant}/{name}"


def _table(case: str, tenant: str) -> dict[str, list[dict[str, object]]]:
    data = json.loads((GOLDEN / case / "expected.json").read_text())
    (listener,) = data[tenant][LISTENER_TYPE].values()
    config = listener["listenerFilters"][0]["typedConfig"]
    out: dict[str, list[dict[str, object]]] = {}
    for vd in config["serverConfig"]["inlineDnsTable"].get("virtualDomains", []):
        out.setdefault(vd["name"], []).append(vd["endpoint"])
    return out


def test_demo_tenants_see_only_their_names() -> None:
    acme = _table("demo", "acme")
    foo = _table("demo", "foo")
    assert set(acme) == {"httpbin.acme.com", "httpbin.acme.svc.cluster.local"}
    assert set(foo) == {"httpbin.foo.com", "httpbin.foo.svc.cluster.local"}
    assert _table("demo", "_default") == {}


def test_filtering_seed_forwards_to_the_tenant_resolver_which_denies_the_blacklist() -> None:
    data = json.loads((GOLDEN / "filtering" / "expected.json").read_text())
    (listener,) = data["dns-policy"][LISTENER_TYPE].values()
    config = listener["listenerFilters"][0]["typedConfig"]
    resolvers = config["clientConfig"]["typedDnsResolverConfig"]["typedConfig"]["resolvers"]
    assert resolvers == [{"socketAddress": {"address": "127.0.0.1", "portValue": 5300,
                                            "protocol": "UDP"}}]
    table = _table("filtering", "dns-policy")
    assert "*.foo.com" not in table  # no deny entries in Envoy's table any more
    rpz = (GOLDEN / "filtering" / "resolvers" / "dns-policy" / "policy.rpz").read_text()
    assert "*.foo.com CNAME . ; blacklist *.foo.com" in rpz.splitlines()
    conf = (GOLDEN / "filtering" / "resolvers" / "dns-policy" / "unbound.conf").read_text()
    assert "  forward-addr: 10.96.0.53@53" in conf.splitlines()
    assert "api.foo.com" not in table  # a blacklisted ServiceEntry host is not answered
    assert "checkout.payments.svc.cluster.local" in table


def test_fruits_second_name() -> None:
    table = _table("fruits", "shakes")
    assert table["my-fruits.internal"] == [{"addressList": {"address": [
        "10.103.1.1", "::ffff:10.103.1.1"]}}]


def test_names_are_lower_case_and_unique_per_kind(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        "metadata: {name: e, namespace: n}\n"
        "spec: {hosts: [Mixed.Case.Example], addresses: [192.0.2.1, 192.0.2.1, 2001:db8::1]}\n")
    inv = load_inventory(tmp_path)
    views = tenant_views(inv, Settings(dns=DnsSettings(default_view=DefaultView.CLUSTER)))
    table = resources_json(views["_default"])
    (listener,) = table[LISTENER_TYPE].values()
    vds = listener["listenerFilters"][0]["typedConfig"]["serverConfig"]["inlineDnsTable"][
        "virtualDomains"]
    assert vds == [{"name": "mixed.case.example", "answerTtl": "30s",
                    "endpoint": {"addressList": {"address": ["192.0.2.1", "2001:db8::1"]}}}]
