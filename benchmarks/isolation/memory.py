"""Memory of the terminator Envoy by number of tenants (filter chains + clusters), and per
held mTLS connection. After `lab.py up` (it uses the lab's certificates and iso-res).

    ip netns exec iso-x python benchmarks/isolation/memory.py 2 10 100 1000 [--connections 90]

(in iso-x: the held connections must cross the lab bridge, as a pod's would)

Each size starts its own Envoy (static resources, the same chains as the lab's file-LDS
terminator) on 10.251.0.1:1853, waits for it to be ready, waits 2 s, reads
/proc/PID/smaps_rollup (private = Private_Clean + Private_Dirty), and with --connections K
also holds K mTLS connections of tenant a open (one query each) and reads it again.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import dns.message

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from benchmarks.isolation import lab  # noqa: E402


def smaps(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0])
    return out


def private_mib(pid: int) -> tuple[float, float]:
    s = smaps(pid)
    return (s["Private_Clean"] + s["Private_Dirty"]) / 1024, s["Rss"] / 1024


def bootstrap(count: int, port: int) -> Path:
    d = lab.WORK / "terminator"
    tenants = lab.tenant_names(count)
    listener = {"name": "tenant-hop",
                "address": {"socket_address": {"address": lab.RES_IP, "port_value": port}},
                "listener_filters": [{"name": "envoy.filters.listener.tls_inspector",
                                      "typed_config": lab._any(
                                          "envoy.extensions.filters.listener.tls_inspector"
                                          ".v3.TlsInspector")}],
                "filter_chains": [lab.terminator_chain(t, d / "sds", lab.WORK / "mem-access.log")
                                  for t in tenants]}
    clusters = [lab.static_cluster(f"resolver:{t}", "127.0.0.1", lab.unbound_port(i))
                for i, t in enumerate(tenants)]
    boot = {"node": {"id": f"mem-{count}", "cluster": "mem"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": 9911}}},
            "static_resources": {"listeners": [listener], "clusters": clusters}}
    out = lab.WORK / f"mem-{count}.json"
    out.write_text(json.dumps(boot))
    return out


def ready() -> bool:
    r = subprocess.run(["ip", "netns", "exec", "iso-res", "curl", "-s",
                        "http://127.0.0.1:9911/ready"], capture_output=True, text=True)
    return r.stdout.strip() == "LIVE"


def hold(count: int, port: int) -> list[ssl.SSLSocket]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(str(lab.WORK / "pki" / "ca.crt"))
    ctx.load_cert_chain(str(lab.WORK / "pki" / "a.crt"), str(lab.WORK / "pki" / "a.key"))
    wire = dns.message.make_query("a.test", "TXT").to_wire()
    socks = []
    for _ in range(count):
        s = ctx.wrap_socket(socket.create_connection((lab.RES_IP, port), timeout=3),
                            server_hostname=lab.sni("a"))
        s.sendall(len(wire).to_bytes(2, "big") + wire)
        s.recv(512)
        socks.append(s)
    return socks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sizes", type=int, nargs="+")
    parser.add_argument("--connections", type=int, default=0)
    args = parser.parse_args()
    for count in args.sizes:
        port = 1853
        config = bootstrap(count, port)
        t0 = time.monotonic()
        proc = subprocess.Popen(["ip", "netns", "exec", "iso-res", *lab.envoy_argv(config, "mem")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not ready():
                time.sleep(0.05)
            started = time.monotonic() - t0
            time.sleep(2)
            idle = private_mib(proc.pid)
            line = (f"tenants={count:5d} start={started:.2f}s private={idle[0]:.1f}MiB "
                    f"rss={idle[1]:.1f}MiB")
            if args.connections:
                socks = hold(args.connections, port)
                time.sleep(1)
                busy = private_mib(proc.pid)
                line += (f" | with {args.connections} mTLS connections held: "
                         f"private={busy[0]:.1f}MiB "
                         f"(+{(busy[0] - idle[0]) * 1024 / args.connections:.1f} KiB each)")
                for s in socks:
                    s.close()
            print(line, flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
