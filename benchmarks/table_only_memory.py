"""Memory of table-only tenant resolvers (DnsPolicy tenants that may forward nothing).

    .venv/bin/python benchmarks/table_only_memory.py [--tenants 10] [--names 200]

Starts ``--tenants`` table-only resolvers with the production ``ResolverPool`` (process
lifetime, a temporary directory): each tenant a DENY policy whose table is ``--names``
one-address Services with a named port (its own namespace), and nothing to forward, so
``build_tenant_view`` gives it ``Forwarding.server`` None. Each resolver is asked 100
queries (table A, AAAA, TXT, SRV, PTR and an external name, UDP), then its memory is read
from ``/proc/PID/smaps_rollup``: private (Private_Clean + Private_Dirty, what it alone
costs) and RSS (with the shared libraries). Prints figures only; not a test.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query
import dns.reversename

from benchmarks.procstat import load_average
from controlplane.core.inventory import Inventory
from controlplane.core.model import DefaultAction, Namespace, Service, ServicePort
from controlplane.core.settings import DnsSettings
from controlplane.dns.views import Forwarding, build_tenant_view, cluster_records
from controlplane.resolvers.pool import ResolverPool
from tests.factories import policy

ZONE = "cluster.local"


def inventory(tenants: int, names: int) -> Inventory:
    objects: list[object] = []
    for t in range(tenants):
        ns = f"t{t}"
        objects.append(Namespace(ns, (("tenant", ns),)))
        objects += [Service(ns, f"svc{i}", cluster_ips=(f"10.{96 + t}.{i // 250}.{i % 250 + 1}",),
                            ports=(ServicePort("http", 80),)) for i in range(names)]
        objects.append(policy(ns, {"tenant": ns}, default_action=DefaultAction.DENY,
                              whitelist=(f"*.{ns}.svc.{ZONE}",)))
    return Inventory.of(objects)


def forwards(inv: Inventory) -> dict[str, Forwarding]:
    settings = DnsSettings()
    records = cluster_records(inv, zone=settings.zone)
    out = {}
    for p in inv.policies.values():
        view = build_tenant_view(p, records, inv, settings)[0]
        assert view.forward is not None and view.forward.server is None, view.notes
        out[view.tenant] = view.forward
    return out


def memory_kib(pid: int) -> tuple[int, int]:
    """(private, RSS) of ``pid`` in KiB, from smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        fields[key] = int(value.split()[0])
    return fields["Private_Clean"] + fields["Private_Dirty"], fields["Rss"]


def ask(port: int, tenant: str) -> None:
    name = f"svc0.{tenant}.svc.{ZONE}"
    questions = [(name, "A"), (name, "AAAA"), (name, "TXT"), (f"_http._tcp.{name}", "SRV"),
                 (dns.reversename.from_address(f"10.{96 + int(tenant[1:])}.0.1").to_text(),
                  "PTR"), ("www.example.com", "A")]
    for i in range(100):
        qname, rdtype = questions[i % len(questions)]
        dns.query.udp(dns.message.make_query(qname, rdtype), "127.0.0.1", port=port, timeout=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--names", type=int, default=200)
    args = parser.parse_args()
    fwd = forwards(inventory(args.tenants, args.names))
    print(f"load average before: {load_average()}")
    with tempfile.TemporaryDirectory() as tmp:
        pool = ResolverPool(Path(tmp) / "resolvers", owns_workdir=True)
        try:
            started = time.perf_counter()
            addresses = pool.apply(fwd)
            took = time.perf_counter() - started
            for tenant, address in addresses.items():
                ask(address.port, tenant)
            figures = {t: memory_kib(r.unbound.pid) for t, r in pool.resolvers.items()}
        finally:
            pool.stop_all()
    private = [p / 1024 for p, _ in figures.values()]
    rss = [r / 1024 for _, r in figures.values()]
    print(f"{len(figures)} table-only resolvers, {args.names} table names each, started by one "
          f"apply in {took:.2f} s; after 100 queries each:")
    print(f"  private per resolver: median {statistics.median(private):.1f} MiB "
          f"(min {min(private):.1f}, max {max(private):.1f}); all: {sum(private):.1f} MiB")
    print(f"  RSS per resolver: median {statistics.median(rss):.1f} MiB "
          f"(min {min(rss):.1f}, max {max(rss):.1f})")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
