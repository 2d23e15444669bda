"""Policy server (``spec.policy.server``): what asking an ext_authz server per name costs.

    .venv/bin/python benchmarks/policy_server.py [--seconds 2.5] [--queries 400] [--services 10000]

Three parts, each with real processes on loopback; prints figures only, not a test.

1. Decisions per second: ``PolicyDecider.decide`` on distinct names against (a) a
   trivial allow-all ext_authz server (a grpc.aio Authorization servicer, this script
   with ``--role allow-server``, in its own process) and (b) ``e2e/harness/policy_server.py``
   with ``examples/policy-server/dns.rego`` (Rego evaluated per Check). Direct (N tasks
   calling ``decide`` in this process, the policy's 200 ms timeout) and through the unix
   socket ``serve_gate`` the tenant resolvers ask (N connections asking one question at a
   time, as one unbound thread does, from a client process). CPU of the policy server,
   of the deciding process (the control plane's side) and of the gate's clients.
2. Added latency of a forwarded query: the real chain (``controlplane._kit.localrun.ControlPlane``
   with its tenant resolvers, real Envoy ``--concurrency 1`` per tenant, dnsmasq answering
   every ``*.bench.example``). Two tenants in one run with the same spec but for
   ``policy.server`` (defaultAction DENY, whitelist ``*.bench.example``): ``plain`` and
   ``gated`` (policy.server = the allow-all server through a Service, decisionTtlSeconds
   3600 so that no refresh of its table names runs meanwhile). DENY because it is what a
   central allow-list is for, and because its failure mode is closed: a decision that
   does not come in time shows as NXDOMAIN in the rcodes instead of passing unseen.
   Paced queries, one at a time, per-query timing: new names (a miss everywhere),
   repeats (unbound's cache: the module is not asked), AAAA of names whose A was decided
   (a hit in the resolver module's cache); then straight to each tenant resolver (Envoy
   does not forward the names of its table, and answers TXT with NOTIMP): new names, and
   ServiceEntry hosts the control plane decided ahead as table names (a miss in the
   module, a hit in the control plane's cache, as after a resolver restart or for
   Envoy's own STRICT_DNS lookups). Then dnsperf at full speed over distinct names, with
   a paced client asking cached names through the same Envoy meanwhile.
3. Check calls for one tenant with 10,000 visible names (10,000 Services in its 10
   namespaces, DENY, spec.server set, the allow-all server, decisionTtlSeconds 3600 so
   that no refresh mixes in): at start (and the time until all decisions are in and the
   table is whole; meanwhile a probe asks the gate for a new forwarded name every 50 ms,
   counted apart at the server), then per change: one Service added, one Service's IP
   changed, the whitelist changed, 100 Services added in a namespace the tenant does not
   select, decisionTtlSeconds changed (3600 -> 10), and what the refresh of 10 s
   decisions costs over 10 s. Last, a small tenant with policy.server but no spec.server:
   do the decisions reach its table?

Every process is stopped by its pid; the temporary directory is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dns.exception  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402
import dns.rcode  # noqa: E402
import grpc  # noqa: E402
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc  # noqa: E402

from benchmarks.tenant_resolver import (  # noqa: E402
    ANSWER,
    ZONE,
    cpu_seconds,
    dnsperf,
    start_dnsmasq,
)
from controlplane._kit.localrun import (  # noqa: E402
    ControlPlane,
    Envoy,
    Process,
    free_port,
    http_text,
    wait_for,
)
from controlplane.core.model import FailureMode  # noqa: E402
from controlplane.policy.decisions import Question  # noqa: E402
from controlplane.policyserver.client import PolicyDecider, Target, serve_gate  # noqa: E402
from e2e.harness.dnsquery import query  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REGO = ROOT / "examples" / "policy-server" / "dns.rego"
POLICY_API = "networking.example.com/v1alpha1"


# -- roles run in their own process ----------------------------------------------------

class AllowAll(external_auth_pb2_grpc.AuthorizationServicer):
    """Allows every name; counts Check calls and distinct names, and apart from them the
    names of the gate probe (``probe*``)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.total = 0
        self.probes = 0
        self.names: set[str] = set()

    async def Check(self, request: external_auth_pb2.CheckRequest,  # noqa: N802 - gRPC name
                    context: grpc.aio.ServicerContext) -> external_auth_pb2.CheckResponse:
        name = request.attributes.context_extensions.get("dns.name", "")
        if name.startswith("probe"):
            self.probes += 1
        else:
            self.total += 1
            self.names.add(name)
        resp = external_auth_pb2.CheckResponse()
        resp.status.code = 0
        if self.ttl:
            resp.dynamic_metadata.update({"dns.ttl_seconds": self.ttl})
        return resp


async def allow_server(port: int, count_file: Path, ttl: float) -> None:
    """The allow-all server; writes ``<checks> <distinct names> <probe checks>`` to
    count_file when it changes (every 20 ms at most)."""
    servicer = AllowAll(ttl)
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("serving", flush=True)
    last = None
    tmp = count_file.with_suffix(".tmp")
    while True:
        now = (servicer.total, len(servicer.names), servicer.probes)
        if now != last:
            tmp.write_text(f"{now[0]} {now[1]} {now[2]}\n")
            os.replace(tmp, count_file)
            last = now
        await asyncio.sleep(0.02)


async def gate_clients(sock: str, tenant: str, conns: int, seconds: float, prefix: str,
                       cycle: int) -> None:
    """``conns`` connections to the gate, each one question at a time (as one unbound
    thread asks); distinct names, or ``cycle`` names over and over. Prints JSON."""
    latencies: list[float] = []
    verdicts: Counter[str] = Counter()
    numbers = itertools.count()
    deadline = time.monotonic() + seconds

    async def one() -> None:
        reader, writer = await asyncio.open_unix_connection(sock)
        while time.monotonic() < deadline:
            i = next(numbers)
            if cycle:
                i %= cycle
            line = f"{tenant} {gate_name(prefix, i)} A\n".encode()
            started = time.perf_counter()
            writer.write(line)
            answer = await reader.readline()
            latencies.append(time.perf_counter() - started)
            verdicts[answer.split()[0].decode() if answer else "closed"] += 1
        writer.close()

    cpu0 = time.process_time()
    await asyncio.gather(*(one() for _ in range(conns)))
    print(json.dumps({"answers": len(latencies), "verdicts": dict(verdicts),
                      "latencies": sorted(latencies), "cpu": time.process_time() - cpu0}))


def gate_name(prefix: str, i: int) -> str:
    """Half the names the Rego policy allows (*.partner.example), half it denies."""
    return f"{prefix}{i}.partner.example" if i % 2 == 0 else f"{prefix}{i}.{ZONE}"


def role_main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", choices=["allow-server", "gate-clients"], required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count-file", type=Path)
    parser.add_argument("--ttl", type=float, default=0.0)
    parser.add_argument("--socket", default="")
    parser.add_argument("--tenant", default="bench")
    parser.add_argument("--conns", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--prefix", default="g")
    parser.add_argument("--cycle", type=int, default=0)
    args = parser.parse_args()
    if args.role == "allow-server":
        asyncio.run(allow_server(args.port, args.count_file, args.ttl))
    else:
        asyncio.run(gate_clients(args.socket, args.tenant, args.conns, args.seconds,
                                 args.prefix, args.cycle))
    return 0


# -- helpers -----------------------------------------------------------------------------

class AllowServer:
    """The allow-all server in its own process, and its Check counter."""

    def __init__(self, work: Path, *, ttl: float = 0.0) -> None:
        self.port = free_port()
        self.count_file = work / f"allow-{self.port}.count"
        self.process = Process("allow-all", [
            sys.executable, str(Path(__file__).resolve()), "--role", "allow-server",
            "--port", str(self.port), "--count-file", str(self.count_file), "--ttl", str(ttl)],
            work / f"allow-{self.port}.log")

    def start(self) -> AllowServer:
        self.process.start()
        wait_for(lambda: "serving" in self.process.log(), timeout=20, what="allow-all server")
        return self

    def counts(self) -> tuple[int, int]:
        """(Check calls, distinct names) so far, the gate probe's apart."""
        try:
            total, distinct, _ = self.count_file.read_text().split()
            return int(total), int(distinct)
        except (OSError, ValueError):
            return 0, 0

    def probes(self) -> int:
        """Check calls for the gate probe's names."""
        try:
            return int(self.count_file.read_text().split()[2])
        except (OSError, ValueError, IndexError):
            return 0

    def settled(self, *, quiet: float = 1.5, timeout: float = 30.0) -> tuple[int, int]:
        """The counts once no Check came for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        last, since = self.counts(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = self.counts()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
        return last


class RegoServer:
    """e2e/harness/policy_server.py with the example Rego; it logs one line per Check."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.log = work / "rego-checks.log"
        self.process = Process("rego", [
            sys.executable, "-m", "e2e.harness.policy_server", "--port", str(self.port), "--policy",
            str(REGO), "--log", str(self.log)], work / "rego.out")

    def start(self) -> RegoServer:
        self.process.start()
        wait_for(lambda: "serving" in self.process.log(), timeout=30, what="Rego server")
        return self


class LogCounter(logging.Handler):
    """Counts the decider's outage log lines (it logs one when an outage starts, one when
    it ends)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        self.messages["outage" if "cannot decide" in text else
                      "recovered" if "answers again" in text else "other"] += 1


def outage_lines(log: str) -> str:
    """The decider's outage warnings in a control-plane log (JSON lines): counts, times."""
    lines = [line for line in log.splitlines()
             if "cannot decide" in line or "answers again after" in line]
    shown = []
    for line in lines[:4]:
        with contextlib.suppress(ValueError, KeyError):
            entry = json.loads(line)
            shown.append(f"{entry['ts'][11:23]} {entry['msg'][:90]}")
    more = f" (+{len(lines) - 4} more)" if len(lines) > 4 else ""
    return (f"{sum('cannot decide' in x for x in lines)} 'cannot decide', "
            f"{sum('answers again after' in x for x in lines)} 'answers again'"
            + (": " + "; ".join(shown) + more if shown else ""))


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(p * len(values)))]


def own_cpu() -> float:
    return cpu_seconds(os.getpid())


def metric(text: str, name: str, **labels: str) -> float:
    """One sample from the Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"([^{\s]+)(?:\{([^}]*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return 0.0


# -- part 1: decisions per second --------------------------------------------------------

async def part1(work: Path, seconds: float, report: list[str]) -> None:
    allow = AllowServer(work).start()
    rego = RegoServer(work).start()
    handler = LogCounter()
    plog = logging.getLogger("controlplane.policy_server")
    plog.addHandler(handler)
    plog.propagate = False
    rows = []
    try:
        for label, port, pid in (("allow-all", allow.port, allow.process.pid),
                                 ("rego", rego.port, rego.process.pid)):
            tenant = f"t-{label}"
            decider = PolicyDecider()
            decider.targets[tenant] = Target(
                address=f"127.0.0.1:{port}", tls_name="", ca_bundle="", timeout=0.2,
                default_ttl=60.0, mode=FailureMode.CLOSED)
            # connect the channel and warm both sides up
            await asyncio.gather(*(decider.decide(Question(tenant, gate_name("warm", i), "A"))
                                   for i in range(20)))
            for conc in (1, 8, 32, 128):
                rows.append(await direct_run(decider, tenant, label, conc, seconds, pid,
                                             handler))
            sock = work / f"gate-{label}.sock"
            gate = await serve_gate(decider, sock)
            for conns, cycle in ((1, 0), (8, 0), (8, 1000)):
                if cycle:  # the names the clients will cycle over, decided first, 32 at
                    # a time (a burst of 1,000 would queue past the timeout)
                    for chunk in range(0, cycle, 32):
                        await asyncio.gather(*(
                            decider.decide(Question(tenant, gate_name("c", i), "A"))
                            for i in range(chunk, min(cycle, chunk + 32))))
                    await drain(decider)
                rows.append(await gate_run(decider, sock, tenant, label, conns, cycle, seconds,
                                           pid, handler))
            gate.close()
            await gate.wait_closed()
            await decider.close()
    finally:
        plog.removeHandler(handler)
        allow.process.stop()
        rego.process.stop()
    report.append("")
    report.append("## 1. Decisions per second (PolicyDecider.decide, distinct names; timeout "
                  "200 ms, max_in_flight 32, failure mode closed)")
    report.append(f"{'server':<10}{'path':<8}{'conc':>5}{'run s':>6}{'answers':>8}"
                  f"{'in time':>8}{'failure':>8}{'checks/s':>9}{'decided/s':>10}{'p50 ms':>8}"
                  f"{'p99 ms':>8}{'server%':>8}{'cp%':>6}{'client%':>8}{'cp us/chk':>10}"
                  f"{'outage logs':>12}")
    for r in rows:
        report.append(
            f"{r['server']:<10}{r['path']:<8}{r['conc']:>5}{r['wall']:>6.1f}{r['answers']:>8}"
            f"{r['in_time']:>8}{r['failure']:>8}{r['checks_s']:>9.0f}{r['decided_s']:>10.0f}"
            f"{r['p50'] * 1000:>8.2f}{r['p99'] * 1000:>8.2f}{r['server_pct']:>8.0f}"
            f"{r['cp_pct']:>6.0f}{r['client_pct']:>8}{r['cp_us']:>10.0f}{r['logs']:>12}")
    report.append("(answers: decide() returns; in time: the server's own decision within "
                  "200 ms; failure: the failure mode answered (late or queued); checks/s: "
                  "Check calls completed in the window; decided/s: answers in time per second; "
                  "hit: 8 connections cycling over 1,000 names already decided (the control "
                  "plane's cache); cpu in % of one core: server = the policy server process, cp "
                  "= this process (decider + gate + direct callers), client = the gate's "
                  "client process; cp us/chk: cp CPU per Check (per answer for hit); outage "
                  "logs: the decider's 'cannot decide' + 'answers again' warnings)")


async def drain(decider: PolicyDecider, limit: float = 30.0) -> None:
    """Wait for the Check calls still in flight (late ones continue after decide gave up)."""
    deadline = time.monotonic() + limit
    while decider._in_flight and time.monotonic() < deadline:  # noqa: SLF001 - measuring
        await asyncio.sleep(0.05)


async def direct_run(decider: PolicyDecider, tenant: str, label: str, conc: int,
                     seconds: float, server_pid: int, handler: LogCounter) -> dict[str, Any]:
    prefix = f"d{conc}-"
    numbers = itertools.count()
    latencies: list[float] = []
    tally: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def worker() -> None:
        while loop.time() < deadline:
            q = Question(tenant=tenant, name=gate_name(prefix, next(numbers)), qtype="A")
            started = time.perf_counter()
            d = await decider.decide(q)
            latencies.append(time.perf_counter() - started)
            tally["server" if d.from_server else "failure"] += 1

    logs0 = sum(handler.messages.values())
    checks0, cpu0, srv0 = decider.checks, own_cpu(), cpu_seconds(server_pid)
    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(conc)))
    wall = time.monotonic() - started
    checks = decider.checks - checks0
    cp, srv = own_cpu() - cpu0, cpu_seconds(server_pid) - srv0
    await drain(decider)
    latencies.sort()
    return {"server": label, "path": "direct", "conc": conc, "wall": wall,
            "answers": len(latencies), "in_time": tally["server"], "failure": tally["failure"],
            "checks_s": checks / wall, "decided_s": tally["server"] / wall,
            "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99),
            "server_pct": 100 * srv / wall, "cp_pct": 100 * cp / wall, "client_pct": "-",
            "cp_us": 1e6 * cp / max(1, checks),
            "logs": sum(handler.messages.values()) - logs0}


async def gate_run(decider: PolicyDecider, sock: Path, tenant: str, label: str, conns: int,
                   cycle: int, seconds: float, server_pid: int,
                   handler: LogCounter) -> dict[str, Any]:
    logs0 = sum(handler.messages.values())
    errors0 = decider.counts[(tenant, "error")]
    checks0, cpu0, srv0 = decider.checks, own_cpu(), cpu_seconds(server_pid)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve()), "--role", "gate-clients", "--socket",
        str(sock), "--tenant", tenant, "--conns", str(conns), "--seconds", str(seconds),
        "--prefix", f"g{conns}-" if not cycle else "c", "--cycle", str(cycle),
        stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    wall = time.monotonic() - started  # includes the client's start-up (idle for us)
    checks = decider.checks - checks0
    cp, srv = own_cpu() - cpu0, cpu_seconds(server_pid) - srv0
    failure = decider.counts[(tenant, "error")] - errors0
    await drain(decider)
    got = json.loads(out)
    latencies = got["latencies"]
    verdicts = got["verdicts"]
    answers = got["answers"]
    return {"server": label, "path": "gate hit" if cycle else "gate", "conc": conns,
            "wall": seconds, "answers": answers,
            "in_time": answers - failure, "failure": failure,
            "checks_s": checks / seconds,
            "decided_s": (answers - failure) / seconds,
            "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99),
            "server_pct": 100 * srv / seconds, "cp_pct": 100 * cp / seconds,
            "client_pct": f"{100 * got['cpu'] / seconds:.0f}",
            "cp_us": 1e6 * cp / max(1, checks if not cycle else answers),
            "logs": sum(handler.messages.values()) - logs0, "verdicts": verdicts,
            "wall_total": wall}


# -- part 2: the real chain --------------------------------------------------------------

def doc(text: str) -> str:
    return text.strip() + "\n"


def chain_manifests(src: Path, dns_port: int, policy_port: int, table_names: int) -> None:
    docs = [
        doc("apiVersion: v1\nkind: Namespace\nmetadata: {name: gated, labels: {tenant: gated}}"),
        doc("apiVersion: v1\nkind: Namespace\nmetadata: {name: plain, labels: {tenant: plain}}"),
        doc("apiVersion: v1\nkind: Namespace\nmetadata: {name: dns}"),
        # The tenants' server (dnsmasq) and the policy server, as the cluster names them.
        doc("apiVersion: v1\nkind: Service\nmetadata: {name: upstream, namespace: dns}\n"
            "spec: {clusterIP: 127.0.0.1}"),
        doc("apiVersion: v1\nkind: Service\nmetadata: {name: policy, namespace: dns}\n"
            "spec: {clusterIP: 127.0.0.1}"),
        doc("apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: gated}\n"
            "spec: {clusterIP: 10.96.0.10}"),
    ]
    # ServiceEntry hosts under the benchmark domain: table names, decided ahead.
    for block in range(0, table_names, 100):
        hosts = ", ".join(f"t{i}.{ZONE}" for i in range(block, min(table_names, block + 100)))
        docs.append(doc(f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
                        f"metadata: {{name: se{block}, namespace: gated}}\n"
                        f"spec: {{hosts: [{hosts}], addresses: [198.51.100.{block // 100 + 1}],"
                        " resolution: STATIC}"))
    # decisionTtlSeconds 3600: no refresh of the table names during the run (the refresh
    # loop spins while decisions are due; part 3 measures it)
    for tenant, gate in (("plain", ""), ("gated", f'\n    server: {{address: '
                                                   f'"policy.dns.svc:{policy_port}", '
                                                   'decisionTtlSeconds: 3600}')):
        docs.append(doc(f"""
apiVersion: {POLICY_API}
kind: DnsPolicy
metadata: {{name: {tenant}}}
spec:
  namespaceSelector: {{matchLabels: {{tenant: {tenant}}}}}
  server: {{address: "upstream.dns.svc:{dns_port}"}}
  policy:
    whitelist: ["*.{ZONE}"]
    defaultAction: DENY{gate}
"""))
    (src / "chain.yaml").write_text("---\n".join(docs))


def paced(port: int, questions: list[tuple[str, str]], rate: float) -> dict[str, Any]:
    """One query at a time, paced to ``rate``/s; per-query latency, rcodes, lost."""
    latencies: list[float] = []
    rcodes: Counter[str] = Counter()
    wrong = lost = 0
    started = time.monotonic()
    for i, (name, rdtype) in enumerate(questions):
        q = dns.message.make_query(name, rdtype)
        t0 = time.perf_counter()
        try:
            r = dns.query.udp(q, "127.0.0.1", port=port, timeout=2)
        except dns.exception.Timeout:
            lost += 1
        else:
            latencies.append(time.perf_counter() - t0)
            rcodes[dns.rcode.to_text(r.rcode())] += 1
            if rdtype == "A" and [rd.to_text() for rs in r.answer for rd in rs] != [ANSWER]:
                wrong += 1
        pause = (i + 1) / rate - (time.monotonic() - started)
        if pause > 0:
            time.sleep(pause)
    latencies.sort()
    return {"n": len(questions), "avg": statistics.fmean(latencies) if latencies else 0.0,
            "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99),
            "max": latencies[-1] if latencies else float("nan"), "rcodes": dict(rcodes),
            "lost": lost, "wrong": wrong, "wall": time.monotonic() - started}


def part2(work: Path, queries: int, rate: float, seconds: float, report: list[str]) -> None:
    started: list[Any] = []
    try:
        dnsmasq, dns_port = start_dnsmasq(work)
        started.append(dnsmasq)
        allow = AllowServer(work).start()
        started.append(allow.process)
        src = work / "chain"
        src.mkdir()
        chain_manifests(src, dns_port, allow.port, queries)
        cp = ControlPlane(src, work, extra_args=["--log-level", "warning"]).start()
        started.append(cp)
        envoys = {}
        for tenant in ("plain", "gated"):
            envoy = Envoy(node_id=f"gw.{tenant}", namespace=tenant, labels={"app": "bench"},
                          xds_address=cp.xds_address, workdir=work, concurrency=1)
            envoy.start(timeout=60)
            started.append(envoy)
            envoys[tenant] = envoy
        for tenant, envoy in envoys.items():
            wait_for(lambda e=envoy: query(e.dns_port, f"ready.{ZONE}", timeout=2) == (
                "NOERROR", [ANSWER]), timeout=60, what=f"{tenant} to forward")

        def names(tenant: str) -> int:
            views = {v["tenant"]: v for v in cp.get("/api/v1/views")}
            return int(views[tenant]["names"])
        # the gated table is whole once every ServiceEntry host is decided (allowed)
        wait_for(lambda: names("gated") >= names("plain") >= queries, timeout=60,
                 what="the gated tenant's table names to be decided")
        resolvers = {r["tenant"]: r for r in cp.get("/api/v1/resolvers")["resolvers"]}
        assert cp.process is not None and dnsmasq.proc is not None
        pids = {"cp": cp.process.pid, "allow": allow.process.pid, "dnsmasq": dnsmasq.pid}
        for tenant, envoy in envoys.items():
            assert envoy.process is not None
            pids[f"envoy-{tenant}"] = envoy.process.pid
            pids[f"unbound-{tenant}"] = int(resolvers[tenant]["pid"])
        rows = []

        def case(label: str, tenant: str, questions: list[tuple[str, str]], *,
                 direct: bool = False) -> None:
            """Through the tenant's Envoy, or (direct) straight to its tenant resolver."""
            port = int(resolvers[tenant]["listen"].rsplit(":", 1)[1]) if direct else \
                envoys[tenant].dns_port
            metrics0 = http_text(f"{cp.admin_url}/metrics")
            checks0 = allow.counts()[0]
            cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
            r = paced(port, questions, rate)
            time.sleep(0.1)  # the counter file is written every 20 ms
            cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
            metrics1 = http_text(f"{cp.admin_url}/metrics")

            def delta(result: str) -> float:
                name = "dnscp_policy_server_decisions_total"
                return (metric(metrics1, name, tenant="gated", result=result)
                        - metric(metrics0, name, tenant="gated", result=result))
            r.update(label=label, tenant=tenant, checks=allow.counts()[0] - checks0,
                     cp_hits=delta("cache"), errors=delta("error"),
                     cpu_us={k: 1e6 * cpu[k] / max(1, r["n"]) for k in
                             ("cp", "allow", f"envoy-{tenant}", f"unbound-{tenant}", "dnsmasq")})
            rows.append(r)

        n = queries
        plan: list[tuple[str, Callable[[str], list[tuple[str, str]]], bool]] = [
            ("new name A (miss)", lambda t: [(f"a{i}.{t}.{ZONE}", "A") for i in range(n)],
             False),
            ("same A again (unbound cache)",
             lambda t: [(f"a{i}.{t}.{ZONE}", "A") for i in range(n)], False),
            ("AAAA of a decided name (module hit)",
             lambda t: [(f"a{i}.{t}.{ZONE}", "AAAA") for i in range(n)], False),
            ("to unbound: new name A (miss)",
             lambda t: [(f"u{i}.{t}.{ZONE}", "A") for i in range(n)], True),
            ("to unbound: table name A (cp hit)",
             lambda t: [(f"t{i}.{ZONE}", "A") for i in range(n)], True),
        ]
        for label, make, direct in plan:
            for tenant in ("plain", "gated"):
                case(label, tenant, make(tenant), direct=direct)

        # full speed: dnsperf over distinct names, each tenant; meanwhile one client asks
        # names the tenant resolver has cached (paced 100/s) through the same Envoy
        full = {}
        for tenant in ("plain", "gated"):
            qfile = work / f"full-{tenant}.txt"
            qfile.write_text("".join(f"f{i}.{tenant}.{ZONE} A\n" for i in range(60000)))
            checks0 = allow.counts()[0]
            cached: dict[str, Any] = {}
            side = threading.Thread(target=lambda t=tenant, c=cached: c.update(paced(
                envoys[t].dns_port, [(f"a{i % n}.{t}.{ZONE}", "A")
                                     for i in range(int(seconds * 2 * 100))], 100)))
            side.start()
            r = dnsperf(envoys[tenant].dns_port, qfile, work / f"full-{tenant}.out",
                        seconds=seconds * 2, clients=4, once=True,
                        watch={k: p for k, p in pids.items()
                               if k in ("cp", "allow", "dnsmasq", f"envoy-{tenant}",
                                        f"unbound-{tenant}")})
            side.join()
            time.sleep(0.1)
            r["checks"] = allow.counts()[0] - checks0
            r["cached"] = cached
            full[tenant] = r
        cp_log = cp.process.log()
    finally:
        for proc in reversed(started):
            proc.stop()
    report.append("")
    report.append(f"## 2. Added latency of a forwarded query (Envoy --concurrency 1 -> tenant "
                  f"resolver -> dnsmasq; {queries} queries per case, one at a time, paced "
                  f"{rate:.0f}/s; dnspython client)")
    report.append("tenants: DENY, whitelist *.bench.example; gated adds policy.server = the "
                  "allow-all server (Service policy.dns.svc, timeout 200 ms, failure closed, "
                  "decisionTtlSeconds 3600)")
    report.append(f"{'case':<38}{'tenant':<7}{'avg ms':>8}{'p50 ms':>8}{'p99 ms':>8}"
                  f"{'max ms':>8}{'lost':>5}{'rcodes':>20}{'checks':>7}{'cp hits':>8}"
                  f"{'cp us/q':>8}{'srv us/q':>9}{'unb us/q':>9}")
    base: dict[str, dict[str, Any]] = {}
    for r in rows:
        rc = ",".join(f"{k}:{v}" for k, v in sorted(r["rcodes"].items()))
        t = r["tenant"]
        report.append(
            f"{r['label']:<38}{t:<7}{r['avg'] * 1000:>8.3f}{r['p50'] * 1000:>8.3f}"
            f"{r['p99'] * 1000:>8.3f}{r['max'] * 1000:>8.2f}{r['lost']:>5}{rc:>20}"
            f"{r['checks']:>7}{r['cp_hits']:>8.0f}{r['cpu_us']['cp']:>8.0f}"
            f"{r['cpu_us']['allow']:>9.0f}{r['cpu_us'][f'unbound-{t}']:>9.0f}")
        if t == "plain":
            base[r["label"]] = r
    report.append("(checks: Check calls at the policy server during the case; cp hits: "
                  "decisions the control plane answered from its cache; us/q: CPU per query "
                  "of the control plane, the policy server, the tenant's unbound)")
    report.append("added by policy.server (gated - plain):")
    for r in rows:
        if r["tenant"] == "gated":
            b = base[r["label"]]
            report.append(f"  {r['label']:<38} avg {1000 * (r['avg'] - b['avg']):+.3f} ms, "
                          f"p50 {1000 * (r['p50'] - b['p50']):+.3f} ms, "
                          f"p99 {1000 * (r['p99'] - b['p99']):+.3f} ms")
    report.append("full speed, dnsperf -c 4 -q 200 -t 2 -n 1 over distinct new names (every "
                  "query a miss):")
    report.append(f"{'tenant':<8}{'qps':>8}{'avg ms':>8}{'p50 ms':>8}{'p99 ms':>8}{'sent':>8}"
                  f"{'NOERROR':>8}{'lost':>6}{'t/o':>5}{'checks':>8}{'cp %':>6}{'srv %':>6}"
                  f"{'unb %':>6}")
    for tenant, r in full.items():
        wall = r["runtime"] or r["wall"]
        report.append(
            f"{tenant:<8}{r['qps']:>8.0f}{r['avg_ms']:>8.2f}{r['p50_ms']:>8.2f}"
            f"{r['p99_ms']:>8.2f}{r['sent']:>8.0f}{r['noerror']:>8.0f}{r['lost']:>6.0f}"
            f"{r['timeouts']:>5.0f}{r['checks']:>8}{100 * r['cpu']['cp'] / wall:>6.0f}"
            f"{100 * r['cpu']['allow'] / wall:>6.0f}"
            f"{100 * r['cpu'][f'unbound-{tenant}'] / wall:>6.0f}")
    report.append("meanwhile, names the tenant resolver has cached (A repeats, paced 100/s, "
                  "through the same Envoy):")
    for tenant, r in full.items():
        c = r["cached"]
        report.append(f"  {tenant:<7}avg {c['avg'] * 1000:.2f} ms, p50 {c['p50'] * 1000:.2f} ms, "
                      f"p99 {c['p99'] * 1000:.2f} ms, max {c['max'] * 1000:.1f} ms, lost "
                      f"{c['lost']} of {c['n']}")
    report.append("control-plane log: " + outage_lines(cp_log))


# -- part 3: Check calls for 10,000 visible names ----------------------------------------

class CountWatch(threading.Thread):
    """Samples the allow-all server's counter every 10 ms: (time, checks) on each change."""

    def __init__(self, server: AllowServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.samples: list[tuple[float, int]] = [(time.monotonic(), 0)]
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.01):
            total = self.server.counts()[0]
            if total != self.samples[-1][1]:
                self.samples.append((time.monotonic(), total))

    def first(self, *, after: float, above: int) -> float | None:
        """When the count first exceeded ``above`` after ``after``."""
        for t, total in self.samples:
            if t >= after and total > above:
                return t
        return None

    def reached(self, *, after: float, value: int) -> float | None:
        for t, total in self.samples:
            if t >= after and total >= value:
                return t
        return None


class GateProbe(threading.Thread):
    """Asks the control plane's gate for a new forwarded name every 50 ms, as a tenant
    resolver would on a miss: (time, latency, verdict)."""

    def __init__(self, path: Path, tenant: str) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.tenant = tenant
        self.answers: list[tuple[float, float, str]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        sock: socket.socket | None = None
        for i in itertools.count():
            if self.stopping.wait(0.05):
                break
            started = time.monotonic()
            try:
                if sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.settimeout(1.0)
                    sock.connect(str(self.path))
                sock.sendall(f"{self.tenant} probe{i}.partner.example A\n".encode())
                buf = b""
                while not buf.endswith(b"\n"):
                    chunk = sock.recv(256)
                    if not chunk:
                        raise OSError("closed")
                    buf += chunk
                verdict = buf.split()[0].decode()
            except OSError:
                if sock is not None:
                    sock.close()
                sock = None
                verdict = "no answer"
            self.answers.append((started, time.monotonic() - started, verdict))
        if sock is not None:
            sock.close()

    def between(self, start: float, end: float) -> str:
        got = [(lat, v) for t, lat, v in self.answers if start <= t < end]
        if not got:
            return "no probe"
        lat = sorted(x for x, _ in got)
        verdicts = Counter(v for _, v in got)
        return (f"{len(got)} probes: {dict(verdicts)}, p50 {pct(lat, 0.5) * 1000:.1f} ms, "
                f"max {lat[-1] * 1000:.0f} ms")


def big_policy(port: int, whitelist: list[str], ttl: int, upstream: str) -> str:
    server = f'\n  server: {{address: "{upstream}"}}' if upstream else ""
    return "---\n".join([
        doc("apiVersion: v1\nkind: Service\nmetadata: {name: policy, namespace: dns}\n"
            "spec: {clusterIP: 127.0.0.1}"),
        doc(f"""
apiVersion: {POLICY_API}
kind: DnsPolicy
metadata: {{name: big}}
spec:
  namespaceSelector: {{matchLabels: {{tenant: big}}}}{server}
  policy:
    whitelist: [{", ".join(f'"{w}"' for w in whitelist)}]
    defaultAction: DENY
    server: {{address: "policy.dns.svc:{port}", decisionTtlSeconds: {ttl}}}
""")])


def service(name: str, ns: str, ip: str) -> str:
    return doc(f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n"
               f"spec: {{clusterIP: {ip}}}")


def ip_of(i: int) -> str:
    return f"10.{100 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}"


def part3(work: Path, services: int, report: list[str]) -> None:
    namespaces = 10
    allow = AllowServer(work).start()
    src = work / "big"
    src.mkdir()
    ns_docs = [doc(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: big-{k}, labels: "
                   "{tenant: big}}") for k in range(namespaces)]
    ns_docs += [doc("apiVersion: v1\nkind: Namespace\nmetadata: {name: dns}"),
                doc("apiVersion: v1\nkind: Namespace\nmetadata: {name: other}")]
    (src / "namespaces.yaml").write_text("---\n".join(ns_docs))
    for k in range(namespaces):  # the last Service of big-0 lives in edit.yaml
        (src / f"services-{k}.yaml").write_text("---\n".join(
            service(f"svc{i}", f"big-{k}", ip_of(i)) for i in range(
                k * services // namespaces, (k + 1) * services // namespaces)
            if i != services // namespaces - 1))
    edit_name = f"svc{services // namespaces - 1}"
    (src / "edit.yaml").write_text(service(edit_name, "big-0", "10.250.0.1"))
    whitelist = ["*.partner.example"]
    # The tenant forwards (spec.server: nothing listens there; no query is forwarded here):
    # without spec.server its table never takes the decisions in (see no_server_table).
    upstream = f"127.0.0.1:{free_port()}"
    (src / "policy.yaml").write_text(big_policy(allow.port, whitelist, 3600, upstream))
    expected = services + 1  # and policy.dns.svc: every cluster name is asked
    cp_dir = work / "cp3"
    cp_dir.mkdir()
    watch = CountWatch(allow)
    watch.start()
    probe = GateProbe(cp_dir / "resolvers" / "policy-gate.sock", "big")
    rows: list[tuple[str, str]] = []
    cp = ControlPlane(src, cp_dir, extra_args=["--log-level", "warning"])
    try:
        t0 = time.monotonic()
        cp.start(timeout=120)
        t_ready = time.monotonic()
        assert cp.process is not None
        cp_pid = cp.process.pid
        probe.start()

        def names() -> int:
            views = {v["tenant"]: v for v in cp.get("/api/v1/views")}
            return int(views["big"]["names"]) if "big" in views else 0

        def rebuilds() -> int:
            return int(metric(http_text(f"{cp.admin_url}/metrics"), "dnscp_rebuilds_total"))
        wait_for(lambda: watch.reached(after=t0, value=expected), timeout=180, interval=0.05,
                 what=f"{expected} Checks")
        wait_for(lambda: names() >= expected, timeout=60, interval=0.1,
                 what="the table to be whole")
        t_table = time.monotonic()
        total, distinct = allow.settled()
        t_checks = watch.reached(after=t0, value=expected) or float("nan")
        t_first = watch.first(after=t0, above=0) or float("nan")
        cpu_start = cpu_seconds(cp_pid)
        log_start = cp.process.log()
        rows.append(("start", f"{total} Checks for {distinct} distinct names "
                              f"(expected {expected}); duplicates {total - distinct}"))
        rows.append(("", f"process start -> /readyz {t_ready - t0:.2f} s, -> first Check "
                         f"{t_first - t0:.2f} s, -> {expected}th Check {t_checks - t0:.2f} s "
                         f"(Checks at {expected / max(1e-9, t_checks - t_first):.0f}/s), -> table "
                         f"whole ({names()} names) {t_table - t0:.2f} s; control-plane CPU "
                         f"{cpu_start:.1f} s since start"))
        rows.append(("", f"rebuilds of every view meanwhile: {rebuilds()}; gate probe "
                         f"(a forwarded name every 50 ms) from /readyz until the table was "
                         f"whole: {probe.between(t_ready, t_table)}"))
        rows.append(("", "log: " + outage_lines(log_start)))

        def change(label: str, write: Callable[[], None], expect: str,
                   table: int | None = None) -> None:
            before = allow.settled(quiet=0.5)[0]
            cpu0, rebuilds0 = cpu_seconds(cp_pid), rebuilds()
            log0 = cp.process.log() if cp.process else ""
            t_write = time.monotonic()
            write()
            time.sleep(1.0)  # the file watch (50 ms debounce) and the rebuild
            if table is not None:
                wait_for(lambda: names() == table, timeout=30, interval=0.1,
                         what=f"{table} names after {label}")
            after = allow.settled(quiet=1.5)[0]
            t_first_check = watch.first(after=t_write, above=before)
            log1 = cp.process.log() if cp.process else ""
            when = (f", first Check {1000 * (t_first_check - t_write):.0f} ms after the write"
                    if t_first_check else "")
            rows.append((label, f"{after - before} Checks (expected {expect}){when}; "
                                f"control-plane CPU {1000 * (cpu_seconds(cp_pid) - cpu0):.0f} ms "
                                f"(from the write until quiet for 1.5 s); rebuilds "
                                f"{rebuilds() - rebuilds0}; {names()} names; new outage "
                                f"warnings {log1[len(log0):].count('cannot decide')}"))

        change("add 1 Service", lambda: (src / "add.yaml").write_text(
            service("added", "big-1", "10.250.1.1")), "1", table=expected + 1)
        change("1 Service's IP changed", lambda: (src / "edit.yaml").write_text(
            service(edit_name, "big-0", "10.250.0.2")), "0")
        change("whitelist changed", lambda: (src / "policy.yaml").write_text(
            big_policy(allow.port, [*whitelist, "*.example.org"], 3600, upstream)),
            "0: the server is asked about whitelisted names too")
        change("100 Services in an unselected namespace", lambda: (src / "other.yaml").write_text(
            "---\n".join(service(f"o{i}", "other", f"10.251.0.{i + 1}") for i in range(100))),
            "0 if only the tenant's namespaces were asked")
        # decisionTtlSeconds 3600 -> 10: new settings, so the cache is dropped: all re-asked
        asked_now = expected + 1 + 100
        before = allow.settled(quiet=0.5)[0]
        cpu0, rebuilds0 = cpu_seconds(cp_pid), rebuilds()
        t_write = time.monotonic()
        (src / "policy.yaml").write_text(big_policy(allow.port, [*whitelist, "*.example.org"],
                                                    10, upstream))
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: watch.reached(after=t_write, value=before + asked_now),
                     timeout=60, interval=0.05, what="the re-asking")
        t_all = watch.reached(after=t_write, value=before + asked_now)
        first = watch.first(after=t_write, above=before)
        cpu_reask = cpu_seconds(cp_pid) - cpu0
        rows.append(("decisionTtlSeconds 3600 -> 10",
                     f"{asked_now} names re-asked: first Check "
                     f"{1000 * ((first or t_write) - t_write):.0f} ms after the write, all "
                     + (f"{t_all - t_write:.1f} s after it" if t_all else "not within 60 s")
                     + f"; control-plane CPU {cpu_reask:.1f} s; rebuilds "
                     f"{rebuilds() - rebuilds0}; gate probe meanwhile: "
                     f"{probe.between(t_write, t_all or time.monotonic())}"))
        # the refresh of 10 s decisions (re-asked when 10-30% of the lifetime is left)
        window = 10.0
        cache_metric = "dnscp_policy_server_decisions_total"
        c0, cpu0, srv0 = allow.counts()[0], cpu_seconds(cp_pid), cpu_seconds(allow.process.pid)
        hits0 = metric(http_text(f"{cp.admin_url}/metrics"), cache_metric, result="cache")
        w0 = time.monotonic()
        time.sleep(window)
        c1 = allow.counts()[0]
        cp_cpu, srv_cpu = cpu_seconds(cp_pid) - cpu0, cpu_seconds(allow.process.pid) - srv0
        hits = metric(http_text(f"{cp.admin_url}/metrics"), cache_metric, result="cache") - hits0
        rows.append(("refresh, TTL 10 s, 10 s window",
                     f"{c1 - c0} Checks ({(c1 - c0) / window:.0f}/s; re-asked ahead at 70-90% "
                     f"of the lifetime: {asked_now / 8:.0f}/s, at expiry {asked_now / 10:.0f}/s);"
                     f" {hits:.0f} decisions answered from the cache meanwhile (the refresh "
                     f"loop's); control plane {100 * cp_cpu / window:.0f}% of a core, policy "
                     f"server {100 * srv_cpu / window:.0f}%; gate probe: "
                     f"{probe.between(w0, w0 + window)}"))
        log_end = cp.process.log()
        rows.append(("", "log over the whole part: " + outage_lines(log_end)))
    finally:
        probe.stopping.set()
        watch.stopping.set()
        cp.stop()
        allow.process.stop()
        probe.join(timeout=5)
        watch.join(timeout=5)
    rows.append(("the same without spec.server", no_server_table(work, 300)))
    report.append("")
    report.append(f"## 3. Check calls, one tenant with {services} visible names ({services} "
                  f"Services in {namespaces} namespaces; DENY; spec.server set; the allow-all "
                  "server; decisionTtlSeconds 3600)")
    for label, text in rows:
        report.append(f"{label:<40}{text}")


def no_server_table(work: Path, services: int) -> str:
    """A tenant with policy.server but no spec.server (it does not forward, so only its
    cluster names): do the server's decisions reach its table?"""
    allow = AllowServer(work).start()
    src = work / "small"
    src.mkdir()
    (src / "all.yaml").write_text("---\n".join([
        doc("apiVersion: v1\nkind: Namespace\nmetadata: {name: big-0, labels: {tenant: big}}"),
        doc("apiVersion: v1\nkind: Namespace\nmetadata: {name: dns}"),
        *(service(f"svc{i}", "big-0", ip_of(i)) for i in range(services))]))
    (src / "policy.yaml").write_text(big_policy(allow.port, ["*.partner.example"], 3600, ""))
    cp_dir = work / "cp3b"
    cp_dir.mkdir()
    cp = ControlPlane(src, cp_dir, extra_args=["--log-level", "warning"])
    try:
        cp.start(timeout=60)
        wait_for(lambda: allow.counts()[0] >= services + 1, timeout=60, what="the Checks")
        total, _ = allow.settled()
        time.sleep(3.0)
        views = {v["tenant"]: v for v in cp.get("/api/v1/views")}
        table = cp.get("/api/v1/views/big/dns-table")["policy_server"]["decisions"]
        allowed = sum(d["decision"] == "allow" for d in table)
        return (f"{services} Services: {total} Checks, {allowed} names allowed by the server; "
                f"3 s later the table has {views['big']['names']} names")
    finally:
        cp.stop()
        allow.process.stop()


# -- the run -----------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.5,
                        help="length of each decisions-per-second run")
    parser.add_argument("--queries", type=int, default=400, help="queries per latency case")
    parser.add_argument("--rate", type=float, default=200.0, help="pace of the latency cases")
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--parts", type=int, nargs="*", default=[1, 2, 3])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="policy-server-"))
    load = os.getloadavg()
    began = time.monotonic()
    report = [f"policy server benchmark: {os.cpu_count()} cores shared by every process; "
              f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"]
    print(report[0], flush=True)
    try:
        if 1 in args.parts:
            (work / "p1").mkdir()
            asyncio.run(part1(work / "p1", args.seconds, report))
            print("\n".join(report[1:]), flush=True)
        if 2 in args.parts:
            (work / "p2").mkdir()
            mark = len(report)
            part2(work / "p2", args.queries, args.rate, args.seconds, report)
            print("\n".join(report[mark:]), flush=True)
        if 3 in args.parts:
            (work / "p3").mkdir()
            mark = len(report)
            part3(work / "p3", args.services, report)
            print("\n".join(report[mark:]), flush=True)
        print(f"\nload average at the end {os.getloadavg()[0]:.2f}; benchmark wall time "
              f"{time.monotonic() - began:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(role_main() if "--role" in sys.argv[1:2] else main())
