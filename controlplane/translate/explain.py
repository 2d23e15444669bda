"""What Envoy will answer for one query, and why.

It reads the same table Envoy gets, the way Envoy reads it.

``simulate`` runs a query against the ``DnsTable`` that translation
produced (not against the model), following Envoy 1.40's DNS filter:

- table entries are grouped by their last two labels; a query looks only in
  the group of *its* last two labels, exact name first, then ``*.suffix``
  entries from the longest suffix to the shortest. So a wildcard whose
  suffix is a single label (``*.com``) never matches anything;
- names match case-sensitively (the table is lower case);
- A/AAAA: an entry with addresses answers those of the queried family; if it
  has none of that family the answer is NXDOMAIN, and nothing is forwarded;
- SRV: answered from ``_service._proto.name`` entries;
- anything not found goes upstream when the view forwards, else NXDOMAIN;
  SRV is never forwarded; other types get NOTIMP.

``explain`` adds the policy side: which DnsPolicy applies to the workload and
which rule decides the name. The admin API serves it, and a test checks it
against the real Envoy on every case of the policy table.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from controlplane.core.inventory import Inventory
from controlplane.core.model import Workload
from controlplane.dns.views import DEFAULT_TENANT, Forwarding, TenantView, Trigger, in_zone
from controlplane.policy.selection import CompiledPolicy, select_policy
from controlplane.translate.dns_table import dns_table

SUPPORTED = ("A", "AAAA", "SRV")


def _suffix(name: str) -> str:
    """Envoy's Utils::getDomainSuffix: up to the last two labels."""
    return ".".join(name.split(".")[-2:])


def _stored_name(name: str) -> str:
    """Envoy stores ``*.x.y`` as ``.x.y``."""
    return name[1:] if name.startswith("*.") else name


@dataclass
class _Entry:
    addresses: list[str] = field(default_factory=list)
    cluster: str = ""
    srv: list[tuple[int, int, int, str]] = field(default_factory=list)  # prio, weight, port, target


@dataclass(frozen=True)
class Simulated:
    rcode: str  # NOERROR, NXDOMAIN, NOTIMP, FORWARDED (the upstream decides), CLUSTER
    records: tuple[str, ...]
    matched: str | None  # the table entry that answered, as configured ("*.x.com")
    reason: str


class TableModel:
    """A DnsTable indexed the way Envoy indexes it."""

    def __init__(self, view: TenantView) -> None:
        self.view = view
        self.buckets: dict[str, dict[str, _Entry]] = {}
        self.configured: dict[str, str] = {}  # stored name -> configured name
        table = dns_table(view)
        for vd in table.virtual_domains:
            stored = _stored_name(vd.name)
            bucket = self.buckets.setdefault(_suffix(stored), {})
            self.configured[stored] = vd.name
            which = vd.endpoint.WhichOneof("endpoint_config")
            if which == "address_list":
                entry = bucket.setdefault(stored, _Entry())
                entry.addresses.extend(vd.endpoint.address_list.address)
            elif which == "cluster_name":
                bucket.setdefault(stored, _Entry()).cluster = vd.endpoint.cluster_name
            elif which == "service_list":
                for svc in vd.endpoint.service_list.services:
                    full = f"_{svc.service_name}._{svc.protocol.name}.{vd.name}"
                    srv_entry = bucket.setdefault(full, _Entry())
                    for t in svc.targets:
                        srv_entry.srv.append((t.priority, t.weight, t.port, t.host_name))

    def _find(self, name: str) -> tuple[str, _Entry] | None:
        bucket = self.buckets.get(_suffix(name))
        if bucket is None:
            return None
        pos = 0
        while pos != -1:
            key = name[pos:]
            if key in bucket:
                return key, bucket[key]
            pos = name.find(".", pos + 1)
        return None

    def simulate(self, name: str, qtype: str) -> Simulated:
        qtype = qtype.upper()
        name = name.rstrip(".")
        forwarding = self.view.forwarding
        upstream = ", ".join(str(u) for u in self.view.upstreams)
        if qtype not in SUPPORTED:
            return Simulated("NOTIMP", (), None, f"Envoy's DNS filter answers only A, AAAA and "
                             f"SRV; {qtype} gets NOTIMP")
        found = self._find(name)
        if qtype == "SRV":
            if found and found[1].srv:
                recs = tuple(f"{p} {w} {port} {t}." for p, w, port, t in sorted(found[1].srv))
                return Simulated("NOERROR", recs, self.configured.get(found[0], found[0]),
                                 "SRV records from the table")
            return Simulated("NXDOMAIN", (), None, "no SRV record in the table; SRV queries are "
                             "never forwarded")
        if found and found[1].cluster:
            configured = self.configured.get(found[0], found[0])
            return Simulated("CLUSTER", (), configured,
                             f"answered from the addresses cluster {found[1].cluster} resolved "
                             "(the external name's current records); if it has none of this "
                             "family the query goes on as if the name were not in the table")
        if found and found[1].addresses:
            key, entry = found
            family = 4 if qtype == "A" else 6
            records = tuple(a for a in entry.addresses
                            if ipaddress.ip_address(a).version == family)
            configured = self.configured.get(key, key)
            if not records:
                return Simulated("NXDOMAIN", (), configured,
                                 f"{configured} has no {qtype} address; Envoy answers NXDOMAIN "
                                 "rather than an empty answer, and does not forward")
            return Simulated("NOERROR", records, configured, f"answered from {configured}")
        if forwarding and self.view.forward is not None:
            return resolver_answer(self.view.forward, name, upstream, qtype)
        return Simulated("NXDOMAIN", (), None, "not in the table and this view forwards nothing")


def resolver_trigger(fwd: Forwarding, name: str) -> Trigger | None:
    """The trigger the tenant resolver applies to ``name``: the most specific one."""
    by_name = {t.name: t for t in fwd.triggers}
    hit = by_name.get(name)
    pos = name.find(".")
    while hit is None and pos != -1:
        hit = by_name.get("*" + name[pos:])
        pos = name.find(".", pos + 1)
    return hit or by_name.get("*")


def resolver_answer(fwd: Forwarding, name: str, resolver: str,
                    qtype: str = "A") -> Simulated:
    """What the tenant resolver does with a name Envoy forwards to it (case-insensitive):
    it holds the tenant's table too (``unbound_table.py``)."""
    lowered = name.lower()
    entry = next((e for e in fwd.table if e.record.name == lowered
                  and not e.record.cluster), None)
    if entry is not None:  # the cluster zone's auth-zone, or local-data outside it
        rec = entry.record
        family = 4 if qtype.upper() == "A" else 6
        addresses = (*rec.ipv4, *(() if rec.mapped else rec.ipv6), *rec.dropped)
        records = tuple(a for a in addresses if ipaddress.ip_address(a).version == family)
        return Simulated("NOERROR", records, rec.name, f"forwarded to the tenant resolver "
                         f"{resolver}, which answers the tenant's table itself (in any case)")
    if in_zone(lowered, fwd.zone):
        return Simulated("NXDOMAIN", (), None, f"not in the table: forwarded to the tenant "
                         f"resolver {resolver}, which answers NXDOMAIN for unknown names under "
                         f"{fwd.zone} itself (never asks the tenant's server)")
    trigger = resolver_trigger(fwd, lowered)
    if trigger is not None and trigger.deny:
        return Simulated("NXDOMAIN", (), trigger.name, f"not in the table: the tenant resolver "
                         f"{resolver} denies it ({trigger.rule}) and never forwards it")
    how = "" if fwd.transport.value == "udp" else f" over {fwd.transport.value}"
    return Simulated("FORWARDED", (), trigger.name if trigger else None,
                     f"not in the table: the tenant resolver {resolver} forwards it to "
                     f"{fwd.server}{how}")


def explain(inventory: Inventory, views: dict[str, TenantView], workload: Workload, name: str,
            qtype: str) -> dict[str, Any]:
    selection = select_policy(workload, inventory.namespace_labels(workload.namespace),
                              inventory.policies.values())
    policy = selection.policy
    tenant = policy.tenant if policy else DEFAULT_TENANT
    view = views[tenant]
    sim = TableModel(view).simulate(name, qtype)
    lowered = name.rstrip(".").lower()
    decision = (CompiledPolicy.of(policy).classify(lowered) if policy else None)
    out: dict[str, Any] = {
        "query": {"name": name, "type": qtype.upper()},
        "workload": {"namespace": workload.namespace, "labels": dict(workload.labels)},
        "tenant": tenant,
        "policy": policy.name if policy else None,
        "conflicts": list(selection.conflicts),
        "decision": ({"action": decision.action.value, "rule": decision.rule}
                     if decision else {"action": None, "rule": "default view"}),
        "envoy": {"rcode": sim.rcode, "records": list(sim.records), "matched": sim.matched,
                  "forwarded_to": ([str(view.forward.server)]
                                   if sim.rcode == "FORWARDED" and view.forward else []),
                  "resolver": str(view.upstreams[0]) if view.upstreams else None},
        "why": sim.reason,
        "notes": list(view.notes),
    }
    if name != lowered and sim.rcode != "NOERROR" and not view.forwarding:
        out["why"] += ("; Envoy 1.40 matches names case-sensitively and the table is lower "
                       "case, so this spelling does not match")
    return out
