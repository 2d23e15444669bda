"""Only a tenant's own sidecars can use its resolver (issue 18 item 5; docs/resolver-isolation.md).

Real processes: ``controlplane serve --resolver-hop mtls`` with persistent resolvers, two
forwarding tenants (globex and initech, each with its own unbound on loopback behind the
hop terminator Envoy), a real Envoy sidecar of globex started apart from the control
plane, and the tenants' server (dnsmasq).

- globex's sidecars (Envoy alone, SotW and delta ADS) and initech's fronted sidecar (``controlplane sidecar``:
  kresd -> Envoy's hop over TCP) resolve an external name through the mutual hop (each
  Envoy got its tenant's client certificate as an SDS Secret over ADS);
- from this test process, which is nobody's sidecar, every other way in gets nothing: no
  certificate, another tenant's certificate, an expired one, one from a rogue CA with the
  same name, the tenant prefix ``globexab``, no SNI or an unknown one, plain TCP/UDP to
  the terminator, and unbound's port on a non-loopback address (the certificates are made
  with the test's own copy of the hop CA, read from the resolver directory);
- on one machine loopback is shared, so a local process reaches unbound's loopback port
  directly (asserted, as what holds here); in a pod the resolvers' loopback is the
  resolver pod's own network namespace, reachable from no other pod;
- the control plane SIGKILLed: the sidecar keeps resolving through the terminator
  (``--resolver-lifetime persistent`` keeps both) for 10 s.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from controlplane._kit.localrun import ControlPlane, Dnsmasq, Envoy, Sidecar, http_json, wait_for
from controlplane.identity.certs import hop_client_uri, issue_client_cert, make_ca
from controlplane.resolvers.state import STATE_FILE
from controlplane.runtime.process import free_port
from e2e.harness.dnsquery import query
from e2e.harness.examples import point_globex_at
from tests.tools import require_tool

FORWARDED = ("www.example.com", ("NOERROR", ["203.0.113.10"]))
SERVER_NAME = "tenant-resolver.dns-controlplane"
PROBE_NAME = "www.example.com"
TIMEOUT = 3.0


def sni(tenant: str) -> str:
    return f"{tenant}.{SERVER_NAME}"


def _answer(reply: dns.message.Message) -> str:
    data = " ".join(rr.to_text() for rrset in reply.answer for rr in rrset)
    return f"ANSWER {dns.rcode.to_text(reply.rcode())} {data}".strip()


def ask_tls(port: int, ca: Path, *, cert: tuple[Path, Path] | None, sni_name: str | None) -> str:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the chain is checked; the SNI names the tenant's chain
    ctx.load_verify_locations(str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    wire = dns.message.make_query(PROBE_NAME, "A").to_wire()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw, \
                ctx.wrap_socket(raw, server_hostname=sni_name) as tls:
            tls.sendall(len(wire).to_bytes(2, "big") + wire)
            head = tls.recv(2)
            if len(head) < 2:
                return "NOTHING: closed without an answer"
            size, body = int.from_bytes(head, "big"), b""
            while len(body) < size:
                chunk = tls.recv(size - len(body))
                if not chunk:
                    return "NOTHING: closed mid-answer"
                body += chunk
            return _answer(dns.message.from_wire(body))
    except ssl.SSLError as exc:
        return f"NOTHING: TLS {exc.reason or exc}"
    except OSError as exc:
        return f"NOTHING: {type(exc).__name__} {exc}"


def ask_plain(host: str, port: int, *, tcp: bool) -> str:
    q = dns.message.make_query(PROBE_NAME, "A")
    try:
        reply = (dns.query.tcp(q, host, port=port, timeout=TIMEOUT) if tcp
                 else dns.query.udp(q, host, port=port, timeout=TIMEOUT))
    except dns.exception.Timeout:
        return "NOTHING: no reply (timeout)"
    except (EOFError, OSError) as exc:
        return f"NOTHING: {type(exc).__name__} {exc}"
    return _answer(reply)


def non_loopback_ipv4() -> str | None:
    """An address of this machine other pods would use (None: it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # no packet is sent: routing picks the source
        except OSError:
            return None
        address: str = sock.getsockname()[0]
    return None if address.startswith("127.") else address


class Pki:
    """Certificates made with the test's own copy of the hop CA (in the resolver dir)."""

    def __init__(self, hop_dir: Path, out: Path) -> None:
        self.ca_file = hop_dir / "ca.crt"
        self.ca = self.ca_file.read_bytes()
        self.ca_key = (hop_dir / "ca.key").read_bytes()
        self.out = out
        out.mkdir(parents=True, exist_ok=True)

    def issue(self, name: str, tenant: str, *, hours: float = 1, ago: float = 0,
              ca: tuple[bytes, bytes] | None = None) -> tuple[Path, Path]:
        now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=ago)
        ca_pem, ca_key = ca or (self.ca, self.ca_key)
        cert, key = issue_client_cert(ca_pem, ca_key, uri=hop_client_uri(tenant),
                                      lifetime=datetime.timedelta(hours=hours), now=now)
        (self.out / f"{name}.crt").write_bytes(cert)
        (self.out / f"{name}.key").write_bytes(key)
        return self.out / f"{name}.crt", self.out / f"{name}.key"


def add_initech(manifests: Path, upstream: Dnsmasq) -> None:
    """A second forwarding tenant on the same server."""
    (manifests / "initech.yaml").write_text(f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: initech, labels: {{tenant: initech}}}}
---
apiVersion: networking.example.com/v1alpha1
kind: DnsPolicy
metadata: {{name: initech}}
spec:
  namespaceSelector: {{matchLabels: {{tenant: initech}}}}
  server:
    address: 127.0.0.1:{upstream.port}
  policy: {{defaultAction: ALLOW}}
""")


def test_only_a_tenants_own_sidecars_use_its_resolver(
        manifests: Path, tmp_path: Path, resolver_dir: Path, processes: list[object],
        start_envoy: Callable[..., Envoy], start_dnsmasq: Callable[..., Dnsmasq]) -> None:
    upstream = start_dnsmasq({FORWARDED[0]: "203.0.113.10", "example.net": "203.0.113.20"})
    point_globex_at(manifests, upstream)
    add_initech(manifests, upstream)
    hop_port = free_port()
    cp = ControlPlane(manifests, tmp_path / "cp", extra_args=[
        "--debounce", "0.02", "--resolver-dir", str(resolver_dir),
        "--resolver-lifetime", "persistent", "--resolver-hop", "mtls",
        "--resolver-hop-port", str(hop_port)])
    (tmp_path / "cp").mkdir()
    processes.append(cp)
    cp.start()
    envoy = start_envoy(cp, "sleep.globex", "globex")
    require_tool("kresd", "apt-get install knot-resolver")
    fronted = Sidecar("web.initech", "initech", {"app": "web"}, cp.xds_address, tmp_path)
    processes.append(fronted)
    fronted.start()

    # globex's own sidecar: through the mutual hop (Envoy's DNS filter -> hop listener ->
    # TLS with the tenant's certificate -> terminator -> globex's unbound).
    wait_for(lambda: query(envoy.dns_port, FORWARDED[0]) == FORWARDED[1], timeout=20,
             what="an external name through globex's sidecar")
    delta = Envoy(node_id="delta.globex", namespace="globex", labels={"app": "sleep"},
                  xds_address=cp.xds_address, workdir=tmp_path, delta=True)
    processes.append(delta)
    delta.start()  # the Secret over delta ADS too
    wait_for(lambda: query(delta.dns_port, FORWARDED[0]) == FORWARDED[1], timeout=20,
             what="an external name through a delta-ADS sidecar")
    for tcp in (False, True):  # the fronted pod: its front, then the hop over TCP
        wait_for(lambda tcp=tcp: ask_plain("127.0.0.1", fronted.dns_port, tcp=tcp)
                 == "ANSWER NOERROR 203.0.113.10", timeout=20,
                 what=f"an external name through initech's front (tcp={tcp})")
    secrets = http_json(f"{envoy.admin_url}/config_dump?resource=dynamic_active_secrets")
    [secret] = [c for c in secrets["configs"] if c["name"] == "resolver-hop-client"]
    assert "[redacted]" in json.dumps(secret)  # Envoy redacts the key in its own dump

    # What every admin read of the control plane shows: never a private key.
    for path in ("/api/v1/nodes", "/api/v1/views", "/api/v1/views/globex/dns-table",
                 "/api/v1/resolvers", "/api/v1/errors", "/api/v1/rebuilds", "/api/v1/tenants",
                 "/api/v1/explain?namespace=globex&name=www.example.com", "/metrics"):
        with_key = _admin_text(cp, path)
        assert "PRIVATE KEY" not in with_key, path

    pki = Pki(resolver_dir / "hop-tls", tmp_path / "pki")
    rogue = make_ca(common_name="dns-controlplane CA")
    cases = {
        "no client certificate, SNI of globex": (None, sni("globex")),
        "initech's certificate, SNI of globex": (pki.issue("initech", "initech"), sni("globex")),
        "globex's certificate, expired": (pki.issue("expired", "globex", hours=1, ago=2),
                                          sni("globex")),
        "globex's URI from a rogue CA with the same name": (
            pki.issue("rogue", "globex", ca=rogue), sni("globex")),
        "tenant globexab (shares the prefix), SNI of globex": (
            pki.issue("globexab", "globexab"), sni("globex")),
        "globex's certificate, no SNI": (pki.issue("globex", "globex"), None),
        "globex's certificate, SNI of an unknown tenant": (
            pki.issue("globex2", "globex"), sni("nobody")),
    }
    results = {label: ask_tls(hop_port, pki.ca_file, cert=cert, sni_name=name)
               for label, (cert, name) in cases.items()}
    results["plain TCP to the terminator"] = ask_plain("127.0.0.1", hop_port, tcp=True)
    results["plain UDP to the terminator"] = ask_plain("127.0.0.1", hop_port, tcp=False)
    [globex_state] = [json.loads(p.read_text()) for p in resolver_dir.glob(f"*/{STATE_FILE}")
                      if json.loads(p.read_text())["tenant"] == "globex"]
    listen = globex_state["paths"]["listen"]
    assert listen["host"] == "127.0.0.1"  # unbound on loopback only
    outside = non_loopback_ipv4()
    if outside is not None:  # what another pod would use: the machine's (pod's) address
        results["UDP to globex's unbound port, non-loopback address"] = ask_plain(
            outside, listen["port"], tcp=False)
        results["TCP to globex's unbound port, non-loopback address"] = ask_plain(
            outside, listen["port"], tcp=True)
    print("\n" + "\n".join(f"{label}: {got}" for label, got in results.items()))
    assert all(got.startswith("NOTHING") for got in results.values()), results

    # Controls: the certificates are right, so the refusals are the terminator's checks.
    assert ask_tls(hop_port, pki.ca_file, cert=pki.issue("ok", "globex"),
                   sni_name=sni("globex")) == "ANSWER NOERROR 203.0.113.10"
    assert ask_tls(hop_port, pki.ca_file, cert=pki.issue("initech-ok", "initech"),
                   sni_name=sni("initech")) == "ANSWER NOERROR 203.0.113.10"
    # One machine: loopback is shared, so a local process reaches unbound's loopback port
    # (in a pod that loopback is the resolver pod's alone).
    assert ask_plain("127.0.0.1", listen["port"], tcp=False).startswith("ANSWER")

    # The control plane SIGKILLed: the sidecar keeps resolving through the terminator.
    assert cp.process is not None
    os.kill(cp.process.pid, signal.SIGKILL)
    cp.process.stop()
    sent = lost = 0
    end = time.monotonic() + 10
    while time.monotonic() < end:
        sent += 1
        try:
            if sent % 2:  # a name nobody cached, through initech's front and hop
                ok = query(fronted.dns_port, f"n{sent}.example.net", timeout=1.0) == (
                    "NOERROR", ["203.0.113.20"])
            else:
                ok = query(envoy.dns_port, FORWARDED[0], timeout=1.0) == FORWARDED[1]
        except (dns.exception.Timeout, OSError):
            ok = False
        lost += not ok
        time.sleep(0.05)
    print(f"control plane dead for 10 s: sent {sent}, lost or wrong {lost}")
    assert sent > 50 and lost == 0


def _admin_text(cp: ControlPlane, path: str) -> str:
    import urllib.request
    with urllib.request.urlopen(f"{cp.admin_url}{path}", timeout=10) as reply:
        return str(reply.read().decode())
