"""A tenant added while the terminator runs: its loopback unbound first, then the pool's
rewrite of the terminator's CDS and LDS files (atomic renames in watched directories);
how long until the new tenant's certificate gets an answer, and whether the open
connections of the other tenants survive the listener update.

    ip netns exec iso-x python benchmarks/isolation/add_tenant.py     (after lab.py up)
"""

from __future__ import annotations

import datetime
import socket
import ssl
import sys
import time
from pathlib import Path

import dns.message

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from benchmarks.isolation import lab, pki  # noqa: E402


def tls_conn(tenant: str, sni_tenant: str | None = None) -> ssl.SSLSocket:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(str(lab.WORK / "pki" / "ca.crt"))
    ctx.load_cert_chain(str(lab.WORK / "pki" / f"{tenant}.crt"),
                        str(lab.WORK / "pki" / f"{tenant}.key"))
    raw = socket.create_connection((lab.RES_IP, lab.TERMINATOR_PORT), timeout=2)
    return ctx.wrap_socket(raw, server_hostname=lab.sni(sni_tenant or tenant))


def ask_sni(cert_tenant: str, sni_tenant: str) -> str:
    try:
        return ask(tls_conn(cert_tenant, sni_tenant), f"{sni_tenant}.test")
    except OSError as exc:
        return f"NOTHING ({type(exc).__name__})"


def ask(sock: ssl.SSLSocket, name: str) -> str:
    wire = dns.message.make_query(name, "TXT").to_wire()
    try:
        sock.sendall(len(wire).to_bytes(2, "big") + wire)
        head = sock.recv(2)
        body = sock.recv(int.from_bytes(head, "big")) if len(head) == 2 else b""
        reply = dns.message.from_wire(body)
        return " ".join(rr.to_text() for rrset in reply.answer for rr in rrset) or "empty"
    except (OSError, ValueError, dns.exception.DNSException) as exc:
        return f"NOTHING ({type(exc).__name__})"


def main() -> None:
    new = lab.tenant_names(3)[2]
    ca, ca_key = pki.load_ca(lab.WORK / "pki")
    pki.write(lab.WORK / "pki", new, *pki.issue_client_cert(
        ca, ca_key, tenant=new, namespace=f"team-{new}", pod="p-1",
        lifetime=datetime.timedelta(hours=1)))
    conf = lab.unbound_conf(lab.WORK / f"unbound-{new}", new, [f"127.0.0.1@{lab.unbound_port(2)}"])
    lab.start(f"unbound-{new}", "iso-res", ["unbound", "-d", "-c", str(conf)])  # lab.py down stops it
    held = tls_conn("a")
    print("tenant a, connection opened before the update:", ask(held, "a.test"))
    time.sleep(0.5)  # unbound binds in well under this (its start is measured elsewhere)
    t0 = time.monotonic()
    lab.write_terminator_resources(lab.tenant_names(3), str(time.time()))
    tries = 0
    while True:
        tries += 1
        try:
            got = ask(tls_conn(new), f"{new}.test")
        except OSError:
            got = "NOTHING"
        if not got.startswith("NOTHING"):
            break
        if time.monotonic() - t0 > 10:
            print("the new tenant never answered")
            return
        time.sleep(0.01)
    print(f"new tenant {new}: first answer {(time.monotonic() - t0) * 1000:.0f} ms after the "
          f"files were renamed ({tries} tries): {got}")
    print("tenant a, the connection opened before the update:", ask(held, "a.test"))
    print("tenant a's certificate with the new tenant's SNI:",
          ask_sni("a", new))


if __name__ == "__main__":
    main()
