"""One new TCP connection per query (what a client that does not keep its connection costs).

    ip netns exec iso-a python connect.py HOST PORT [COUNT]

Prints p50/p90/p99 of connect + query + answer + close, in ms.
"""

from __future__ import annotations

import socket
import sys
import time

import dns.message


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    wire = dns.message.make_query("a.test", "TXT").to_wire()
    frame = len(wire).to_bytes(2, "big") + wire
    times = []
    failures = 0
    for _ in range(count):
        t0 = time.perf_counter()
        with socket.create_connection((host, port), timeout=3) as s:
            s.sendall(frame)
            head = s.recv(2)
            if len(head) < 2:
                failures += 1
                continue
            size = int.from_bytes(head, "big")
            body = b""
            while len(body) < size:
                body += s.recv(size - len(body))
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()

    def q(f: float) -> float:
        return times[min(len(times) - 1, int(len(times) * f))]

    print(f"{host}:{port} n={len(times)} failed={failures} p50={q(0.5):.3f}ms "
          f"p90={q(0.9):.3f}ms p99={q(0.99):.3f}ms")


if __name__ == "__main__":
    main()
