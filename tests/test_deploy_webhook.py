"""deploy/: the sidecar-injection webhook renders whole and agrees with itself and the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controlplane.cli import build_parser
from controlplane.core.errors import ConfigError
from controlplane.core.names import split_host_port
from controlplane.injection.sidecar import (
    INJECT_NAMESPACE_LABEL,
    INJECT_NAMESPACE_VALUE,
    config_problem,
)
from controlplane.injection.webhook import first_nameserver, injection_config
from tests.kustomize import by_kind, rendered, rendered_overlay


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return found


def controlplane_container(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    dep = one(docs, "Deployment", "dns-controlplane")
    pod = dep["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "controlplane")
    return pod, container


def test_webhook_configuration() -> None:
    docs = rendered()
    mwc = one(docs, "MutatingWebhookConfiguration", "dns-controlplane")
    (hook,) = mwc["webhooks"]
    assert hook["admissionReviewVersions"] == ["v1"] and hook["sideEffects"] == "None"
    assert hook["failurePolicy"] == "Ignore" and 1 <= hook["timeoutSeconds"] <= 10
    assert hook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                              "resources": ["pods"], "scope": "Namespaced"}]
    selector = hook["namespaceSelector"]["matchExpressions"]
    assert {"key": INJECT_NAMESPACE_LABEL, "operator": "In",
            "values": [INJECT_NAMESPACE_VALUE]} in selector
    dep = one(docs, "Deployment", "dns-controlplane")
    excluded = [e for e in selector if e["key"] == "kubernetes.io/metadata.name"]
    assert excluded and excluded[0]["operator"] == "NotIn"
    assert {"kube-system", dep["metadata"]["namespace"]} <= set(excluded[0]["values"])
    # The Service it calls exists, in the Deployment's namespace, and leads to the port
    # the control plane serves the webhook on.
    ref = hook["clientConfig"]["service"]
    assert ref["path"] == "/inject" and ref["namespace"] == dep["metadata"]["namespace"]
    svc = one(docs, "Service", ref["name"])
    (port,) = [p for p in svc["spec"]["ports"] if p["port"] == ref["port"]]
    pod, container = controlplane_container(docs)
    (declared,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    args = build_parser().parse_args(container["args"])
    assert args.webhook_address == ("0.0.0.0", declared["containerPort"])
    assert declared["containerPort"] < 32768  # kept out of the tenant resolvers' port range
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    # The NetworkPolicy lets the API server reach that port.
    policy = one(docs, "NetworkPolicy", "dns-controlplane")
    assert any(p.get("port") == port["targetPort"] for rule in policy["spec"]["ingress"]
               for p in rule.get("ports", []))


def test_serving_certificate_from_cert_manager() -> None:
    docs = rendered()
    mwc = one(docs, "MutatingWebhookConfiguration", "dns-controlplane")
    (hook,) = mwc["webhooks"]
    namespace, name = mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].split("/")
    cert = one(docs, "Certificate", name)
    assert cert["metadata"]["namespace"] == namespace
    ref = hook["clientConfig"]["service"]
    assert f"{ref['name']}.{ref['namespace']}.svc" in cert["spec"]["dnsNames"]
    # Signed by a CA issuer: the caBundle (the CA) stays when the leaf is renewed.
    issuer = one(docs, "Issuer", cert["spec"]["issuerRef"]["name"])
    ca_cert = [c for c in by_kind(docs, "Certificate")
               if c["spec"]["secretName"] == issuer["spec"]["ca"]["secretName"]]
    assert ca_cert and ca_cert[0]["spec"]["isCA"] is True
    # Every replica mounts that Secret where --webhook-cert-dir points.
    pod, container = controlplane_container(docs)
    args = build_parser().parse_args(container["args"])
    (volume,) = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName")
                 == cert["spec"]["secretName"]]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["mountPath"] == args.webhook_cert_dir and mount.get("readOnly") is True
    assert "subPath" not in mount  # a subPath mount would never see the renewed files


def test_no_rbac_for_the_webhook() -> None:
    for role in by_kind(rendered(), "ClusterRole"):
        for rule in role["rules"]:
            assert "admissionregistration.k8s.io" not in rule.get("apiGroups", [])
            assert "secrets" not in rule.get("resources", [])


def test_the_deployments_flags_make_a_working_injection(tmp_path: Path) -> None:
    docs = rendered()
    _, container = controlplane_container(docs)
    args = build_parser().parse_args(container["args"])
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search dns-system.svc.cluster.local svc.cluster.local cluster.local\n"
                      "nameserver 10.96.0.10\noptions ndots:5\n")  # as in the pod
    sa_namespace = tmp_path / "namespace"
    sa_namespace.write_text("dns-system")
    tls = tmp_path / "xds-tls"  # the mounted xds-tls Secret's ca.crt
    tls.mkdir()
    (tls / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    args.xds_tls_dir = str(tls)
    config = injection_config(args, zone=args.zone, resolv_conf=resolv,
                              sa_namespace=sa_namespace)
    assert config_problem(config) is None
    assert config.mode == "native" and config.cluster_dns == "10.96.0.10"
    assert config.own_namespace == "dns-system" and config.xds_ca.startswith("-----BEGIN")
    # The sidecars verify ADS under the name the xDS certificate carries.
    host = split_host_port(config.xds_address, 18000)
    xds_names = {n for c in by_kind(docs, "Certificate") if c["spec"].get("dnsNames")
                 for n in c["spec"]["dnsNames"] if n.startswith("dns-controlplane.")}
    assert host[0] in xds_names, (host, xds_names)


def test_injection_config_refuses_what_cannot_work(tmp_path: Path) -> None:
    assert first_nameserver("nameserver 127.0.0.53\nnameserver 10.96.0.10\n") == "10.96.0.10"
    assert first_nameserver("search x\n") == ""
    parser = build_parser()
    no_resolv = tmp_path / "none"
    base = ["serve", "--source", "kubernetes", "--webhook-address", "0.0.0.0:9443"]
    # A Service name for ADS and no cluster DNS to resolve it with: refused at start.
    args = parser.parse_args([*base, "--xds-plaintext"])
    with pytest.raises(ConfigError, match="give the cluster DNS"):
        injection_config(args, zone="cluster.local", resolv_conf=no_resolv,
                         sa_namespace=no_resolv)
    # ADS over TLS without a CA the sidecars could verify it with: refused.
    (tmp_path / "tls").mkdir()
    args = parser.parse_args([*base, "--xds-tls-dir", str(tmp_path / "tls"),
                              "--webhook-cluster-dns", "10.96.0.10"])
    with pytest.raises(ConfigError, match="no ca.crt"):
        injection_config(args, zone="cluster.local", resolv_conf=no_resolv,
                         sa_namespace=no_resolv)
    # Without --webhook-address nothing is checked: serve runs without the webhook.
    args = parser.parse_args(["serve", "--source", "kubernetes", "--xds-plaintext"])
    config = injection_config(args, zone="cluster.local", resolv_conf=no_resolv,
                              sa_namespace=no_resolv)
    assert config.own_namespace == "dns-system" and config.xds_ca == ""


def test_the_webhook_injects_the_dns_front_and_its_image_is_built_here() -> None:
    """Front on, with the image deploy/images/dns-front/Dockerfile builds (its tag there)."""
    docs = rendered()
    _, container = controlplane_container(docs)
    args = build_parser().parse_args(container["args"])
    assert args.webhook_sidecar_front == "on"
    assert "--webhook-sidecar-front=on" in container["args"]  # written out, not a default
    dockerfile = (Path(__file__).resolve().parents[1] / "deploy" / "images" / "dns-front"
                  / "Dockerfile").read_text()
    assert f"docker build -t {args.webhook_front_image} deploy/images/dns-front" in dockerfile


def _webhook_rule(docs: list[dict[str, Any]]) -> dict[str, Any]:
    policy = one(docs, "NetworkPolicy", "dns-controlplane")
    (rule,) = [r for r in policy["spec"]["ingress"]
               if {"protocol": "TCP", "port": "https-webhook"} in r["ports"]]
    return rule


def test_the_webhook_port_is_open_to_any_source_unless_the_component_narrows_it(
        tmp_path: Path) -> None:
    """A NetworkPolicy cannot name the API server (not a pod): the base leaves the port
    open to every source, so the API server reaches it on any cluster, and the webhook
    itself tells the API server from other callers (docs/security-webhook.md). The opt-in
    component deploy/components/webhook-from-apiserver narrows it to an ipBlock of the
    API server's addresses (to edit), and changes nothing else."""
    import kubernetes_validate

    base = rendered()
    assert "from" not in _webhook_rule(base)
    narrowed = rendered_overlay(tmp_path, components=["components/webhook-from-apiserver"])
    assert _webhook_rule(narrowed)["from"] == [{"ipBlock": {"cidr": "192.0.2.10/32"}}]
    policy = one(narrowed, "NetworkPolicy", "dns-controlplane")
    kubernetes_validate.validate(policy, "1.37.0", strict=True)
    others = [r for r in policy["spec"]["ingress"] if r != _webhook_rule(narrowed)]
    assert others == [r for r in one(base, "NetworkPolicy", "dns-controlplane")["spec"][
        "ingress"] if r != _webhook_rule(base)]
    assert [d for d in narrowed if d["kind"] != "NetworkPolicy"] == [
        d for d in base if d["kind"] != "NetworkPolicy"]
