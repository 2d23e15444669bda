"""Manifests -> model objects; every rejection names the object and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.core.errors import InputError
from controlplane.core.manifests import Ignored, parse_object
from controlplane.core.model import DefaultAction, DnsPolicy, Service, ServiceEntry
from controlplane.sources.files import parse_file
from tests.factories import policy_manifest
from tests.tools import seed_examples, skip

SEEDS = seed_examples()
VALID_SEEDS = sorted(p for p in SEEDS.glob("*.yaml") if not p.name.startswith("bad-"))


@pytest.mark.parametrize("path", VALID_SEEDS, ids=[p.name for p in VALID_SEEDS])
def test_every_valid_seed_parses_without_errors(path: Path) -> None:
    results, unreadable = parse_file(path, display=path.name)
    assert unreadable is None
    errors = [r for r in results if isinstance(r, InputError)]
    assert errors == []
    assert results, "the seed holds at least one document"


def test_broken_seed_names_file_and_line() -> None:
    path = SEEDS / "bad-unquoted-wildcard.yaml"
    results, unreadable = parse_file(path, display="seed/bad-unquoted-wildcard.yaml")
    assert results == []
    assert unreadable is not None
    assert unreadable.origin == "seed/bad-unquoted-wildcard.yaml:13"
    assert "line 13" in unreadable.reason
    assert "must be quoted" in unreadable.reason


def test_seed_filtering_policy_fields() -> None:
    results, _ = parse_file(SEEDS / "dnspolicy-filtering.yaml", display="f")
    (pol,) = results
    assert isinstance(pol, DnsPolicy)
    assert pol.whitelist == ("*.payments.svc.cluster.local",)
    assert pol.blacklist == ("*.foo.com",)
    assert pol.default_action is DefaultAction.WARN
    assert pol.server_address == "tenant-1.dns.svc"
    assert dict(pol.namespace_selector.match_labels) == {"workload": "payments"}


def test_seed_app_policy_server_and_upgrade() -> None:
    (app,), _ = parse_file(SEEDS / "dnspolicy-app-policy-server.yaml", display="a")
    assert isinstance(app, DnsPolicy) and app.selector is not None
    assert dict(app.selector.match_labels) == {"app": "payment-gateway"}
    assert app.policy_server is not None and app.policy_server.protocol == "grpc"
    (up,), _ = parse_file(SEEDS / "dnspolicy-upgrade.yaml", display="u")
    assert isinstance(up, DnsPolicy) and up.upgrade and up.upgrade_type == "dns-over-https"


INVALID = [
    ("unknown defaultAction",
     policy_manifest("p", {"namespaceSelector": {}, "policy": {"defaultAction": "BLOCK"}}),
     "defaultAction 'BLOCK' is not one of ALLOW, DENY, WARN"),
    ("selector of the wrong type", policy_manifest("p", {"namespaceSelector": ["tenant=acme"]}),
     "spec.namespaceSelector must be a mapping, not list"),
    ("pattern with inner star",
     policy_manifest("p", {"namespaceSelector": {}, "policy": {"whitelist": ["foo.*.com"]}}),
     "spec.policy.whitelist[0]: pattern 'foo.*.com' is invalid"),
    ("missing namespaceSelector", policy_manifest("p", {"policy": {}}),
     "spec.namespaceSelector is required"),
    ("matchLabels not strings",
     policy_manifest("p", {"namespaceSelector": {"matchLabels": {"a": ["b"]}}}),
     "must map strings to strings"),
    ("unknown spec field", policy_manifest("p", {"namespaceSelector": {}, "polciy": {}}),
     "spec has unknown fields ['polciy']"),
    ("bad upgrade type",
     policy_manifest("p", {"namespaceSelector": {}, "protocol": {"type": "dns-over-quic"}}),
     "spec.protocol.type 'dns-over-quic'"),
    ("service with bad IP", {"apiVersion": "v1", "kind": "Service",
                             "metadata": {"name": "s", "namespace": "n"},
                             "spec": {"clusterIP": "10.0.0.300"}},
     "spec.clusterIP '10.0.0.300' is not an IP address"),
    ("service entry without hosts", {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                                     "metadata": {"name": "e", "namespace": "n"}, "spec": {}},
     "spec.hosts must name at least one host"),
    ("service entry bad resolution", {"apiVersion": "networking.istio.io/v1beta1",
                                      "kind": "ServiceEntry",
                                      "metadata": {"name": "e", "namespace": "n"},
                                      "spec": {"hosts": ["a.com"], "resolution": "MAGIC"}},
     "spec.resolution 'MAGIC'"),
    ("no name", {"apiVersion": "v1", "kind": "Service", "metadata": {}}, "metadata.name is required"),
]


@pytest.mark.parametrize(("doc", "reason"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_objects_are_rejected_with_their_name(doc: dict[str, object], reason: str) -> None:
    result = parse_object(doc, origin="f.yaml:3")
    assert isinstance(result, InputError), result
    assert reason in result.reason
    assert result.kind == doc["kind"]
    assert result.origin == "f.yaml:3"
    assert str(result).startswith(f"{doc['kind']} ")


def test_unknown_kind_is_ignored() -> None:
    doc = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}
    assert parse_object(doc) == Ignored("apps/v1", "Deployment", "d")


def test_service_forms() -> None:
    dual = parse_object({"apiVersion": "v1", "kind": "Service",
                         "metadata": {"name": "db", "namespace": "x"},
                         "spec": {"clusterIPs": ["10.0.0.1", "fd00::1"],
                                  "ports": [{"name": "PG", "port": 5432}]}})
    assert isinstance(dual, Service)
    assert dual.cluster_ips == ("10.0.0.1", "fd00::1")
    assert dual.ports[0].name == "pg" and dual.ports[0].protocol == "TCP"
    headless = parse_object({"apiVersion": "v1", "kind": "Service",
                             "metadata": {"name": "h", "namespace": "x"},
                             "spec": {"clusterIP": "None"}})
    assert isinstance(headless, Service) and headless.headless and headless.cluster_ips == ()


@pytest.mark.parametrize("version", ["v1alpha3", "v1beta1", "v1"])
def test_service_entry_versions(version: str) -> None:
    se = parse_object({"apiVersion": f"networking.istio.io/{version}", "kind": "ServiceEntry",
                       "metadata": {"name": "e", "namespace": "n"},
                       "spec": {"hosts": ["My.Host.Example"], "addresses": ["10.1.1.1/32"],
                                "resolution": "static", "location": "MESH_INTERNAL"}})
    assert isinstance(se, ServiceEntry)
    assert se.hosts == ("my.host.example",) and se.addresses == ("10.1.1.1",)
    assert se.resolution == "STATIC"


def test_vendored_seed_copy_is_current() -> None:
    """tests/seed-examples must match ../shared/seed-examples whenever both exist."""
    from pathlib import Path as _Path

    shared = _Path(__file__).resolve().parents[2] / "shared" / "seed-examples"
    copy = _Path(__file__).resolve().parent / "seed-examples"
    if not shared.is_dir():
        skip("../shared is not beside the project: nothing to compare with",
             ci_may_skip=True)  # a CI checkout never has ../shared beside it
    for f in sorted(shared.glob("*")):
        assert (copy / f.name).read_bytes() == f.read_bytes(), f.name
