"""The CRDs in api/: structural schemas, and the seed examples validate against them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from controlplane.core.manifests import parse_object
from tests.factories import policy_manifest
from tests.tools import seed_examples

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "api"
SEEDS = seed_examples()

# Keywords a structural schema may use (apiextensions.k8s.io/v1 JSONSchemaProps).
ALLOWED = {
    "type", "format", "title", "description", "default", "maximum", "exclusiveMaximum",
    "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems",
    "uniqueItems", "multipleOf", "enum", "maxProperties", "minProperties", "required", "items",
    "allOf", "oneOf", "anyOf", "not", "properties", "additionalProperties", "nullable",
    "example", "externalDocs", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string", "x-kubernetes-list-map-keys",
    "x-kubernetes-list-type", "x-kubernetes-map-type", "x-kubernetes-validations",
}
TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def crds() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(API.glob("*-crd.yaml")):
        crd = yaml.safe_load(path.read_text())
        out[crd["spec"]["names"]["kind"]] = crd
    return out


def schema_of(kind: str) -> dict[str, Any]:
    (version,) = crds()[kind]["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def walk(node: dict[str, Any], path: str) -> list[str]:
    problems = []
    unknown = set(node) - ALLOWED
    if unknown:
        problems.append(f"{path}: unknown keywords {sorted(unknown)}")
    if "type" not in node and not node.get("x-kubernetes-int-or-string") \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path}: no type")
    elif node.get("type") not in TYPES | {None}:
        problems.append(f"{path}: type {node.get('type')!r}")
    for name, child in (node.get("properties") or {}).items():
        problems += walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += walk(node["additionalProperties"], f"{path}{{}}")
    if node.get("type") == "object" and "properties" not in node \
            and "additionalProperties" not in node and path.count(".") > 1:
        problems.append(f"{path}: an object node without properties")
    return problems


@pytest.mark.parametrize("kind", ["DnsPolicy", "ServiceEntry"])
def test_structural(kind: str) -> None:
    crd = crds()[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["shortNames"]
    assert walk(schema_of(kind), "") == []


def test_printer_columns() -> None:
    (version,) = crds()["DnsPolicy"]["spec"]["versions"]
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names[:3] == ["Tenant", "Default", "Namespaces"] and "Ready" in names
    assert crds()["DnsPolicy"]["spec"]["scope"] == "Cluster"


def validate(kind: str, doc: dict[str, Any]) -> None:
    jsonschema.validate(doc, schema_of(kind))


# bad-* seeds are broken on purpose and must be rejected with a clear error (below, and
# tests/test_manifests.py); every other seed must parse, or its test fails.
VALID_SEEDS = sorted(p for p in SEEDS.glob("*.yaml") if not p.name.startswith("bad-"))


def seed_documents(path: Path) -> list[dict[str, Any]]:
    """The DnsPolicy and ServiceEntry documents of a seed that is meant to be valid."""
    try:
        loaded = list(yaml.safe_load_all(path.read_text()))
    except yaml.YAMLError as exc:
        pytest.fail(f"seed {path.name} does not parse (only bad-* seeds may): {exc}")
    return [d for d in loaded if d and d.get("kind") in ("DnsPolicy", "ServiceEntry")]


@pytest.mark.parametrize("path", VALID_SEEDS, ids=[p.name for p in VALID_SEEDS])
def test_seed_documents_validate(path: Path) -> None:
    for doc in seed_documents(path):
        validate(doc["kind"], doc)


def test_seeds_found() -> None:
    kinds = [d["kind"] for path in VALID_SEEDS for d in seed_documents(path)]
    assert kinds.count("DnsPolicy") >= 6 and kinds.count("ServiceEntry") >= 3


def test_unquoted_wildcard_seed_is_not_even_yaml() -> None:
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load((SEEDS / "bad-unquoted-wildcard.yaml").read_text())


BASE = policy_manifest("p", {"namespaceSelector": {"matchLabels": {"tenant": "a"}},
                             "server": {"address": "tenant-1.dns.svc"},
                             "policy": {"whitelist": ["*.a.svc.cluster.local", "api.example.com"],
                                        "blacklist": ["*.foo.com"], "defaultAction": "WARN"}})


def _with(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    node = doc
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return doc


_DELETE = object()
INVALID = [
    ("inner wildcard", "spec.policy.whitelist", ["foo.*.com"]),
    ("bare star", "spec.policy.blacklist", ["*"]),
    ("unknown action", "spec.policy.defaultAction", "BLOCK"),
    ("selector of the wrong type", "spec.namespaceSelector", ["tenant=a"]),
    ("missing namespaceSelector", "spec.namespaceSelector", _DELETE),
    ("bad operator", "spec.selector", {"matchExpressions": [{"key": "a", "operator": "Like"}]}),
    ("bad upgrade type", "spec.protocol", {"upgrade": True, "type": "dns-over-quic"}),
    ("server with spaces", "spec.server.address", "not an address"),
]


@pytest.mark.parametrize(("path", "value"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_policies_are_rejected_by_the_schema(path: str, value: Any) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate("DnsPolicy", _with(path, value))


@pytest.mark.parametrize("address", ["tenant-1.dns.svc", "10.0.0.53", "10.0.0.53:5353",
                                     "[fd00::53]:53", "fd00::53", "dns.kube-system.svc:53"])
def test_server_addresses_the_controller_accepts(address: str) -> None:
    validate("DnsPolicy", _with("spec.server.address", address))


def test_schema_and_controller_agree_on_the_base() -> None:
    validate("DnsPolicy", BASE)
    assert not hasattr(parse_object(BASE), "reason")
