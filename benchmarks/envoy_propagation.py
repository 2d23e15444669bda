"""With one real Envoy: time from a change to the new DNS answer, and where it goes.

    .venv/bin/python benchmarks/envoy_propagation.py [--edits 20] [--debounce 0.05]
        [--services 10000] [--source files|kubernetes] [--edit own|bulk] [--wide]
        [--settle] [--timeout 30] [--resolver] [--fronted] [--ports] [--code DIR]

The control plane serves ``examples/`` plus ``--services`` Services in namespace
``bulk`` (one manifest file, ``bulk.yaml``, with the file source; API objects
with ``--source kubernetes``, through ``tests/fakes/kube.py`` and the real
client); one real Envoy of tenant acme asks it. With ``--wide`` acme's policy
says ``defaultAction: ALLOW`` and the Services are spread over 100 namespaces
``bulk0``..``bulk99``: a wide tenant that sees every one of them (Envoy's table
holds them all); without it acme sees only its own few names (a narrow tenant). Each edit gives Service
``prop.acme`` a new cluster IP and times, from the change to the first DNS
answer from Envoy that carries the new IP (queried every millisecond):

- files, ``--edit own``: ``prop.yaml`` (one Service) is written;
- files, ``--edit bulk``: ``bulk.yaml`` is rewritten with the Service in it
  (a 10,001-document file: what re-parsing a large file costs);
- kubernetes: the Service is applied to the fake API server (a watch event).

Then ``/api/v1/rebuilds`` says where the time went (``hub_metrics.ChangeTrace``):
the watcher (the change until the source saw it: watchfiles, or the fake API
server's watch, which polls every 10 ms), parse, store, to the event loop, the
debounce window, merge (the store's new inventory), build (records and views,
worker thread), resolvers (the tenant resolvers' apply on their thread: waited for
before adopt only when one may need a start, else after install, beside the render;
older code: inside adopt), adopt (resolvers, policy selection, event loop), render
(translate and serialise, worker thread), install, to the stream (gRPC send),
Envoy's ACK (it received and applied the listener) and ACK to answer (the
listener in use on Envoy's worker; the query loop's resolution is ~1 ms).
Server CPU (the control plane), Envoy's and the client's (this process) are
reported apart, with the load average. ``--code DIR`` runs the control plane
from another checkout (e.g. ``git archive HEAD | tar -x -C DIR``): it has no
``/api/v1/rebuilds``, only the totals are printed.

For the curves from 1,000 to 100,000 Services (RESULTS.md section 20): ``--settle``
waits, after the 0.3 s gap, until the control plane, Envoy and the tenant resolvers
have used under 20 ms of CPU each in 100 ms (at most 60 s) before each edit, so that
each edit is a change after quiet even when the previous one left work behind (the
tenant resolvers' reload of a large table follows the install, and a change that
comes while it runs waits for it: the debounce rule); ``--timeout`` bounds the start and
each edit's wait for its answer. Also printed: p90/p95, the time to ready (the
control plane, then Envoy's DNS listener) and both RSS after the edits.
``--resolver`` also times each change to the first answer from acme's tenant
resolver carrying it (asked directly, every millisecond, beside Envoy): the path of
a name a DNS-fronted sidecar's Envoy does not hold (a wide tenant's names outside
its own namespaces, docs/wide-tenants.md), before the front's cache. ``--fronted``:
the Envoy declares a DNS front (``DNS_FRONT_SET_ADDRESS`` in its node metadata; no
front runs), so a wide tenant's Envoy gets only its own namespaces (the edited name is
in acme's) and the tenant resolver holds the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import statistics
import sys
import tempfile
import time
import urllib.error
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.checkout import start_control_plane  # noqa: E402
from benchmarks.procstat import cpu_seconds, load_average, own_cpu_seconds  # noqa: E402
from controlplane._kit.localrun import (  # noqa: E402
    Envoy,
    free_port,
    http_json,
    rss_mb,
    wait_for,
)
from e2e.harness.dnsquery import query  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("watcher", "parse", "store", "to_loop", "debounce", "merge", "build", "resolvers",
         "adopt",
         "render", "install", "to_stream", "envoy_ack", "ack_to_answer")


PORTS = ", ports: [{name: http, port: 80}, {name: grpc, port: 9090}]"  # two SRV records


def bulk_docs(n: int, *, namespaces: int = 1, ports: bool = False) -> list[str]:
    def ns(i: int) -> str:
        return "bulk" if namespaces == 1 else f"bulk{i % namespaces}"
    named = PORTS if ports else ""
    return [f"apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: {ns(i)}}}\n"
            f"spec: {{clusterIP: 10.{200 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}{named}}}\n"
            for i in range(n)]


def prop_doc(ip: str) -> str:
    return ("apiVersion: v1\nkind: Service\nmetadata: {name: prop, namespace: acme}\n"
            f"spec: {{clusterIP: {ip}}}\n")


def breakdown(trace: dict[str, Any], t0: float, answered: float) -> dict[str, float]:
    ms = dict(trace["milliseconds"])
    out = {"watcher": (trace["seen_at"] - t0) * 1000 if trace.get("seen_at") else float("nan")}
    out.update({k: ms.get(k, float("nan")) for k in STEPS[1:-1]})
    ack = trace.get("first_ack_at")
    out["ack_to_answer"] = (answered - ack) * 1000 if ack else float("nan")
    return out


class FrontedEnvoy(Envoy):
    """An Envoy whose node says its pod runs a DNS front (set listener on a free port)."""

    def write_bootstrap(self) -> Path:
        path = super().write_bootstrap()
        config = yaml.safe_load(path.read_text())
        config["node"]["metadata"]["DNS_FRONT_SET_ADDRESS"] = f"127.0.0.1:{free_port()}"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path


def ask(host: str, port: int, name: str) -> list[str]:
    """The A records of ``name`` from the DNS server at host:port (UDP)."""
    r = dns.query.udp(dns.message.make_query(name, "A"), host, port=port, timeout=0.3)
    return sorted(rd.to_text() for rrset in r.answer for rd in rrset)


def answers(fn: Any, *args: Any) -> Any:
    """``fn(*args)``, or None when the server did not answer (as ``wait_for`` takes it)."""
    try:
        return fn(*args)
    except (dns.exception.DNSException, OSError):
        return None


def settle(pids: list[int], *, limit: float = 60.0) -> float:
    """Wait until every process of ``pids`` used under 20 ms of CPU in 100 ms; seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        before = [cpu_seconds(p) for p in pids]
        time.sleep(0.1)
        if all(cpu_seconds(p) - b < 0.02 for p, b in zip(pids, before, strict=True)):
            break
    return time.monotonic() - start


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    return ordered[max(0, min(len(ordered) - 1, math.ceil(len(ordered) * q / 100) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--debounce", type=float, default=0.05)
    parser.add_argument("--services", type=int, default=0)
    parser.add_argument("--source", choices=["files", "kubernetes"], default="files")
    parser.add_argument("--edit", choices=["own", "bulk"], default="own")
    parser.add_argument("--wide", action="store_true",
                        help="acme ALLOWs everything; the Services in 100 namespaces")
    parser.add_argument("--settle", action="store_true",
                        help="before each edit, wait until the control plane, Envoy and the "
                        "tenant resolvers are idle")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds for Envoy's listener at the start, and for each answer")
    parser.add_argument("--resolver", action="store_true",
                        help="also time each change to the tenant resolver's new answer")
    parser.add_argument("--fronted", action="store_true",
                        help="the Envoy declares a DNS front: a wide view's Envoy gets its part")
    parser.add_argument("--ports", action="store_true",
                        help="the bulk Services have two named ports each (an SRV record per "
                             "port: three zone lines per Service in the tenant resolver)")
    parser.add_argument("--code", default="", help="run the control plane from this checkout")
    args = parser.parse_args()
    print(f"change -> answer from a real Envoy: source {args.source}"
          f"{' (' + args.edit + ' file)' if args.source == 'files' else ''}, "
          f"{args.services} extra Services{' with two named ports' if args.ports else ''}"
          f"{' visible to acme (ALLOW)' if args.wide else ''}, "
          f"{'Envoy fronted, ' if args.fronted else ''}"
          f"{args.edits} edits, debounce "
          f"{args.debounce * 1000:.0f} ms, code {args.code or 'this checkout'}; 2 cores shared "
          f"by every process; load average at start {load_average()}")
    work = Path(tempfile.mkdtemp(prefix="prop-"))
    manifests = work / "m"
    shutil.copytree(ROOT / "examples", manifests)
    docs = bulk_docs(args.services, namespaces=100 if args.wide else 1, ports=args.ports)
    if args.wide:  # acme's policy: everything not denied is visible
        demo = manifests / "demo-two-tenants.yaml"
        text = demo.read_text()
        acme = text.index("metadata: {name: acme}\nspec:")
        cut = text.index("defaultAction: DENY", acme)
        demo.write_text(text[:cut] + "defaultAction: ALLOW" + text[cut + len("defaultAction: DENY"):])
    kube: Any = None
    extra = ["--debounce", str(args.debounce), "--log-level", "warning"]
    if args.source == "kubernetes":
        from tests.fakes.kube import CORE, OURS, FakeKube

        kube = FakeKube(resources=CORE + OURS, bookmark_interval=1.0).start()
        for f in sorted(manifests.glob("*.yaml")):
            for doc in yaml.safe_load_all(f.read_text()):
                if doc and doc.get("kind") == "ServiceEntry":
                    doc["apiVersion"] = "networking.example.com/v1alpha1"
                if doc:
                    kube.apply(doc)
        for text in docs:
            kube.apply(yaml.safe_load(text))
        with kube._lock:  # noqa: SLF001 - a benchmark of the control plane, not of the fake:
            kube._events.clear()  # noqa: SLF001 - its watches scan every event each 10 ms
        source = Path("kubernetes")
        extra += ["--kubeconfig", str(kube.kubeconfig(work)), "--watch-timeout", "300"]
    else:
        if docs:
            (manifests / "bulk.yaml").write_text("---\n".join(docs))
        source = manifests
    started = time.monotonic()
    cp = start_control_plane(source, work, code=args.code, extra_args=extra, timeout=300)
    cp_ready = time.monotonic() - started
    kind = FrontedEnvoy if args.fronted else Envoy
    envoy = kind(node_id="sleep.acme", namespace="acme", labels={"app": "sleep"},
                 xds_address=cp.xds_address, workdir=work, concurrency=1)
    assert cp.process is not None
    try:
        envoy.start(timeout=args.timeout)
        envoy_ready = time.monotonic() - started - cp_ready
        assert envoy.process is not None
        print(f"ready: control plane {cp_ready:.1f} s, then Envoy's DNS listener {envoy_ready:.1f} s"
              f"; load average {load_average()}")
        settled = []
        resolver: tuple[str, int] | None = None
        at_resolver: list[float] = []
        unanswered = 0  # queries to Envoy without an answer within 0.3 s
        if args.resolver:
            listen = next(r["listen"] for r in http_json(f"{cp.admin_url}/api/v1/resolvers")[
                "resolvers"] if r.get("tenant") == "acme")
            host, _, port = str(listen).rpartition(":")
            resolver = (host.strip("[]"), int(port))
        rows: list[dict[str, float]] = []
        totals = []
        cpu0 = (cpu_seconds(cp.process.pid), cpu_seconds(envoy.process.pid), own_cpu_seconds())
        for i in range(args.edits):
            ip = f"10.66.{i // 250}.{i % 250 + 1}"
            time.sleep(0.3)  # each edit on its own: nothing left of the previous one
            if args.settle:  # the resolvers too: the run a change would wait for includes them
                busy = [cp.process.pid, envoy.process.pid]
                with contextlib.suppress(urllib.error.HTTPError):  # older code: no such API
                    busy += [r["pid"] for r in http_json(
                        f"{cp.admin_url}/api/v1/resolvers")["resolvers"] if r.get("pid")]
                settled.append(settle(busy))
            t0 = time.time()
            if kube is not None:
                kube.apply(yaml.safe_load(prop_doc(ip)))
            elif args.edit == "bulk":
                (manifests / "bulk.yaml").write_text("---\n".join([*docs, prop_doc(ip)]))
            else:
                (manifests / "prop.yaml").write_text(prop_doc(ip))
            envoy_at = resolver_at = 0.0
            while not (envoy_at and (resolver is None or resolver_at)):
                if time.time() - t0 > args.timeout:
                    raise TimeoutError(f"no new answer within {args.timeout} s")
                if not envoy_at:
                    got = answers(query, envoy.dns_port, "prop.acme.svc.cluster.local", "A", 0.3)
                    unanswered += got is None
                    if got == ("NOERROR", [ip]):
                        envoy_at = time.time()
                if resolver is not None and not resolver_at and answers(
                        ask, *resolver, "prop.acme.svc.cluster.local") == [ip]:
                    resolver_at = time.time()
                time.sleep(0.001)
            answered = envoy_at
            totals.append((answered - t0) * 1000)
            if resolver_at:
                at_resolver.append((resolver_at - t0) * 1000)
            trace = None
            with contextlib.suppress(TimeoutError, urllib.error.HTTPError):
                trace = wait_for(lambda t0=t0: next(
                    (r for r in http_json(f"{cp.admin_url}/api/v1/rebuilds")["rebuilds"]
                     if r["started_at"] > t0 and r["first_ack_node"] == "sleep.acme"
                     and r["first_ack_at"]), None), timeout=3, what="the rebuild's trace")
            if trace is not None:
                rows.append(breakdown(trace, t0, answered))
        server = cpu_seconds(cp.process.pid) - cpu0[0]
        envoy_cpu = cpu_seconds(envoy.process.pid) - cpu0[1]
        client = own_cpu_seconds() - cpu0[2]
        ordered = sorted(totals)
        print(f"change -> new answer: p50 {statistics.median(ordered):.0f} ms, "
              f"min {ordered[0]:.0f} ms, max {ordered[-1]:.0f} ms over {len(ordered)} edits")
        print(f"p90 {percentile(ordered, 90):.0f} ms, p95 {percentile(ordered, 95):.0f} ms; "
              f"queries Envoy did not answer within 0.3 s: {unanswered}; "
              f"RSS after the edits: control plane {rss_mb(cp.process.pid):.0f} MB, Envoy "
              f"{rss_mb(envoy.process.pid):.0f} MB"
              + (f"; waited for quiet before an edit: median {statistics.median(settled):.2f} s,"
                 f" max {max(settled):.2f} s" if settled else ""))
        if at_resolver:
            res = sorted(at_resolver)
            print(f"change -> the tenant resolver's new answer: p50 {statistics.median(res):.0f}"
                  f" ms, p90 {percentile(res, 90):.0f} ms, p95 {percentile(res, 95):.0f} ms, "
                  f"min {res[0]:.0f} ms, max {res[-1]:.0f} ms")
        if rows:
            print("median per step (ms): " + ", ".join(
                f"{k} {statistics.median(r[k] for r in rows):.1f}" for k in STEPS))
            print("max per step (ms):    " + ", ".join(
                f"{k} {max(r[k] for r in rows):.1f}" for k in STEPS))
            print("per edit (ms): total | " + " ".join(s[:8] for s in STEPS))
            for total, r in zip(totals, rows, strict=False):
                print(f"  {total:6.1f} | " + " ".join(f"{r[k]:8.1f}" for k in STEPS))
        print(f"cpu over the edits: control plane {server:.2f} s, Envoy {envoy_cpu:.2f} s, "
              f"client (this process: writes, queries every 1 ms"
              f"{', the fake API server' if kube is not None else ''}) {client:.2f} s; "
              f"load average at end {load_average()}")
    finally:
        envoy.stop()
        cp.stop()
        if kube is not None:
            kube.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
