"""Per-query latency with one query in flight (an application's getaddrinfo), per path.

    ip netns exec iso-a python closedloop.py [N]          (after lab.py up + front_latency.sh)

dnsperf keeps sending at its rate whatever comes back (open loop); through kresd's TCP
upstream its p50 settles at about one inter-query interval on a long-lived connection
(5 ms at 200 q/s, 1.2 ms at 1,000 q/s) on every path, TLS or not (docs/resolver-isolation.md).
This asks the next query only after the answer: the cost of each hop itself.
Paths: over one kept TCP connection to the resolver, the plain hop, today's TLS hop and the
mTLS hop; and UDP to the kresd fronts (127.0.0.2 plain hop, 127.0.0.3 TLS hop, 127.0.0.1
mTLS hop) with every name new, so each query takes the hop.
"""

from __future__ import annotations

import random
import socket
import sys
import time

import dns.message


def tcp_path(host: str, port: int, n: int) -> list[float]:
    out = []
    with socket.create_connection((host, port), timeout=3) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n):
            wire = dns.message.make_query("a.test", "TXT").to_wire()
            t = time.perf_counter()
            s.sendall(len(wire).to_bytes(2, "big") + wire)
            size = int.from_bytes(s.recv(2), "big")
            body = b""
            while len(body) < size:
                body += s.recv(size - len(body))
            out.append((time.perf_counter() - t) * 1000)
    return out


def udp_front(host: str, n: int) -> list[float]:
    tag = f"{random.getrandbits(32):08x}"
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        for i in range(n):
            wire = dns.message.make_query(f"c{i}-{tag}.a.test", "A").to_wire()
            t = time.perf_counter()
            s.sendto(wire, (host, 53))
            s.recv(512)
            out.append((time.perf_counter() - t) * 1000)
    return out


def show(label: str, lat: list[float]) -> None:
    lat.sort()
    n = len(lat)
    print(f"{label:44s} n={n} p50={lat[n // 2]:.3f}ms p90={lat[int(n * .9)]:.3f}ms "
          f"p99={lat[int(n * .99)]:.3f}ms")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    show("TCP straight to the resolver", tcp_path("10.251.0.1", 5353, n))
    show("TCP, hop plain", tcp_path("127.0.0.1", 15254, n))
    show("TCP, hop TLS server-auth (today)", tcp_path("127.0.0.1", 15154, n))
    show("TCP, hop mTLS -> terminator (proposed)", tcp_path("127.0.0.1", 15054, n))
    show("UDP front -> plain hop, new names", udp_front("127.0.0.2", n))
    show("UDP front -> TLS hop (today), new names", udp_front("127.0.0.3", n))
    show("UDP front -> mTLS hop (proposed), new names", udp_front("127.0.0.1", n))


if __name__ == "__main__":
    main()
