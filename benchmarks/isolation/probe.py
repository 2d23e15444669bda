"""Ask a resolver port the way a process that is not the tenant's sidecar would.

    ip netns exec iso-x python probe.py suite        # every negative (and control) case
    ip netns exec iso-x python probe.py tls --cert a --sni a.tenant-resolver.dns-controlplane

Each case prints one line: the case, what was expected (ANSWER or NOTHING), what came back
(the answer's rcode and data, or why nothing came), and OK/UNEXPECTED. Exit status 1 when
any case is unexpected.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

WORK = Path(os.environ.get("WORK", "/tmp/isolation-lab"))
RES_IP = "10.251.0.1"
SERVER_NAME = "tenant-resolver.dns-controlplane"
TIMEOUT = 3.0


def sni(tenant: str) -> str:
    return f"{tenant}.{SERVER_NAME}"


def _describe(reply: dns.message.Message) -> str:
    data = " ".join(rr.to_text() for rrset in reply.answer for rr in rrset)
    return f"ANSWER {dns.rcode.to_text(reply.rcode())} {data}".strip()


def ask_tls(name: str, *, port: int, cert: str | None, sni_name: str | None) -> str:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the chain is checked; the SNI names the tenant's chain
    ctx.load_verify_locations(str(WORK / "pki" / "ca.crt"))
    if cert:
        ctx.load_cert_chain(str(WORK / "pki" / f"{cert}.crt"), str(WORK / "pki" / f"{cert}.key"))
    query = dns.message.make_query(name, "TXT")
    try:
        with socket.create_connection((RES_IP, port), timeout=TIMEOUT) as raw, \
                ctx.wrap_socket(raw, server_hostname=sni_name) as tls:
            wire = query.to_wire()
            tls.sendall(len(wire).to_bytes(2, "big") + wire)
            head = tls.recv(2)
            if len(head) < 2:
                return "NOTHING: closed by the server without an answer"
            size = int.from_bytes(head, "big")
            body = b""
            while len(body) < size:
                chunk = tls.recv(size - len(body))
                if not chunk:
                    return "NOTHING: closed mid-answer"
                body += chunk
            return _describe(dns.message.from_wire(body))
    except ssl.SSLError as exc:
        return f"NOTHING: TLS {exc.reason or exc}"
    except (ConnectionError, TimeoutError, OSError) as exc:
        return f"NOTHING: {type(exc).__name__} {exc}"


def ask_plain(name: str, *, port: int, tcp: bool, host: str = RES_IP) -> str:
    query = dns.message.make_query(name, "TXT")
    try:
        if tcp:
            reply = dns.query.tcp(query, host, port=port, timeout=TIMEOUT)
        else:
            reply = dns.query.udp(query, host, port=port, timeout=TIMEOUT)
        return _describe(reply)
    except dns.exception.Timeout:
        return "NOTHING: no reply (timeout)"
    except (ConnectionError, EOFError, OSError) as exc:
        return f"NOTHING: {type(exc).__name__} {exc}"


@dataclass(frozen=True)
class Case:
    label: str
    expect: str  # ANSWER | NOTHING
    kind: str  # tls | udp | tcp
    port: int
    cert: str | None = None
    sni_name: str | None = None
    name: str = "a.test"

    def run(self) -> str:
        if self.kind == "tls":
            return ask_tls(self.name, port=self.port, cert=self.cert, sni_name=self.sni_name)
        return ask_plain(self.name, port=self.port, tcp=self.kind == "tcp")


SUITE = (
    Case("no client certificate, SNI of tenant a", "NOTHING", "tls", 853, None, sni("a")),
    Case("tenant b's certificate, SNI of tenant a", "NOTHING", "tls", 853, "b", sni("a")),
    Case("tenant a's certificate, expired", "NOTHING", "tls", 853, "a-expired", sni("a")),
    Case("tenant a's SAN signed by another CA (same CA name)", "NOTHING", "tls", 853,
         "a-rogue", sni("a")),
    Case("tenant 'ab' (shares the prefix 'a'), SNI of tenant a", "NOTHING", "tls", 853, "ab",
         sni("a")),
    Case("tenant a's certificate, no SNI", "NOTHING", "tls", 853, "a", None),
    Case("tenant a's certificate, SNI of an unknown tenant", "NOTHING", "tls", 853, "a",
         sni("zz")),
    Case("plain DNS over TCP to the terminator's port", "NOTHING", "tcp", 853),
    Case("plain DNS over UDP to the terminator's port", "NOTHING", "udp", 853),
    Case("plain UDP to tenant a's unbound port (5301)", "NOTHING", "udp", 5301),
    Case("plain TCP to tenant a's unbound port (5301)", "NOTHING", "tcp", 5301),
    Case("plain UDP to tenant b's unbound port (5302)", "NOTHING", "udp", 5302, name="b.test"),
    Case("control: tenant b's certificate, SNI of tenant b", "ANSWER", "tls", 853, "b",
         sni("b"), name="b.test"),
    Case("control: tenant a's certificate, SNI of tenant a (a stolen key works)", "ANSWER",
         "tls", 853, "a", sni("a")),
    Case("today: plain UDP to the exposed resolver (5353)", "ANSWER", "udp", 5353),
    Case("today: DoT with no client certificate (8853)", "ANSWER", "tls", 8853, None,
         SERVER_NAME),
)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["suite", "tls", "udp", "tcp"])
    parser.add_argument("--port", type=int, default=853)
    parser.add_argument("--cert")
    parser.add_argument("--sni")
    parser.add_argument("--name", default="a.test")
    args = parser.parse_args()
    if args.mode != "suite":
        print(Case("adhoc", "?", args.mode, args.port, args.cert, args.sni, args.name).run())
        return 0
    bad = 0
    for case in SUITE:
        got = case.run()
        ok = got.startswith(case.expect)
        bad += not ok
        print(f"{'OK  ' if ok else 'UNEXPECTED'} | {case.label} | expected {case.expect} | {got}")
    print(f"{len(SUITE) - bad} of {len(SUITE)} as expected")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
