"""A tenant's table -> the tenant resolver's own zones (unbound ``auth-zone`` files),
``local-data`` and RPZ records.

Pure. The resolver answers the tenant's table names itself, as CoreDNS would, so the
DNS front (docs/dns-front.md) can send it every query Envoy cannot answer right:

- the cluster zone: A/AAAA of every visible name with all its addresses (no answer
  cap; no ``::ffff`` stand-ins: a name without AAAA gets NODATA), SRV for named ports,
  ``dns-version.<zone>`` TXT "1.1.0", and the zone's SOA, which unbound puts in every
  negative answer (RFC 2308); a name the tenant may not see is not in the zone: NXDOMAIN;
- reverse zones (the ``/8`` of each IPv4 address, the ``/16`` of each IPv6 one) with
  PTR for Service cluster IPs, else the headless endpoint names
  (``<hostname or dashed IP>.svc.ns.svc.<zone>``, what CoreDNS answers), else the pod
  names the view has;
- names outside the cluster zone (ServiceEntry hosts with addresses) are ``local-data``
  (``outside_data``): unbound puts each in a transparent local zone of its own, so the
  name answers its addresses (NODATA for another type, without an SOA) and names below it
  are still forwarded; the pool changes them live with ``local_datas``;
- names Envoy answers from a cluster (``record.cluster``: ExternalName Services, DNS
  ServiceEntries without addresses) are aliases of their (first) target, as CoreDNS answers
  an ExternalName: ``CNAME`` to the target, which the resolver then resolves through its
  forwarding with the policy applied (``alias_plan``). A host that is its own target is
  not in the table: forwarded, as Envoy's cluster and Istio's DNS proxy resolve it;
- wildcards (``*.x``, ServiceEntry hosts with addresses) answer every name below ``x``
  at any depth that no exact name or longer wildcard answers, never ``x`` itself: Envoy's
  semantics. In the zone they are wildcard owners, plus ``*.n`` for every name ``n`` below
  ``x`` (DNS wildcards stop at existing names); outside it they are RPZ records
  (``table_rpz``; ``translate/unbound.py`` merges them with the policy's triggers, which
  unbound applies before auth-zones and after local-data).

The files are reloaded live with ``unbound-control auth_zone_reload <zone>``
(``resolvers/pool.py``); which zones exist is in ``unbound.conf``, so a new reverse
zone, or a new alias in the cluster zone whose target is outside it (each gets an
``auth-zone`` of its own that answers nothing downstream: ``alias_zone_names``), starts a
new resolver.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from controlplane.core.names import is_ipv4_text, parse_ip
from controlplane.dns.records import NameRecord
from controlplane.dns.views import Forwarding

SPEC_VERSION = "1.1.0"  # the Kubernetes DNS schema version (dns-version TXT)
MAX_ALIAS_HOPS = 8  # aliases of aliases followed in the table before giving up


def _fqdn(name: str) -> str:
    return name.rstrip(".").lower() + "."


def _in_zone(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def _bare(name: str) -> str:
    return name.rstrip(".").lower()


def reverse_pointer(ip: str) -> str:
    """``ipaddress.ip_address(ip).reverse_pointer``, for IPv4 text without an address
    object (the text ``is_ipv4_text`` accepts is the address's own text)."""
    if is_ipv4_text(ip):
        return ipv4_reverse_pointer(ip)
    return ipaddress.ip_address(ip).reverse_pointer


def ipv4_reverse_pointer(ip: str) -> str:
    """``reverse_pointer`` of text ``is_ipv4_text`` accepted."""
    a, b, c, d = ip.split(".")
    return f"{d}.{c}.{b}.{a}.in-addr.arpa"


def _reverse_zone(ip: str) -> str:
    if ":" not in ip:  # the table's addresses are valid: IPv4 without parsing it again
        return f"{ip.partition('.')[0]}.in-addr.arpa."
    nibbles = ipaddress.ip_address(ip).reverse_pointer.split(".")  # 32 nibbles, "ip6.arpa"
    return ".".join(nibbles[28:]) + "."


def _addresses(rec: NameRecord) -> tuple[list[str], list[str]]:
    """Every address of ``rec`` by family, those past Envoy's cap included, no ``::ffff``."""
    v4 = [*rec.ipv4, *(a for a in rec.dropped if ":" not in a)]
    v6 = [] if rec.mapped else [*rec.ipv6, *(a for a in rec.dropped if ":" in a)]
    return v4, v6


@dataclass(frozen=True, slots=True)
class RpzRecord:
    """What the resolver's RPZ answers for one owner: ``rdata`` (``"A 192.0.2.1"``,
    ``"CNAME target."``), or NXDOMAIN when empty."""

    owner: str  # an exact name or "*.suffix", lower case, no trailing dot
    rdata: tuple[str, ...]
    ttl: int
    source: str


@dataclass(frozen=True, slots=True)
class AliasPlan:
    """How the resolver answers a name Envoy answers from a cluster.

    ``target`` set: a CNAME to it (in the cluster zone when both names are there, which
    unbound follows inside the zone; else an RPZ record, which unbound follows through its
    forwarding). Otherwise the addresses the alias comes to in the table (an IP target,
    a target that is a table name outside the zone, or under a table wildcard): answered
    directly, like Envoy."""

    name: str
    ttl: int
    target: str = ""
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()


class _Table:
    """The table's names, indexed for alias and wildcard lookups (``of``: built once per
    call; ``table_texts.py`` keeps its own index)."""

    def __init__(self, zone: str, exact: Mapping[str, NameRecord],
                 wild: Mapping[str, NameRecord]) -> None:
        self.zone = zone
        self.exact = exact
        # Wildcard bases ("x" of "*.x") with their record. A base of one label never
        # matches in Envoy (its table groups names by their last two labels): left out.
        self.wild = wild

    @classmethod
    def of(cls, fwd: Forwarding) -> _Table:
        exact: dict[str, NameRecord] = {}
        wild: dict[str, NameRecord] = {}
        for e in fwd.table:
            rec = e.record
            if rec.is_wildcard:
                if "." in rec.name[2:]:
                    wild[rec.name[2:]] = rec
            else:
                exact[rec.name] = rec
        return cls(_bare(fwd.zone), exact, wild)

    def wildcard_for(self, name: str) -> NameRecord | None:
        """The longest table wildcard ``name`` lies strictly below (Envoy's match)."""
        pos = name.find(".")
        while pos != -1:
            hit = self.wild.get(name[pos + 1:])
            if hit is not None:
                return hit
            pos = name.find(".", pos + 1)
        return None

    def plan(self, rec: NameRecord) -> AliasPlan | None:
        """``rec``'s alias plan; None when the resolver forwards the name (its own
        target) or has nothing to answer (a target in the zone the tenant cannot see)."""
        name = rec.name
        target = _bare(rec.cluster[0].host)
        if target == name:
            return None
        for _ in range(MAX_ALIAS_HOPS):
            ip = parse_ip(target)
            if ip is not None:
                if ip.version == 4:
                    return AliasPlan(name, rec.ttl, ipv4=(str(ip),))
                return AliasPlan(name, rec.ttl, ipv6=(str(ip),))
            found = self.exact.get(target)
            if found is not None and found.cluster:
                nxt = _bare(found.cluster[0].host)
                if nxt == target:  # forwarded itself: the CNAME goes there
                    return AliasPlan(name, rec.ttl, target=target)
                target = nxt
                continue
            resolved = found or self.wildcard_for(target)
            both_in_zone = _in_zone(name, self.zone) and _in_zone(target, self.zone)
            if both_in_zone and (found is not None or resolved is None):
                # unbound follows a CNAME inside the zone to an exact name only
                return AliasPlan(name, rec.ttl, target=target)
            if resolved is not None:
                v4, v6 = _addresses(resolved)
                return AliasPlan(name, rec.ttl, ipv4=tuple(v4), ipv6=tuple(v6))
            if _in_zone(target, self.zone):
                return None  # outside alias to a cluster name the tenant cannot see
            return AliasPlan(name, rec.ttl, target=target)
        return None  # a loop of aliases

    def plans(self, records: Iterable[NameRecord]) -> list[AliasPlan]:
        out = []
        for rec in records:
            if rec.cluster and not rec.is_wildcard:
                p = self.plan(rec)
                if p is not None:
                    out.append(p)
        return out


def _alias_records(fwd: Forwarding) -> list[NameRecord]:
    return [e.record for e in fwd.table if e.record.cluster and not e.record.is_wildcard]


def alias_plans(fwd: Forwarding) -> list[AliasPlan]:
    """Every alias of the table (names Envoy answers from a cluster), planned."""
    aliases = _alias_records(fwd)
    return _Table.of(fwd).plans(aliases) if aliases else []


def _external(plan: AliasPlan, zone: str) -> bool:
    """A CNAME the resolver follows through its forwarding (target outside the zone)."""
    return bool(plan.target) and not _in_zone(plan.target, zone)


def alias_zone_names(fwd: Forwarding) -> tuple[str, ...]:
    """Aliases in the cluster zone whose CNAME leaves it, sorted: each gets an auth-zone
    of its own that answers nothing downstream, so the cluster zone does not answer the
    name before unbound follows the RPZ's CNAME (measured on unbound 1.17: the cluster
    zone's NXDOMAIN won otherwise)."""
    zone = _bare(fwd.zone)
    return tuple(sorted(_fqdn(p.name) for p in alias_plans(fwd)
                        if _external(p, zone) and _in_zone(p.name, zone)))


def _endpoint_name(name: str, zone: str) -> bool:
    """``<host>.<svc>.<ns>.svc.<zone>``: a headless Service's endpoint name."""
    suffix = f".svc.{zone}"
    return name.endswith(suffix) and name[:-len(suffix)].count(".") == 2


def _ptr_sources(fwd: Forwarding) -> list[tuple[str, str, int]]:
    """(IP, name, TTL) for PTR: a Service's cluster IP names the Service, else a headless
    endpoint's IP names the endpoint (CoreDNS's order), else a pod IP names the pod."""
    zone = _bare(fwd.zone)
    best: dict[str, tuple[int, list[tuple[str, int]]]] = {}
    for e in fwd.table:
        rec = e.record
        kind = rec.kind
        if kind == "service":
            rank = 0
        elif kind == "pod":
            rank = 2
        elif kind == "headless" and _endpoint_name(rec.name, zone):
            rank = 1
        else:
            continue
        if not _in_zone(rec.name, zone):
            continue
        for ip in rec.ipv4 + (() if rec.mapped else rec.ipv6) + rec.dropped:
            have = best.get(ip)
            if have is None or rank < have[0]:
                best[ip] = (rank, [(rec.name, rec.ttl)])
            elif rank == have[0]:
                have[1].append((rec.name, rec.ttl))
    return [(ip, name, ttl) for ip, (_, names) in best.items() for name, ttl in names]


def reverse_zone_names(fwd: Forwarding) -> tuple[str, ...]:
    """The reverse zones of the table's PTR records, sorted."""
    return tuple(sorted({_reverse_zone(ip) for ip in {ip for ip, _, _ in _ptr_sources(fwd)}}))


def table_zone_names(fwd: Forwarding) -> tuple[str, ...]:
    """Every zone the resolver holds for this table: the cluster zone first, then the
    reverse zones, sorted, then the alias zones (``alias_zone_names``)."""
    return (_fqdn(fwd.zone), *reverse_zone_names(fwd), *alias_zone_names(fwd))


def _head(zone: str, cluster_zone: str, ttl: int) -> list[str]:
    ns = f"ns.dns.{cluster_zone}"
    return [f"$ORIGIN {zone}", f"$TTL {ttl}",
            f"@ {ttl} IN SOA {ns} hostmaster.{cluster_zone} 1 7200 1800 86400 {ttl}",
            f"@ {ttl} IN NS {ns}"]


def alias_lines(plan: AliasPlan) -> list[str]:
    """An alias's lines in the cluster zone: its CNAME, or the addresses it resolved to."""
    owner = _fqdn(plan.name)
    if plan.target:
        return [f"{owner} {plan.ttl} IN CNAME {_fqdn(plan.target)}"]
    return _address_lines(owner, plan.ttl, plan.ipv4, plan.ipv6)


def _address_lines(owner: str, ttl: int, v4: Iterable[str], v6: Iterable[str]) -> list[str]:
    return ([f"{owner} {ttl} IN A {a}" for a in v4]
            + [f"{owner} {ttl} IN AAAA {a}" for a in v6])


def _zone_wildcards(owners: set[str], wild: dict[str, NameRecord], zone: str) -> list[str]:
    """Wildcard owners for the zone's wildcards, and ``*.n`` with the covering wildcard's
    addresses for every name ``n`` below a wildcard's base (and every empty non-terminal
    between): a DNS wildcard stops at an existing name, Envoy's does not."""
    if not wild:
        return []
    nodes: set[str] = set()
    for name in (*owners, *wild):
        while name and name != zone:
            nodes.add(name)
            name = name.partition(".")[2]
    lines = []
    for base, rec in sorted(wild.items()):
        lines += _address_lines(f"*.{base}.", rec.ttl, *_addresses(rec))
    for node in sorted(nodes):
        if node in wild:
            continue
        pos, cover = node.find("."), None
        while pos != -1 and cover is None:
            cover = wild.get(node[pos + 1:])
            pos = node.find(".", pos + 1)
        if cover is not None:
            lines += _address_lines(f"*.{node}.", cover.ttl, *_addresses(cover))
    return lines


def table_zones(fwd: Forwarding) -> dict[str, str]:
    """Zone name -> zone file text, for every zone of ``table_zone_names``."""
    zone = _fqdn(fwd.zone)
    bare = zone.rstrip(".")
    ttl = fwd.table_ttl
    lines = _head(zone, zone, ttl)
    lines.append(f'dns-version.{zone} {ttl} IN TXT "{SPEC_VERSION}"')
    owners: set[str] = set()
    wild: dict[str, NameRecord] = {}
    aliases: list[NameRecord] = []
    for e in fwd.table:
        rec = e.record
        if not _in_zone(rec.name, bare):
            continue
        if rec.is_wildcard:
            wild[rec.name[2:]] = rec
            continue
        if rec.cluster:
            aliases.append(rec)
            continue
        name = _fqdn(rec.name)
        owners.add(rec.name)
        lines += _address_lines(name, rec.ttl, *_addresses(rec))
        for s in rec.srv:
            owners.add(f"_{s.service}._{s.protocol}.{rec.name}")
            lines.append(f"_{s.service}._{s.protocol}.{name} {rec.ttl} IN SRV {s.priority} "
                         f"{s.weight} {s.port} {_fqdn(s.target)}")
    for plan in _Table.of(fwd).plans(aliases) if aliases else ():
        if _external(plan, bare):
            continue  # its own zone (alias_zone_names) and an RPZ record
        owners.add(plan.name)
        lines += alias_lines(plan)
    lines += _zone_wildcards(owners, wild, bare)
    out = {zone: "\n".join(lines) + "\n"}
    reverse: dict[str, list[str]] = {}
    for ip, name, rec_ttl in sorted(_ptr_sources(fwd)):
        ptr = reverse_pointer(ip) + "."
        reverse.setdefault(_reverse_zone(ip), []).append(
            f"{ptr} {rec_ttl} IN PTR {_fqdn(name)}")
    for rzone, records in sorted(reverse.items()):
        out[rzone] = "\n".join(_head(rzone, zone, ttl) + sorted(set(records))) + "\n"
    for azone in alias_zone_names(fwd):
        out[azone] = "\n".join(_head(azone, zone, ttl)) + "\n"
    return out


def outside_data(fwd: Forwarding) -> tuple[str, ...]:
    """``local-data`` records for the table's names outside the cluster zone, sorted:
    their addresses, and those of aliases that come to addresses (``AliasPlan``)."""
    bare = _bare(fwd.zone)
    out = []
    for e in fwd.table:
        rec = e.record
        if rec.is_wildcard or rec.cluster or _in_zone(rec.name, bare):
            continue
        out += _address_lines(_fqdn(rec.name), rec.ttl, *_addresses(rec))
    for plan in alias_plans(fwd):
        if not plan.target and not _in_zone(plan.name, bare):
            out += _address_lines(_fqdn(plan.name), plan.ttl, plan.ipv4, plan.ipv6)
    return tuple(sorted(out))


def table_rpz(fwd: Forwarding) -> tuple[RpzRecord, ...]:
    """What the table puts in the resolver's RPZ, sorted by owner: wildcards outside the
    cluster zone (their addresses at ``*.x``), CNAMEs the resolver follows through its
    forwarding, and for such a CNAME in the cluster zone, NXDOMAIN below it (the name is
    in a zone of its own, which answers nothing: below it the cluster zone's answer)."""
    wild = [e.record for e in fwd.table if e.record.is_wildcard]
    return rpz_records(wild, alias_plans(fwd), _bare(fwd.zone))


def rpz_records(wild: Iterable[NameRecord], plans: Iterable[AliasPlan],
                bare: str) -> tuple[RpzRecord, ...]:
    """``table_rpz`` from the table's wildcard records and its aliases' plans (also
    ``table_texts``, which has both at hand)."""
    out = []
    for rec in wild:
        if "." in rec.name[2:] and not _in_zone(rec.name[2:], bare):
            v4, v6 = _addresses(rec)
            out.append(RpzRecord(rec.name, (*(f"A {a}" for a in v4),
                                            *(f"AAAA {a}" for a in v6)),
                                 rec.ttl, ", ".join(rec.sources)))
    for plan in plans:
        if _external(plan, bare):
            out.append(RpzRecord(plan.name, (f"CNAME {_fqdn(plan.target)}",), plan.ttl,
                                 f"alias of {plan.target}"))
            if _in_zone(plan.name, bare):
                out.append(RpzRecord(f"*.{plan.name}", (), plan.ttl,
                                     "below an alias in the cluster zone"))
    return tuple(sorted(out, key=lambda r: r.owner))


def empty_zone(zone: str, fwd: Forwarding) -> str:
    """The text of ``zone`` holding no name: what a retiring resolver loads for a zone the
    new table no longer has, so it answers NXDOMAIN there as its successor does."""
    return "\n".join(_head(zone, _fqdn(fwd.zone), fwd.table_ttl)) + "\n"


def table_file(directory: str, zone: str) -> str:
    """Where the zone file of ``zone`` lives in a resolver's directory."""
    return str(Path(directory) / f"table-{zone.rstrip('.') or 'root'}.zone")
