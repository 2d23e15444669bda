"""Propagation and memory with many ADS streams, and a reconnect storm.

    .venv/bin/python benchmarks/streams.py [--streams 1000] [--processes 4] [--debounce 0.05]
        [--services 10000] [--heavy | --tenants 10] [--code DIR] [--clients py|cc]

Starts the control plane on examples/ (file source), connects --streams
simulated sidecars from --processes client processes (benchmarks/ads_client.py,
bounded in time), then: writes one Service into acme and measures, for every
stream whose view changed, the time from the write to its ACK of the new
listener version (p50/p99/max; the debounce window is included and stated);
control-plane RSS; LDS bytes pushed for the change; then kills every client
at once and reconnects them all (a storm), sampling RSS throughout. Server CPU
(the control plane) and client CPU (the client processes) are printed apart,
with the load average. ``--heavy``: the third tenant sees every bulk Service
(a large listener for a third of the streams); ``--code DIR``: the control
plane from another checkout (before/after). ``--tenants T``: the --services
Services spread over T namespaces, and T tenants that each see one of them (at
100,000 Services and 10 tenants, ~10,000 names and a 1.6 MB listener each); the
streams are spread over the T tenants and the change lands in the first.
Each simulated sidecar has its own TCP connection and reconnects after an
Envoy-like back-off when the server ends its stream; the endings are counted
by gRPC status.

``--fronted``: every simulated sidecar runs the DNS front, as every injected pod does
(node metadata as the webhook writes it; RDS for the front's set besides CDS and LDS:
``ads_client.py``). A stream counts as served once it has its listeners and its set's
route. With ``--tenants``, namespace bulk<t> belongs to tenant w<t> (labelled like w<t>),
so a fronted Envoy holds that tenant's own namespace, cut at ``--front-table-limit``
(2,000 entries; the rest is answered by the tenant resolver: docs/wide-tenants.md), the
largest listener a fronted sidecar gets. The change (a Service that sorts first) enters
that part: the listener carries it at once; the set's route after the front's settle
time (2.5 s, by design: a pair reaches Envoy's table before the set). Both are timed,
each by the first response whose resources carry the new name.

The change is also given from the server's side (``/api/v1/rebuilds``): its phases, and
from the write to the first and the last response of the changed views handed to gRPC.

The storm: every client process is killed at once and all streams reconnect at once.
The reconnecting sidecars are running already, as Envoys that lost their control plane
are: the new client processes start (Python, gRPC, the nodes) before the kill and connect
when told, so the storm's time and client CPU do not include four interpreters starting
(``--storm-cold``: they start when the storm does, as before RESULTS.md section 29).
``--profile DIR``: py-spy (not part of the project; ``$PY_SPY``) records the server and a
client process during the change and the storm.

The tenant resolvers (unbound, started by the control plane for every tenant) are
reported apart: their count, summed RSS and private memory (Private_Clean +
Private_Dirty of ``/proc/PID/smaps_rollup``).

``--clients cc``: the simulated sidecars are the C++ client of ``benchmarks/ads_client_cc/``
(same protocol behaviour and output as ``ads_client.py``, a C++ gRPC client like Envoy's;
build it with ``make bench-client``), so the clients' CPU is what a C++ client costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ads_client import write_nodes  # noqa: E402
from benchmarks.checkout import start_control_plane  # noqa: E402
from benchmarks.procstat import CpuMeter, cpu_seconds, load_average  # noqa: E402
from controlplane._kit.localrun import (  # noqa: E402
    ControlPlane,
    http_json,
    http_text,
    rss_mb,
    wait_for,
)
from controlplane.hub.front_sets import DEFAULT_SETTLE_SECONDS as SETTLE_SECONDS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CC_CLIENT = ROOT / "benchmarks" / "ads_client_cc" / "build" / "ads_client"


def client_program(kind: str, work: Path, namespaces: str, *, fronted: bool) -> list[str]:
    """The command of a client process, before its arguments: ``ads_client.py``, or
    (``cc``) the C++ client with the nodes ``ads_client.py`` makes, written once."""
    if kind == "py":
        return [sys.executable, str(ROOT / "benchmarks" / "ads_client.py")]
    if not os.access(CC_CLIENT, os.X_OK):
        raise SystemExit(f"--clients cc: {CC_CLIENT} is not built; build it with "
                         "`make bench-client` (benchmarks/ads_client_cc/build.sh)")
    nodes = work / "nodes.tsv"
    write_nodes(nodes, namespaces.split(","), fronted=fronted)
    return [str(CC_CLIENT), "--nodes", str(nodes)]


class Clients:
    """The client processes, and what their streams reported, indexed as it arrives."""

    def __init__(self, address: str, streams: int, processes: int, seconds: float,
                 namespaces: str = "", *, program: list[str], fronted: bool = False,
                 watch: str = "", hold: bool = False) -> None:
        self.endings: dict[str, int] = {}
        self.ready = 0  # processes started and waiting for ``go`` (``hold``)
        self.lock = threading.Lock()
        self.kinds = ("lds", "rds") if fronted else ("lds",)
        # per kind: stream -> (latest version, its time); stream -> first time a response
        # carried the watched name; the largest response (bytes of its resources)
        self._latest: dict[str, dict[str, tuple[str, float]]] = {k: {} for k in self.kinds}
        self._carried: dict[str, dict[str, float]] = {k: {} for k in self.kinds}
        self._largest = dict.fromkeys(self.kinds, 0)
        self._first_set = 0.0  # when the first set's route arrived
        per = streams // processes
        more = ["--namespaces", namespaces] if namespaces else []
        more += ["--fronted"] if fronted else []
        more += ["--watch", watch] if watch else []
        more += ["--hold"] if hold else []
        self.procs = [subprocess.Popen(
            [*program, "--address", address,
             "--first", str(i * per), "--count", str(per), "--seconds", str(seconds), *more],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in range(processes)]
        for p in self.procs:
            threading.Thread(target=self._read, args=(p,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            with self.lock:
                if "ready" in event:
                    self.ready += 1
                    continue
                if "e" in event:
                    self.endings[str(event["e"])] = self.endings.get(str(event["e"]), 0) + 1
                    continue
                kind, cid, t = event.get("k", "lds"), str(event["c"]), float(event["t"])
                self._latest[kind][cid] = (str(event["v"]), t)
                if event.get("w"):
                    self._carried[kind].setdefault(cid, t)
                self._largest[kind] = max(self._largest[kind], int(event.get("b", 0)))
                if kind == "rds" and not self._first_set:
                    self._first_set = t

    def latest(self, kind: str = "lds") -> dict[str, tuple[str, float]]:
        """Each stream's latest response of ``kind`` (version, time)."""
        with self.lock:
            return dict(self._latest.get(kind, {}))

    def served(self) -> int:
        """Streams that have a response of every kind they subscribe to (a fronted
        sidecar's listeners warm until their route arrives)."""
        with self.lock:
            return min(len(self._latest[k]) for k in self.kinds)

    def sets_settled(self, groups: int) -> bool:
        """Whether the sets are whole: the first fronted sidecars of a tenant get a set
        whose pairs are listed only the front's settle time later (``hub/front_sets.py``:
        a tenant first seen after loading waits like any addition; the sidecars of the
        storm get them at once). So: the settle time has passed since the first set, and
        every stream of a tenant (``c<i>``, tenant ``i % groups``) has the same set."""
        with self.lock:
            if not self._first_set or time.time() < self._first_set + SETTLE_SECONDS + 0.5:
                return False
            versions: dict[int, set[str]] = {}
            for cid, (version, _) in self._latest["rds"].items():
                versions.setdefault(int(cid[1:]) % groups, set()).add(version)
            return all(len(v) == 1 for v in versions.values())

    def carried(self, kind: str, since: float) -> dict[str, float]:
        """Per stream, when its first response of ``kind`` carried the watched name (those
        at or after ``since``)."""
        with self.lock:
            return {c: t for c, t in self._carried[kind].items() if t >= since}

    def count_carried(self, kind: str) -> int:
        with self.lock:
            return len(self._carried[kind])

    def largest(self, kind: str) -> int:
        """The largest response of ``kind`` seen (bytes of its resources)."""
        with self.lock:
            return self._largest[kind]

    def go(self) -> None:
        """Held processes (``hold``): connect every stream now."""
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()

    def kill(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


class RssPeak:
    """The highest RSS of a process, sampled every 50 ms on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mb(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


class Spy:
    """``--profile DIR``: py-spy (``$PY_SPY``, default /tmp/spyenv/bin/py-spy; not part of
    the project) records ``pid`` into a speedscope file until ``stop``."""

    def __init__(self, pid: int, out: Path) -> None:
        self.proc = subprocess.Popen(
            [os.environ.get("PY_SPY", "/tmp/spyenv/bin/py-spy"), "record", "--pid", str(pid),
             "--nonblocking", "--rate", "100", "--format", "speedscope", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # attached before what it is to see begins

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)


def spies(profile: str, name: str, pids: dict[str, int]) -> list[Spy]:
    """A ``Spy`` per process named in ``pids`` (``<name>-<role>.json``), when profiling."""
    if not profile:
        return []
    out = Path(profile)
    out.mkdir(parents=True, exist_ok=True)
    return [Spy(pid, out / f"{name}-{role}.json") for role, pid in pids.items()]


def server_trace(cp: ControlPlane, since: float) -> str:
    """The server's own account of the change (``/api/v1/rebuilds``), first rebuild at or
    after ``since``: its phases, and from the write to the first and (where the server
    reports it) the last response of the changed views."""
    try:
        traces = [t for t in http_json(f"{cp.admin_url}/api/v1/rebuilds", timeout=30)["rebuilds"]
                  if (t.get("started_at") or 0) >= since and t.get("snapshots_changed")]
    except OSError as exc:
        return f"(no trace: {exc})"
    if not traces:
        return "(no trace)"
    t = traces[-1]  # newest first: the last is the change's own rebuild
    ms = ", ".join(f"{k} {v:.0f}" for k, v in t["milliseconds"].items())
    out = f"{ms} (ms)"
    for key, what in (("first_sent_at", "first response"), ("last_sent_at", "last response")):
        if t.get(key):
            out += f"; write -> {what} {(t[key] - since) * 1000:.0f} ms"
    if t.get("sent"):
        out += f" ({t['sent']} responses of the changed views)"
    return out


def listen_overflows() -> int:
    """The kernel's count of connections its listen queues had no room for (TcpExt
    ListenOverflows, this network namespace): each one is a SYN or handshake the client
    must send again, a second later or more (TCP's retransmission timeout)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:"):
            fields = dict(zip(head.split()[1:], values.split()[1:], strict=False))
            return int(fields.get("ListenOverflows", 0))
    return 0


def resolvers(workdir: Path) -> tuple[int, float, float]:
    """The tenant resolvers this run's control plane started (unbound processes whose
    command line names ``workdir``): (how many, summed RSS MB, summed private MB)."""
    count, rss, private = 0, 0.0, 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if not argv[0].endswith(b"unbound") or str(workdir).encode() not in b" ".join(argv):
                continue
            fields = dict(line.split(":", 1) for line in
                          (proc / "smaps_rollup").read_text().splitlines()[1:])
        except OSError:
            continue
        kib = {k: int(v.split()[0]) for k, v in fields.items()}
        count += 1
        rss += kib["Rss"] / 1024
        private += (kib["Private_Clean"] + kib["Private_Dirty"]) / 1024
    return count, rss, private


def resolver_line(workdir: Path) -> str:
    count, rss, private = resolvers(workdir)
    return f"{count} unbound, RSS {rss:.0f} MB, private {private:.0f} MB"


def metric(cp: ControlPlane, name: str, contains: str = "") -> float:
    return sum(float(line.rsplit(" ", 1)[1])
               for line in http_text(f"{cp.admin_url}/metrics").splitlines()
               if line.startswith(name) and contains in line)


def percentiles(ms: list[float]) -> str:
    return (f"min {ms[0]:.0f} ms, p50 {statistics.median(ms):.0f} ms, p99 {ms[int(len(ms) * 0.99) - 1]:.0f} ms, "
            f"max {ms[-1]:.0f} ms")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--debounce", type=float, default=0.05)
    parser.add_argument("--services", type=int, default=0,
                        help="extra Services in namespace 'bulk' (every tenant's policy "
                        "decides about them)")
    parser.add_argument("--heavy", action="store_true",
                        help="a third of the streams (tenant 'wide') see every bulk Service: "
                        "a large listener pushed to each of them")
    parser.add_argument("--tenants", type=int, default=0,
                        help="spread the --services over this many namespaces, one tenant "
                        "seeing each (the streams spread over these tenants)")
    parser.add_argument("--code", default="", help="run the control plane from this checkout")
    parser.add_argument("--fronted", action="store_true",
                        help="the simulated sidecars run the DNS front, as injected pods do "
                        "(see the module doc)")
    parser.add_argument("--storm-cold", action="store_true",
                        help="the storm's client processes start when it does (Python "
                        "start-up inside the storm's time, as before section 29)")
    parser.add_argument("--clients", choices=("py", "cc"), default="py",
                        help="the simulated sidecars: ads_client.py, or the C++ client of "
                        "benchmarks/ads_client_cc (make bench-client)")
    parser.add_argument("--profile", default="",
                        help="py-spy the server and one client process during the change "
                        "and the storm, speedscope files into this directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="streams-"))
    manifests = work / "manifests"
    shutil.copytree(ROOT / "examples", manifests)
    if args.services:
        def bulk(i: int) -> str:
            return f"bulk{i % args.tenants}" if args.tenants else "bulk"

        (manifests / "bulk.yaml").write_text("---\n".join(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: {bulk(i)}}}\n"
            f"spec: {{clusterIP: 10.{200 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}}}\n"
            for i in range(args.services)))
    namespaces = "acme,foo,globex"
    if args.heavy:
        namespaces = "acme,foo,wide"
        (manifests / "wide.yaml").write_text(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: wide, labels: {tenant: wide}}\n"
            "---\napiVersion: networking.example.com/v1alpha1\nkind: DnsPolicy\n"
            "metadata: {name: wide}\nspec:\n  namespaceSelector: {matchLabels: {tenant: wide}}\n"
            '  policy: {whitelist: ["*.bulk.svc.cluster.local"], defaultAction: DENY}\n')
    change_ns, stride = "acme", 3
    if args.tenants:
        namespaces = ",".join(f"w{t}" for t in range(args.tenants))
        change_ns, stride = "bulk0", args.tenants
        (manifests / "wide.yaml").write_text("---\n".join(
            f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: w{t}, labels: {{tenant: w{t}}}}}\n"
            "---\napiVersion: networking.example.com/v1alpha1\nkind: DnsPolicy\n"
            f"metadata: {{name: w{t}}}\nspec:\n  namespaceSelector: {{matchLabels: {{tenant: w{t}}}}}\n"
            f'  policy: {{whitelist: ["*.bulk{t}.svc.cluster.local"], defaultAction: DENY}}\n'
            for t in range(args.tenants)))
        if args.fronted:  # bulk<t> is w<t>'s own namespace: its fronted Envoys hold it
            (manifests / "own.yaml").write_text("---\n".join(
                f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: bulk{t}, labels: "
                f"{{tenant: w{t}}}}}\n" for t in range(args.tenants)))
    watch = f"bench.{change_ns}.svc.cluster.local"
    fronted = {"fronted": args.fronted, "watch": watch,
               "program": client_program(args.clients, work, namespaces, fronted=args.fronted)}
    print(f"streams benchmark: 2 cores shared by every process; load average at start "
          f"{load_average()}; sidecars {'fronted' if args.fronted else 'without a front'}, "
          f"clients {'C++ (ads_client_cc)' if args.clients == 'cc' else 'Python (ads_client.py)'}")
    cp = start_control_plane(manifests, work, code=args.code, extra_args=[
        "--debounce", str(args.debounce), "--log-level", "warning"])
    assert cp.process is not None
    pid = cp.process.pid
    idle = rss_mb(pid)
    idle_resolvers = resolver_line(work)
    clients = Clients(cp.xds_address, args.streams, args.processes, seconds=300,
                      namespaces=namespaces, **fronted)
    meter = CpuMeter(pid, [p.pid for p in clients.procs]).start()
    connect_peak = RssPeak(pid)
    try:
        started = time.time()
        overflows = listen_overflows()
        try:
            wait_for(lambda: clients.served() >= args.streams, timeout=180, interval=0.2,
                     what=f"{args.streams} streams to get their first listener")
        except TimeoutError:
            print(f"NOT SERVED: {clients.served()} of {args.streams} streams had a listener "
                  f"after 180 s; streams the server ended meanwhile, by status: "
                  f"{clients.endings or 'none'}; control-plane RSS {rss_mb(pid):.0f} MB "
                  f"(peak {connect_peak.stop():.0f} MB); load average {load_average()}")
            raise
        connect = time.time() - started
        connect_overflows = listen_overflows() - overflows
        if args.fronted:
            wait_for(lambda: clients.sets_settled(len(namespaces.split(","))), timeout=60,
                     interval=0.2, what="every stream's set to list its pairs")
        whole = time.time() - started
        connected_rss = rss_mb(pid)
        connect_peak_mb = connect_peak.stop()
        connect_cpu = meter.stop()
        meter = CpuMeter(pid, [p.pid for p in clients.procs]).start()
        before = clients.latest()
        before_rds = clients.latest("rds")
        pushed_before = metric(cp, "dnscp_pushes_total", 'type="lds"')
        pushed_rds_before = metric(cp, "dnscp_pushes_total", 'type="rds"')
        serial_before = metric(cp, "dnscp_snapshot_serializations_total")
        spying = spies(args.profile, "change", {"server": pid,
                                                 "client": clients.procs[0].pid})
        t0 = time.time()
        (manifests / "bench-change.yaml").write_text(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: bench, namespace: {change_ns}}}\n"
            "spec: {clusterIP: 10.123.0.1}\n")
        # The acme streams (i % 3 == 0) see the new Service; foo and globex do not (globex
        # blacklists *.svc.cluster.local: its tenant resolver denies those, not its table).
        # --tenants: the streams of tenant w0 (i % T == 0) see bulk0.
        affected = [c for c in before if int(c[1:]) % stride == 0]

        def all_updated() -> bool:
            return all(clients.count_carried(kind) >= len(affected) for kind in clients.kinds)

        wait_for(all_updated, timeout=120, interval=0.05, what="every affected stream")
        for spy in spying:
            spy.stop()
        now = clients.latest()
        arrived = {kind: clients.carried(kind, t0) for kind in clients.kinds}
        lat = sorted((arrived["lds"][c] - t0) * 1000 for c in affected)
        unaffected_changed = sum(1 for c in before if c not in affected
                                 and now[c][0] != before[c][0])
        now_rds = clients.latest("rds")
        unaffected_changed += sum(1 for c in before_rds if c not in affected
                                  and now_rds[c][0] != before_rds[c][0])
        pushes = metric(cp, "dnscp_pushes_total", 'type="lds"') - pushed_before
        pushes_rds = metric(cp, "dnscp_pushes_total", 'type="rds"') - pushed_rds_before
        serials = metric(cp, "dnscp_snapshot_serializations_total") - serial_before
        change_tenant = "w0" if args.tenants else "acme"
        bytes_acme = metric(cp, "dnscp_snapshot_bytes", f"{change_tenant}@")
        bytes_globex = metric(cp, "dnscp_snapshot_bytes", f"{namespaces.rsplit(',', 1)[1]}@")
        print(f"streams: {args.streams} from {args.processes} processes, "
              f"{args.services} extra Services, connected and served in {connect:.1f}s"
              + (f" (every set listing its pairs after {whole:.1f}s)" if args.fronted else "")
              + "; "
              f"streams the server ended meanwhile, by status: {clients.endings or 'none'}; "
              f"listen queue overflows while connecting: {connect_overflows}")
        print(f"largest responses: LDS {clients.largest('lds')} bytes"
              + (f", RDS {clients.largest('rds')} bytes" if args.fronted else ""))
        print(f"change -> ACK for {len(affected)} affected streams (debounce "
              f"{args.debounce * 1000:.0f} ms included), the listener carrying the name: "
              f"{percentiles(lat)}; unaffected streams that got a push: {unaffected_changed}")
        print(f"  the server's account (its first rebuild after the write): "
              f"{server_trace(cp, t0)}")
        if args.fronted:
            rds = sorted((arrived["rds"][c] - t0) * 1000 for c in affected)
            print(f"  the set's route carrying it (after the front's settle time): "
                  f"{percentiles(rds)}; RDS responses pushed: {pushes_rds:.0f}")
        print(f"LDS responses pushed for the change: {pushes:.0f}; snapshots serialised: "
              f"{serials:.0f}; snapshot bytes: {change_tenant} {bytes_acme:.0f}, {namespaces.rsplit(',', 1)[1]} "
              f"{bytes_globex:.0f}; bytes pushed in all: {pushes * bytes_acme:.0f}")
        change_cpu = meter.stop()
        print(f"control-plane RSS: idle {idle:.0f} MB, with {args.streams} streams "
              f"{connected_rss:.0f} MB (peak while they connected {connect_peak_mb:.0f} MB)")
        print(f"tenant resolvers (apart from the control plane): idle {idle_resolvers}; "
              f"with the streams {resolver_line(work)}")
        print(f"cpu: connecting {connect_cpu[0]:.1f} s server, {connect_cpu[1]:.1f} s clients; "
              f"the change {change_cpu[0]:.2f} s server, {change_cpu[1]:.2f} s clients")
        # Reconnect storm: every client dies at once, then all reconnect at once. The
        # sidecars that reconnect are running already, as Envoys that lost their control
        # plane are: their processes start (Python, gRPC, the nodes) before the kill and
        # connect on ``go``, so the storm times the control plane serving 10,000
        # reconnections, not 4 Python interpreters starting (``--storm-cold``: as before).
        storm_clients = None
        if not args.storm_cold:
            storm_clients = Clients(cp.xds_address, args.streams, args.processes, seconds=300,
                                    namespaces=namespaces, hold=True, **fronted)
            wait_for(lambda: storm_clients.ready == args.processes, timeout=120,
                     what="the storm's client processes to start")
        clients.kill()
        wait_for(lambda: metric(cp, "dnscp_connected_proxies") == 0, timeout=60,
                 what="all streams gone")
        after_drop = rss_mb(pid)
        peak = [after_drop]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak.append(rss_mb(pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        spying = spies(args.profile, "storm", {"server": pid})
        overflows = listen_overflows()
        t1 = time.time()
        server_cpu = cpu_seconds(pid)
        if storm_clients is not None:
            clients = storm_clients
            meter = CpuMeter(pid, [p.pid for p in clients.procs]).start()
            clients.go()
        else:
            clients = Clients(cp.xds_address, args.streams, args.processes, seconds=300,
                              namespaces=namespaces, **fronted)
            meter = CpuMeter(pid, [p.pid for p in clients.procs]).start()
        spying += spies(args.profile, "storm", {"client": clients.procs[0].pid})
        wait_for(lambda: clients.served() >= args.streams, timeout=180, interval=0.2,
                 what="the storm to reconnect")
        storm = time.time() - t1
        for spy in spying:
            spy.stop()
        storm_cpu = meter.stop()
        sampling.set()
        sampler.join()
        print(f"streams the server ended during the storm, by status: {clients.endings or 'none'}"
              f"; connections the listen queue had no room for (ListenOverflows, the whole "
              f"machine's): {listen_overflows() - overflows}")
        print(f"reconnect storm of {args.streams}: all served again in {storm:.1f}s; RSS after "
              f"the drop {after_drop:.0f} MB, peak during the storm {max(peak):.0f} MB, after "
              f"{rss_mb(pid):.0f} MB")
        print(f"tenant resolvers after the storm: {resolver_line(work)}")
        started_how = ("start then" if args.storm_cold else
                       "were started before the kill; their start-up is not counted")
        print(f"cpu during the storm: server {cpu_seconds(pid) - server_cpu:.1f} s, clients "
              f"{storm_cpu[1]:.1f} s (the {args.processes} client processes {started_how}); "
              f"load average at end {load_average()}")
    finally:
        clients.kill()
        cp.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
