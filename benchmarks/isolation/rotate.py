"""Rotation and expiry of the sidecar's hop client certificate, with the real Envoys.

    ip netns exec iso-a python benchmarks/isolation/rotate.py      (after lab.py up)

The sidecar takes its certificate from a file-based SDS Secret (the product would send the
same Secret over ADS); a swap is an atomic rename. Shown, with figures:
1. a swap reaches the sidecar's TLS context (admin /certs) in how long;
2. a connection opened before the swap keeps working (TLS authenticates at the handshake);
3. the next connection presents the new certificate (the terminator's access log serial);
4. a certificate that expires: the open connection still answers, and a new connection
   (resumed TLS session or a full handshake) does or does not; a freshly loaded expired
   certificate (new TLS context, no session to resume) is refused.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import time
import urllib.request
from pathlib import Path

import dns.message

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from benchmarks.isolation import lab, pki  # noqa: E402

CLIENT = lab.WORK / "iso-a" / "sds" / "hop-client.json"
ACCESS = lab.WORK / "terminator" / "access.log"


def admin(path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:9902{path}", timeout=2) as r:
        return str(r.read().decode())


def client_serial() -> str:
    for cert in json.loads(admin("/certs"))["certificates"]:
        for c in cert.get("cert_chain", []):
            if c.get("subject_alt_names"):
                return str(c["serial_number"])
    return ""


def stat(name: str) -> int:
    for line in admin("/stats").splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


class Conn:
    """One DNS-over-TCP connection to the hop listener (as kresd holds one)."""

    def __init__(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", lab.HOP_MTLS), timeout=3)

    def ask(self, name: str = "a.test") -> str:
        wire = dns.message.make_query(name, "TXT").to_wire()
        try:
            self.sock.sendall(len(wire).to_bytes(2, "big") + wire)
            head = self.sock.recv(2)
            if len(head) < 2:
                return "NOTHING (closed)"
            size = int.from_bytes(head, "big")
            body = b""
            while len(body) < size:
                body += self.sock.recv(size - len(body))
        except OSError as exc:
            return f"NOTHING ({exc})"
        reply = dns.message.from_wire(body)
        return " ".join(rr.to_text() for rrset in reply.answer for rr in rrset) or "empty"

    def close(self) -> None:
        self.sock.close()


def once() -> str:
    c = Conn()
    try:
        return c.ask()
    finally:
        c.close()


def install(name: str) -> float:
    """Swap the sidecar's Secret to pki/<name>; seconds until /certs shows it."""
    before = client_serial()
    t0 = time.monotonic()
    lab.secret_file(CLIENT, "hop-client", cert=lab.WORK / "pki" / f"{name}.crt",
                    key=lab.WORK / "pki" / f"{name}.key")
    while client_serial() == before:
        if time.monotonic() - t0 > 10:
            raise SystemExit(f"the sidecar did not load {name}")
        time.sleep(0.005)
    return time.monotonic() - t0


def serial_logged_for(port: int) -> str:
    """The serial the terminator logged for the sidecar's upstream connection from local
    ``port`` (Envoy flushes its file access log every 10 s by default: wait for it)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for line in ACCESS.read_text().splitlines():
            if f":{port} " in line:
                return line.split("serial=")[1].split()[0]
        time.sleep(0.1)
    return ""


def sidecar_upstream_ports() -> set[int]:
    """Local ports of the sidecar's connections to the terminator (from /proc/net/tcp)."""
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote = line.split()[1:3]
        if remote.endswith(f":{lab.TERMINATOR_PORT:04X}"):
            ports.add(int(local.split(":")[1], 16))
    return ports


def once_logged() -> tuple[str, str]:
    """A query on a new connection; its answer and the serial the terminator logged."""
    before = sidecar_upstream_ports()
    c = Conn()
    try:
        answer = c.ask()
        new = sidecar_upstream_ports() - before
    finally:
        c.close()
    return answer, serial_logged_for(new.pop()) if len(new) == 1 else "?"


def serial_of(name: str) -> str:
    from cryptography import x509
    return f"{x509.load_pem_x509_certificate((lab.WORK / 'pki' / f'{name}.crt').read_bytes()).serial_number:x}"


def main() -> None:
    answer, serial = once_logged()
    print("1. baseline: new connection:", answer, "| logged serial is a.crt:",
          serial.lower().lstrip("0") == serial_of("a").lstrip("0"))
    held = Conn()
    print("   a held connection answers:", held.ask())
    print(f"2. swap to a-next.crt: the sidecar loaded it in {install('a-next') * 1000:.0f} ms")
    print("   the held connection (opened with a.crt) still answers:", held.ask())
    held.close()
    answer, serial = once_logged()
    named = {serial_of(n).lstrip("0"): n for n in ("a", "a-next")}
    print("   new connection:", answer, "| the terminator logged the serial of",
          named.get(serial.lower().lstrip("0"), serial))
    # 4. expiry
    ca, ca_key = pki.load_ca(lab.WORK / "pki")
    lifetime = 15
    pki.write(lab.WORK / "pki", "a-short", *pki.issue_client_cert(
        ca, ca_key, tenant="a", namespace="team-a", pod="web-1",
        lifetime=datetime.timedelta(seconds=lifetime)))
    t_issue = time.monotonic()
    install("a-short")
    h0, r0 = stat("cluster.tenant_resolver.ssl.handshake"), \
        stat("cluster.tenant_resolver.ssl.session_reused")
    held = Conn()
    print(f"3. a {lifetime} s certificate installed; a connection opened with it:", held.ask())
    while time.monotonic() - t_issue < lifetime + 3:
        held.ask()  # keep it busy, so unbound's 10 s idle close does not end it
        time.sleep(2)
    print(f"   {time.monotonic() - t_issue:.0f} s later (expired): the same connection:",
          held.ask())
    print("   a new connection with the expired certificate still loaded:", once())
    h1, r1 = stat("cluster.tenant_resolver.ssl.handshake"), \
        stat("cluster.tenant_resolver.ssl.session_reused")
    print(f"   (sidecar upstream handshakes +{h1 - h0}, of which resumed +{r1 - r0})")
    held.close()
    if os.environ.get("ISO_TICKET_KEYS"):
        for _ in range(2):
            lab.rotate_ticket_keys(["a"])
            time.sleep(0.5)  # the terminator's watched-directory reload (well under 0.5 s)
        print("   ticket keys rotated twice; a new connection, same expired certificate:",
              once())
    install("a-expired")  # a new TLS context: nothing to resume
    print("4. a-expired.crt loaded fresh; new connection:", once())
    install("a")
    print("   back to a.crt; new connection:", once())


if __name__ == "__main__":
    main()
