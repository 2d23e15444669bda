"""``make run``: the control plane on a manifest directory, with one real sidecar per tenant.

For each DnsPolicy in the directory it starts a sidecar in the first namespace the
policy selects, as a VM starts one (``controlplane sidecar``: Envoy and its DNS front,
kresd, answering UDP and TCP; docs/vm.md), prints how to query it with dig, and stays up
until Ctrl-C; then it stops every process it started. A tenant whose policy
forwards to ``127.0.0.1:15353`` gets a dnsmasq there, answering a few
external names, so forwarding can be tried too.

Ports: 15353 (UDP and TCP, the dnsmasq) is the one fixed port, because the
example policy names it. Every other port (xDS, the admin API and console,
each sidecar's DNS front, Envoy's DNS, set and hop listeners, admin and
stats, the tenant resolvers) is chosen free when the process starts, and printed. When 15353 is
taken, by another ``make run`` say, nothing is started: one line names the
port and the process holding it, and the exit code is 1. A process that fails
to start for another reason is named in one line too, with its log.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path

from controlplane._kit.localrun import ControlPlane, Dnsmasq, Sidecar, find_tool
from controlplane.core.inventory import Inventory
from controlplane.runtime.process import free_port, port_holders
from controlplane.sources.files import FileSource
from controlplane.store.store import Store

DEMO_UPSTREAM_PORT = 15353
DEMO_UPSTREAM_RECORDS = {
    "www.example.com": "203.0.113.10",
    "ads.tracker.example": "203.0.113.66",
}


def port_taken(port: int, what: str) -> str:
    """One line saying who holds ``port`` on 127.0.0.1 (UDP, then TCP); "" when free."""
    for udp in (True, False):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
                           ) as probe:
            if not udp:  # a connection in TIME_WAIT does not keep dnsmasq from binding
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
                continue
            except OSError:
                pass
        holders = port_holders(port, udp=udp) or ["another process"]
        return (f"make run: port {port}/{'udp' if udp else 'tcp'} ({what}) is taken by "
                f"{', '.join(holders)}; stop it (another make run?) and run again")
    return ""


class StartError(Exception):
    """One line for the user: what did not start, and why."""


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()),
                type(exc).__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="controlplane._kit.demo", description=__doc__)
    parser.add_argument("--manifests", default="examples", type=Path)
    parser.add_argument("--resolver-hop", choices=("udp", "tls", "mtls"), default="udp",
                        help="how the sidecars reach their tenant resolver (mtls: only a "
                             "tenant's own sidecars can, docs/resolver-isolation.md)")
    args = parser.parse_args(argv)
    manifests: Path = args.manifests.resolve()

    store = Store()
    FileSource(manifests, store, lambda: None).load_all()
    inv = store.inventory()
    forwarders = sorted(name for name, p in inv.policies.items()
                        if p.server_address == f"127.0.0.1:{DEMO_UPSTREAM_PORT}")
    upstream = (f"dnsmasq, the DNS server policy {', '.join(forwarders)} forwards to"
                if forwarders and find_tool("dnsmasq") else "")
    taken = port_taken(DEMO_UPSTREAM_PORT, upstream) if upstream else ""
    if taken:
        print(taken, file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="dns-cp-demo-"))
    started: list[ControlPlane | Sidecar | Dnsmasq] = []
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        code = _run(manifests, inv, workdir, started, stop, forwarders=forwarders,
                    upstream=upstream, hop=args.resolver_hop)
    except StartError as exc:
        print(exc, file=sys.stderr)
        return 1
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"make run: {_first_line(exc)} (logs in {workdir})", file=sys.stderr)
        return 1
    finally:
        for proc in reversed(started):
            proc.stop()
    print(f"stopped {len(started)} processes; logs in {workdir}")
    return code


def _run(manifests: Path, inv: Inventory, workdir: Path,
         started: list[ControlPlane | Sidecar | Dnsmasq], stop: threading.Event, *,
         forwarders: list[str], upstream: str, hop: str = "udp") -> int:
    """Start everything, print how to use it, and wait for Ctrl-C or a process's death.
    ``upstream``: what the dnsmasq on the fixed port is for; "" when none is started."""
    if forwarders:
        if upstream:
            dnsmasq = Dnsmasq(DEMO_UPSTREAM_RECORDS, workdir, port=DEMO_UPSTREAM_PORT)
            started.append(dnsmasq)
            try:
                dnsmasq.start()
            except (RuntimeError, TimeoutError) as exc:
                dnsmasq.stop()  # most likely the port was taken since the check: say by whom
                raise StartError(port_taken(DEMO_UPSTREAM_PORT, upstream)
                                 or f"make run: dnsmasq did not start: {_first_line(exc)} "
                                    f"(logs in {workdir})") from exc
            print(f"tenant DNS server (dnsmasq) on 127.0.0.1:{DEMO_UPSTREAM_PORT}, the one "
                  f"fixed port (policy {', '.join(forwarders)} forwards there; every port "
                  "below was free and chosen now): "
                  + ", ".join(f"{k} -> {v}" for k, v in DEMO_UPSTREAM_RECORDS.items()))
        else:
            print("dnsmasq is not installed: forwarding examples will time out "
                  "(apt-get install dnsmasq)")
    front = find_tool("kresd") is not None
    if not front:
        print("kresd is not installed: the sidecars run without their DNS front (Envoy alone, "
              "UDP, A/AAAA/SRV); apt-get install knot-resolver lua-http")
    hop_args = [] if hop == "udp" else ["--resolver-hop", hop]
    if hop == "mtls":  # the terminator's port, free now like every other port here
        hop_args += ["--resolver-hop-port", str(free_port())]
    cp = ControlPlane(manifests, workdir, extra_args=[
        *hop_args, "--traffic-history", str(workdir / "traffic-history.json")])
    started.append(cp.start())
    print(f"control plane: xds 127.0.0.1:{cp.xds_port}, console {cp.admin_url}/console/, "
          f"API {cp.admin_url}/docs, "
          f"log {cp.process.log_path if cp.process else ''}")
    for name, policy in sorted(inv.policies.items()):
        namespace = next((ns for ns, obj in sorted(inv.namespaces.items())
                          if policy.namespace_selector.matches(dict(obj.labels))), None)
        if namespace is None:
            print(f"tenant {name}: no namespace in {manifests} matches its selector; "
                  "no sidecar started")
            continue
        labels = dict(policy.selector.match_labels) if policy.selector else {"app": "sleep"}
        sidecar = Sidecar(node_id=f"sleep.{namespace}", namespace=namespace, labels=labels,
                          xds_address=cp.xds_address, workdir=workdir, front=front)
        started.append(sidecar)
        sidecar.start()
        print(f"tenant {name}: sidecar in namespace {namespace}, DNS on "
              + (f"127.0.0.1:{sidecar.dns_port} UDP and TCP (the front, kresd; Envoy's "
                 f"DNS listener behind it on 127.0.0.1:{sidecar.envoy_dns_port})" if front
                 else f"127.0.0.1:{sidecar.dns_port} (Envoy)")
              + f", Envoy admin {sidecar.admin_url}")
        table = cp.get(f"/api/v1/views/{name}/dns-table")
        for example in [e["name"] for e in table["names"]][:3]:
            print(f"    dig @127.0.0.1 -p {sidecar.dns_port} {example}")
        if table["names"] and front:
            print(f"    dig +tcp @127.0.0.1 -p {sidecar.dns_port} {table['names'][0]['name']}"
                  "   # over TCP too")
        resolver = table.get("resolver")
        if resolver and table["forwarding"] and resolver["server"] is None:
            if front:
                print(f"    other names and types go to its tenant resolver "
                      f"{table['forwarding'][0]} (unbound), which answers its table and "
                      "NXDOMAIN for every other name (nothing is forwarded):")
                if table["names"]:
                    print(f"    dig +tcp @127.0.0.1 -p {sidecar.dns_port} "
                          f"{table['names'][0]['name']} TXT   # NOERROR, no records")
            else:
                print("    other names: NXDOMAIN from Envoy (nothing is forwarded; the "
                      "table-only resolver serves the DNS front only):")
            print(f"    dig @127.0.0.1 -p {sidecar.dns_port} www.example.com   # NXDOMAIN")
        elif resolver and table["forwarding"]:
            print(f"    other names go to its tenant resolver {table['forwarding'][0]} "
                  f"(unbound), then {resolver['server']} ({resolver['transport']}):")
            print(f"    dig @127.0.0.1 -p {sidecar.dns_port} www.example.com AAAA")
            if front:  # the resolver answers every type; Envoy alone answers A/AAAA/SRV
                print(f"    dig +tcp @127.0.0.1 -p {sidecar.dns_port} www.example.com TXT")
            denied = next((r["names"] for r in resolver["rules"]
                           if r["action"] == "deny" and r["names"] != "*"), None)
            if denied:
                example = denied.replace("*", "x.Y", 1).upper()
                print(f"    dig @127.0.0.1 -p {sidecar.dns_port} {example}   # denied")
    print(f"\nConsole: {cp.admin_url}/console/  (tenants, live query rates, each tenant's "
          f"names, explain, errors)")
    print(f"Edit files under {manifests} and the answers follow. "
          f"Errors: curl {cp.admin_url}/api/v1/errors\nCtrl-C stops everything.")
    sys.stdout.flush()
    while not stop.wait(0.5):
        dead = [p for p in started if p.process is not None and not p.process.alive()]
        if dead:
            print(f"{dead[0].process.name if dead[0].process else '?'} exited; stopping",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
