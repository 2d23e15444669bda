"""deploy/resolvers.yaml's pod, run here: its two containers with the Deployment's own
arguments (``serve --role resolvers`` and ``resolver-host``; the kubelet's ``$(VAR)``
expansion, the pod IP a loopback address; only what a pod mounts made local: the
emptyDir and the two Secrets' files, and the admin port) against the fake API server
holding examples/globex.yaml.

It becomes ready, starts globex's resolver behind the mutual-hop terminator on dns-hop,
that resolver answers globex's table, and everything the pod asked the API server is a
read its ClusterRole (resolvers.yaml) grants its ServiceAccount: no write, no Lease, no
status, no review beyond the admin API's (none here: only the open probes are called).
"""

from __future__ import annotations

import json
import ssl
import sys
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import dns.message
import dns.query
import dns.rcode
import pytest
import yaml

from controlplane._kit.localrun import ResolverHost, accepts_tcp, wait_for
from controlplane.identity.certs import server_tls
from controlplane.identity.tlsfiles import write_server_files
from controlplane.resolvers.pool import RESOLVER_TLS_NAME
from controlplane.resolvers.state import read_state
from controlplane.runtime.process import Process, free_port
from e2e.harness.persistent import stop_persistent
from e2e.harness.realclients import reserve_loopback_dns_address
from tests.fakes import podsim, rbac
from tests.fakes.kube import FakeKube
from tests.fakes.podsim import container_argv
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "dns-system"
MOUNT = "/var/lib/dns-controlplane"  # the pod's emptyDir, both containers


@pytest.fixture
def kube_objects() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((ROOT / "examples" / "globex.yaml").read_text()) if d]
    for doc in docs:
        if doc["kind"] == "ServiceEntry":  # Istio is not installed in the fake cluster
            doc["apiVersion"] = "networking.example.com/v1alpha1"
    return docs


def resolver_pod() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Deployment's pod (as the API server would make it) and resolvers.yaml's RBAC."""
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "resolvers.yaml").read_text())
            if d]
    [dep] = [d for d in docs if d["kind"] == "Deployment"]
    pod = {"metadata": {"name": "dns-resolvers-0", "namespace": NAMESPACE,
                        "labels": dep["spec"]["template"]["metadata"]["labels"]},
           "spec": dep["spec"]["template"]["spec"]}
    return pod, [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def local(argv: list[str], tmp: Path, *, admin_port: int) -> list[str]:
    """The container's arguments with what the pod mounts in this test's directory."""
    out = []
    for arg in argv:
        arg = arg.replace(MOUNT, str(tmp / "emptydir"))
        arg = arg.replace("/etc/dns-controlplane-tls", str(tmp / "secrets"))
        if arg.startswith("--admin-address="):
            arg = f"--admin-address=127.0.0.1:{admin_port}"
        out.append(arg)
    return out


def attributes(method: str, path: str, query: str) -> dict[str, Any]:
    """The resource attributes a request to ``path`` is authorised with."""
    parts = path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    namespace = ""
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) != 2:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0]
    named = len(rest) > 1
    if len(rest) > 2:  # a subresource (status)
        resource = f"{rest[0]}/{rest[2]}"
    watching = "true" in parse_qs(query).get("watch", [])
    verb = {"GET": "watch" if watching else "get" if named else "list",
            "POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete"}[method]
    return {"group": group, "resource": resource, "verb": verb, "namespace": namespace}


def test_the_resolver_pod_runs_its_resolvers_with_only_its_reads(
        kube: FakeKube, tmp_path: Path, processes: list[object],
        monkeypatch: pytest.MonkeyPatch) -> None:
    require_tool("unbound", "apt-get install unbound")
    pod, rbac_objects = resolver_pod()
    serve_c, host_c = pod["spec"]["containers"]
    hop_port = 10853
    pod_ip = reserve_loopback_dns_address(port=hop_port, first=20, last=250)
    pod_ip.close()
    admin_port = free_port()
    secrets = tmp_path / "secrets"
    write_server_files(secrets / "xds", ["dns-controlplane.dns-system.svc"])
    server_tls(secrets / "hop", RESOLVER_TLS_NAME, signing=True)  # the hop CA Secret
    (tmp_path / "emptydir").mkdir()
    real = podsim.field_value  # the kubelet gives the pod its IP: here a loopback address
    monkeypatch.setattr(podsim, "field_value",
                        lambda p, path: real(p, path, pod_ip=pod_ip.host))
    serve_argv = local(container_argv(serve_c, pod), tmp_path, admin_port=admin_port)
    host_argv = local(container_argv(host_c, pod), tmp_path, admin_port=admin_port)
    assert serve_argv[:2] == ["serve", "--role=resolvers"] and host_argv[0] == "resolver-host"
    spool = Path(next(a for a in host_argv if a.startswith("--spool=")).split("=", 1)[1])
    spool.mkdir(parents=True)
    host = ResolverHost(spool, tmp_path / "host.log")
    processes.append(host)
    host.start()
    directory = Path(next(a for a in serve_argv if a.startswith("--resolver-dir="))
                     .split("=", 1)[1])
    processes.append(_Stop(directory))
    kube.add_service_account_token("resolvers-token", NAMESPACE, "dns-resolvers")
    argv = [sys.executable, "-m", "controlplane", *serve_argv, "--kubeconfig",
            str(kube.kubeconfig(tmp_path, token="resolvers-token")), "--watch-timeout", "5"]
    proc = Process("resolvers-pod", argv, tmp_path / "serve.log").start()
    processes.append(proc)
    context = ssl.create_default_context(cafile=str(secrets / "xds" / "ca.crt"))
    context.check_hostname = False  # the probes connect to the pod IP, as the kubelet does

    def probe(path: str) -> dict[str, Any]:
        if not proc.alive():
            raise RuntimeError(proc.log()[-3000:])
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{admin_port}{path}",
                                        context=context, timeout=2) as resp:
                return dict(json.loads(resp.read()))
        except OSError:
            return {}
    wait_for(lambda: probe("/readyz").get("ready") is True, timeout=30, what="/readyz")
    assert probe("/healthz")
    # globex's resolver behind the terminator on the pod IP's dns-hop
    wait_for(lambda: accepts_tcp(pod_ip.host, hop_port), timeout=20, what="the terminator")
    states = [read_state(p.parent) for p in directory.glob("*/state.json")]
    [globex] = [s for s in states if s is not None and s.tenant == "globex"]
    reply = dns.query.udp(dns.message.make_query("api.globex.svc.cluster.local", "A"),
                          globex.paths.listen.host, port=globex.paths.listen.port, timeout=2)
    assert dns.rcode.to_text(reply.rcode()) == "NOERROR"
    assert [rd.to_text() for rrset in reply.answer for rd in rrset] == ["10.96.40.10"]
    # what it asked the API server: reads its ClusterRole grants, nothing else
    made = [r for r in kube.requests if r[1].startswith(("/api/", "/apis/"))
            and not r[1].startswith(("/api/v1?", "/apis?")) and r[1] not in ("/api", "/apis")
            and len(r[1].strip("/").split("/")) > (2 if r[1].startswith("/api/") else 3)]
    assert made, kube.requests
    user = f"system:serviceaccount:{NAMESPACE}:dns-resolvers"
    refused = []
    for method, path, query in made:
        attrs = attributes(method, path, query)
        allowed, _ = rbac.authorize(rbac_objects, {"user": user, "groups": [],
                                                   "resourceAttributes": attrs})
        if not allowed or attrs["verb"] not in ("get", "list", "watch"):
            refused.append((method, path, attrs))
    assert refused == []
    read = {attributes(*r)["resource"] for r in made}
    assert {"namespaces", "services", "endpointslices", "dnspolicies", "pods"} <= read
    assert kube.status_writes_by("resolvers-token") == []
    assert kube.lease("dns-controlplane-status", NAMESPACE) is None


class _Stop:
    """Stops the persistent resolvers of ``directory`` at the end of the test."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def stop(self) -> None:
        stop_persistent(self.directory)
