"""A tenant's table -> the tenant resolver's own zones (unbound ``auth-zone`` files).

Pure. The resolver answers the tenant's table names itself, as CoreDNS would, so the
DNS front (docs/dns-front.md) can send it every query Envoy cannot answer right:

- the cluster zone: A/AAAA of every visible name with all its addresses (no answer
  cap; no ``::ffff`` stand-ins: a name without AAAA gets NODATA), SRV for named ports,
  ``dns-version.<zone>`` TXT "1.1.0", and the zone's SOA, which unbound puts in every
  negative answer (RFC 2308); a name the tenant may not see is not in the zone: NXDOMAIN;
- reverse zones (the ``/8`` of each IPv4 address, the ``/16`` of each IPv6 one) with
  PTR for Service cluster IPs and the pod IPs the view has.

The files are reloaded live with ``unbound-control auth_zone_reload <zone>``
(``resolvers/pool.py``); which zones exist is in ``unbound.conf``, so a new reverse
zone starts a new resolver.

Names outside the cluster zone (ServiceEntry hosts with addresses) are ``local-data``
(``outside_data``): unbound puts each in a transparent local zone of its own, so the name
answers its addresses (NODATA for a family it lacks, without an SOA) and names below it
are still forwarded; the pool changes them live with ``local_datas``. Not in the table
yet: wildcards and names answered from a cluster (ExternalName, DNS ServiceEntries
without addresses): the resolver forwards those as before.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from controlplane.dns.views import Forwarding

SPEC_VERSION = "1.1.0"  # the Kubernetes DNS schema version (dns-version TXT)


def _fqdn(name: str) -> str:
    return name.rstrip(".").lower() + "."


def _in_zone(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def _reverse_zone(ip: str) -> str:
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return f"{ip.split('.')[0]}.in-addr.arpa."
    nibbles = addr.reverse_pointer.split(".")  # 32 nibbles, then "ip6.arpa"
    return ".".join(nibbles[28:]) + "."


def _ptr_sources(fwd: Forwarding) -> list[tuple[str, str, int]]:
    """(IP, name, TTL) for Service cluster IPs and pod IPs in the cluster zone."""
    zone = fwd.zone.rstrip(".").lower()
    out = []
    for e in fwd.table:
        rec = e.record
        if rec.kind not in ("service", "pod") or not _in_zone(rec.name, zone):
            continue
        ips = rec.ipv4 + (() if rec.mapped else rec.ipv6) + rec.dropped
        out += [(ip, rec.name, rec.ttl) for ip in ips]
    return out


def table_zone_names(fwd: Forwarding) -> tuple[str, ...]:
    """Every zone the resolver holds for this table: the cluster zone first, then the
    reverse zones, sorted."""
    reverse = {_reverse_zone(ip) for ip, _, _ in _ptr_sources(fwd)}
    return (_fqdn(fwd.zone), *sorted(reverse))


def _head(zone: str, cluster_zone: str, ttl: int) -> list[str]:
    ns = f"ns.dns.{cluster_zone}"
    return [f"$ORIGIN {zone}", f"$TTL {ttl}",
            f"@ {ttl} IN SOA {ns} hostmaster.{cluster_zone} 1 7200 1800 86400 {ttl}",
            f"@ {ttl} IN NS {ns}"]


def table_zones(fwd: Forwarding) -> dict[str, str]:
    """Zone name -> zone file text, for every zone of ``table_zone_names``."""
    zone = _fqdn(fwd.zone)
    bare = zone.rstrip(".")
    ttl = fwd.table_ttl
    lines = _head(zone, zone, ttl)
    lines.append(f'dns-version.{zone} {ttl} IN TXT "{SPEC_VERSION}"')
    for e in fwd.table:
        rec = e.record
        if rec.is_wildcard or rec.cluster or not _in_zone(rec.name, bare):
            continue
        name = _fqdn(rec.name)
        v4 = [*rec.ipv4, *(a for a in rec.dropped if ":" not in a)]
        v6 = [] if rec.mapped else [*rec.ipv6, *(a for a in rec.dropped if ":" in a)]
        lines += [f"{name} {rec.ttl} IN A {a}" for a in v4]
        lines += [f"{name} {rec.ttl} IN AAAA {a}" for a in v6]
        lines += [f"_{s.service}._{s.protocol}.{name} {rec.ttl} IN SRV {s.priority} "
                  f"{s.weight} {s.port} {_fqdn(s.target)}" for s in rec.srv]
    out = {zone: "\n".join(lines) + "\n"}
    reverse: dict[str, list[str]] = {}
    for ip, name, rec_ttl in sorted(_ptr_sources(fwd)):
        ptr = ipaddress.ip_address(ip).reverse_pointer + "."
        reverse.setdefault(_reverse_zone(ip), []).append(
            f"{ptr} {rec_ttl} IN PTR {_fqdn(name)}")
    for rzone, records in sorted(reverse.items()):
        out[rzone] = "\n".join(_head(rzone, zone, ttl) + sorted(set(records))) + "\n"
    return out


def outside_data(fwd: Forwarding) -> tuple[str, ...]:
    """``local-data`` records for the table's names outside the cluster zone, sorted."""
    bare = fwd.zone.rstrip(".").lower()
    out = []
    for e in fwd.table:
        rec = e.record
        if rec.is_wildcard or rec.cluster or _in_zone(rec.name, bare):
            continue
        name = _fqdn(rec.name)
        v4 = [*rec.ipv4, *(a for a in rec.dropped if ":" not in a)]
        v6 = [] if rec.mapped else [*rec.ipv6, *(a for a in rec.dropped if ":" in a)]
        out += [f"{name} {rec.ttl} IN A {a}" for a in v4]
        out += [f"{name} {rec.ttl} IN AAAA {a}" for a in v6]
    return tuple(sorted(out))


def table_file(directory: str, zone: str) -> str:
    """Where the zone file of ``zone`` lives in a resolver's directory."""
    return str(Path(directory) / f"table-{zone.rstrip('.') or 'root'}.zone")
