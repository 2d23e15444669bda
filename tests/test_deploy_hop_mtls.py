"""deploy/ with the Component deploy/hop-mtls: the resolver hop with client certificates
(docs/resolver-isolation.md, plan step 9), as kustomize renders it.

To fold into deploy/ once ``controlplane serve`` has ``--resolver-hop mtls`` and
``--resolver-hop-port`` (the Component's header says how); until then the two new flags are
checked by name, every other flag with the real parser.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from controlplane.cli import build_parser
from tests.kustomize import HOP_MTLS, by_kind, rendered, rendered_with
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[1]

NEW_FLAGS = ("--resolver-hop=mtls", "--resolver-hop-port=10853")
EPHEMERAL = (32768, 60999)


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return rendered_with(HOP_MTLS)


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = by_kind(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return dict(c)


def serve_knows_mtls() -> bool:
    serve = next(a for a in build_parser()._actions
                 if isinstance(a, argparse._SubParsersAction)).choices["serve"]
    hop = next(a for a in serve._actions if "--resolver-hop" in a.option_strings)
    return "mtls" in (hop.choices or ())


def parsed(args: list[str]) -> argparse.Namespace:
    """The arguments through the real parser; the flags serve does not have yet (branch
    hop-mtls) are checked by name and left out."""
    if serve_knows_mtls():
        return build_parser().parse_args(args)
    assert [a for a in args if a in NEW_FLAGS] == list(NEW_FLAGS)
    return build_parser().parse_args([a for a in args if a not in NEW_FLAGS])


def test_only_the_hop_changes(docs: list[dict[str, Any]]) -> None:
    base = rendered()
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == \
        [(d["kind"], d["metadata"]["name"]) for d in base]
    changed = {(d["kind"], d["metadata"]["name"]) for d, b in zip(docs, base, strict=True)
               if d != b}
    assert changed == {("Deployment", "dns-controlplane"), ("NetworkPolicy", "dns-controlplane")}
    before, after = container(base)["args"], container(docs)["args"]
    assert sorted(set(before) - set(after)) == ["--resolver-allow=0.0.0.0/0",
                                                "--resolver-hop=tls", "--resolver-listen=0.0.0.0"]
    assert sorted(set(after) - set(before)) == ["--resolver-hop-port=10853",
                                                "--resolver-hop=mtls", "--resolver-listen=127.0.0.1"]


def test_resolvers_on_loopback_behind_the_terminator(docs: list[dict[str, Any]]) -> None:
    c = container(docs)
    args = parsed(c["args"])
    assert args.resolver_listen == "127.0.0.1" and args.resolver_allow == []
    assert args.resolver_advertise == "$(POD_IP)"  # now the terminator's address
    assert args.resolver_lifetime == "persistent"
    if serve_knows_mtls():
        assert args.resolver_hop == "mtls" and args.resolver_hop_port == 10853
    (hop,) = [p for p in c["ports"] if p["name"] == "dns-hop"]
    assert hop["containerPort"] == 10853 and hop["protocol"] == "TCP"
    # one CA for every replica, with the key the client certificates are signed with
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == args.resolver_tls_dir]
    (dep,) = by_kind(docs, "Deployment")
    (volume,) = [v for v in dep["spec"]["template"]["spec"]["volumes"]
                 if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "dns-controlplane-hop-ca"


def test_the_terminator_is_in_the_memory_request(docs: list[dict[str, Any]]) -> None:
    # 15 MiB for the terminator on top of deploy/'s 256Mi (+80 KiB a tenant beyond)
    assert container(rendered())["resources"]["requests"]["memory"] == "256Mi"
    assert container(docs)["resources"]["requests"]["memory"] == "272Mi"


def test_networkpolicy_opens_named_ports_only(docs: list[dict[str, Any]]) -> None:
    (policy,) = by_kind(docs, "NetworkPolicy")
    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    opened: dict[str, list[Any]] = {}
    for rule in policy["spec"]["ingress"]:
        for p in rule["ports"]:
            assert isinstance(p["port"], str) and "endPort" not in p, p  # no range left
            opened[p["port"]] = rule.get("from", [])
    assert set(opened) == set(ports)
    assert opened["dns-hop"] == [{"namespaceSelector": {}}]  # sidecars, any namespace
    assert all(port < EPHEMERAL[0] for port in ports.values()), ports


def test_a_reordered_deployment_fails_to_render_instead_of_patching_the_wrong_line() -> None:
    """Every replace and remove in the Component is guarded by a JSON-patch test."""
    text = (HOP_MTLS / "kustomization.yaml").read_text()
    ops = [line.strip() for line in text.splitlines() if line.strip().startswith("- {op:")]
    for i, op in enumerate(ops):
        if "op: replace" in op or "op: remove" in op:
            path = op.split("path: ")[1].split(",")[0].rstrip("}")
            assert ops[i - 1].startswith("- {op: test") and f"path: {path}," in ops[i - 1], op


def test_the_guards_stop_a_patch_of_a_changed_deployment(tmp_path: Path) -> None:
    """A deploy/ whose hop line changed: the Component refuses to render (not a silent
    patch of whatever is at that index)."""
    for name in ("deploy", "api"):
        shutil.copytree(ROOT / name, tmp_path / name)
    deployment = tmp_path / "deploy" / "deployment.yaml"
    text = deployment.read_text()
    assert "- --resolver-hop=tls\n" in text
    deployment.write_text(text.replace("- --resolver-hop=tls\n", "- --resolver-hop=udp\n"))
    kubectl = require_tool("kubectl", "apt-get install kubernetes-client")
    overlay = tmp_path / "mine"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources: [../deploy]\ncomponents: [../deploy/hop-mtls]\n")
    result = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0 and "test" in result.stderr.lower(), result.stderr
    (overlay / "kustomization.yaml").write_text("resources: [../deploy]\n")  # base alone: fine
    assert subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True,
                          timeout=60).returncode == 0
