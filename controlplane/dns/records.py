"""Every name the cluster can answer, with its records: the input to every tenant view.

Pure. From the inventory:

- ClusterIP Service ``svc.ns.svc.<zone>``: A/AAAA from its cluster IPs, SRV
  ``_port._proto`` for each named TCP/UDP port.
- Headless Service: A/AAAA per ready endpoint (all with
  ``publishNotReadyAddresses``); ``<host>.svc.ns.svc.<zone>`` per endpoint,
  where ``<host>`` is the endpoint's hostname or its dashed IP
  (``10-1-0-7``); SRV per endpoint and named port with that target. No ready
  endpoint: no record (NXDOMAIN).
- ExternalName Service: Envoy cannot answer CNAME, so the name is answered
  from a STRICT_DNS cluster resolving the external name: the A/AAAA answers
  follow its real records.
- ServiceEntry host: its ``addresses``; else a VIP when auto-allocation is on;
  else STATIC endpoint IPs, or for DNS resolution a STRICT_DNS cluster over
  the endpoints (or the host itself); NONE without addresses: no record.
  Wildcard hosts only with ``addresses``. ``exportTo`` is kept on the record.
- Pod (as CoreDNS's ``pods verified``): ``<dashed IP>.ns.pod.<zone>`` per pod
  IP, ``10-1-2-3`` for IPv4 and the compressed IPv6 text with colons dashed
  (``fd00--1``) for IPv6; none for a pod without an IP or that has finished
  (``manifests`` drops the IPs of Succeeded/Failed pods). The record is
  scoped to the pod's namespace: only tenants that select it see the name.

Then per name: at most ``max_answers`` addresses per family (Envoy answers
at most 8 records and never sets TC), the lowest addresses, deterministically;
what was dropped is counted. With ``aaaa_mapped``, a name with IPv4 but no
IPv6 addresses also answers AAAA with the IPv4-mapped addresses
(``::ffff:a.b.c.d``) instead of Envoy's NXDOMAIN, which musl treats as a
failed lookup (facts #6).
"""

from __future__ import annotations

import functools
import ipaddress
import operator
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from controlplane.core.frozen import slot_init
from controlplane.core.inventory import Inventory
from controlplane.core.model import KINDS, EndpointSlice, Pod, Service, ServiceEntry
from controlplane.core.names import AddressKey, address_key, is_ipv4_text, name_problem, parse_ip
from controlplane.dns.vips import VipKey


@slot_init
@dataclass(frozen=True, slots=True)
class SrvRecord:
    service: str  # the port name, without the leading underscore
    protocol: str  # "tcp" or "udp"
    port: int
    target: str
    priority: int = 0
    weight: int = 100


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    host: str  # a DNS name the cluster resolves
    port: int


@slot_init
@dataclass(frozen=True, slots=True)
class NameRecord:
    """One name the cluster answers, with every address and SRV record it has."""

    name: str  # lower case; may be a wildcard "*.x"
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    srv: tuple[SrvRecord, ...] = ()
    sources: tuple[str, ...] = ()  # "Service ns/name", "ServiceEntry ns/name"
    kind: str = "service"
    ttl: int = 30
    cluster: tuple[ClusterTarget, ...] = ()  # answered from a STRICT_DNS cluster over these
    truncated: int = 0  # addresses left out by the answer cap
    # Those addresses (both families): the tenant resolver's table holds every address.
    dropped: tuple[str, ...] = ()
    mapped: bool = False  # ipv6 holds IPv4-mapped addresses
    export_to: frozenset[str] | None = None  # namespaces that may see it; None: all
    # A namespace: only tenants that select it see the name (pod records); None: no limit.
    namespace_scope: str | None = None

    @property
    def is_wildcard(self) -> bool:
        return self.name.startswith("*.")

    @property
    def cluster_name(self) -> str:
        return f"dns.{self.name}" if self.cluster else ""


@dataclass(frozen=True)
class RecordOptions:
    zone: str = "cluster.local"
    ttl: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 30))
    max_answers: int = 8
    aaaa_mapped: bool = True
    vips: Mapping[VipKey, str] = field(default_factory=dict)


@functools.lru_cache(maxsize=1 << 18)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    return parse_ip(text)


def _sorted_ips(addresses: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The valid addresses by family, each as ``ipaddress`` writes it, in ``ipaddress``
    order (``address_key``: no address objects)."""
    if isinstance(addresses, tuple) and len(addresses) == 1:  # the common case
        text = addresses[0]
        if ":" not in text:  # IPv4 or nothing; valid IPv4 text is its own canonical text
            return ((text,), ()) if is_ipv4_text(text) else ((), ())
        k = address_key(text)
        if k is None:
            return (), ()
        return ((k[2],), ()) if k[0] == 4 else ((), (k[2],))
    v4: list[AddressKey] = []
    v6: list[AddressKey] = []
    for a in set(addresses):
        k = address_key(a)
        if k is not None:
            (v4 if k[0] == 4 else v6).append(k)
    if len(v4) > 1:
        v4.sort()
    if len(v6) > 1:
        v6.sort()
    return tuple(k[2] for k in v4), tuple(k[2] for k in v6)


_srv_order = operator.attrgetter("service", "protocol", "port", "target")


def _sorted_srv(srv: Iterable[SrvRecord]) -> tuple[SrvRecord, ...]:
    """``srv`` without duplicates, by (service, protocol, port, target). When no two have
    the same order key (the rule: one target per port), sorting them as given is that
    already, without hashing each record for the set."""
    items = tuple(srv)
    if len(items) == 1:
        return items
    if len(items) == 2:  # the common case: two ports
        first, second = _srv_order(items[0]), _srv_order(items[1])
        if first < second:
            return items
        if second < first:
            return items[1], items[0]
    elif len(set(map(_srv_order, items))) == len(items):
        return tuple(sorted(items, key=_srv_order))
    return tuple(sorted(set(items), key=_srv_order))


def _record(name: str, sources: tuple[str, ...], *, kind: str, addresses: Iterable[str],
            srv: Iterable[SrvRecord], cluster: tuple[ClusterTarget, ...],
            export_to: frozenset[str] | None, scope: str | None,
            options: RecordOptions) -> NameRecord | None:
    """The record of ``name`` from everything said about it; None when it answers nothing."""
    cap = options.max_answers
    v4, v6 = _sorted_ips(addresses)
    truncated = 0
    dropped: tuple[str, ...] = ()
    if len(v4) > cap or len(v6) > cap:
        truncated = max(0, len(v4) - cap) + max(0, len(v6) - cap)
        dropped = v4[cap:] + v6[cap:]
        v4, v6 = v4[:cap], v6[:cap]
    mapped = False
    if v4 and not v6 and options.aaaa_mapped:
        v6 = (f"::ffff:{v4[0]}",) if len(v4) == 1 else tuple([f"::ffff:{a}" for a in v4])
        mapped = True
    records = _sorted_srv(srv) if srv else ()
    if not (v4 or v6 or records or cluster):
        return None
    # Positional, in field order (a third faster than by keyword, 100,000 times a build):
    # name, ipv4, ipv6, srv, sources, kind, ttl, cluster, truncated, dropped, mapped,
    # export_to, namespace_scope.
    return NameRecord(name, v4, v6, records, sources, kind, options.ttl.get(kind, 30),
                      () if (v4 or v6) else cluster, truncated, dropped, mapped, export_to,
                      scope)


class _Builder:
    def __init__(self, options: RecordOptions) -> None:
        self.options = options
        self.addresses: dict[str, set[str]] = defaultdict(set)
        self.srv: dict[str, set[SrvRecord]] = defaultdict(set)
        self.sources: dict[str, set[str]] = defaultdict(set)
        self.kind: dict[str, str] = {}
        self.cluster: dict[str, tuple[ClusterTarget, ...]] = {}
        self.export_to: dict[str, frozenset[str] | None] = {}
        self.scope: dict[str, str | None] = {}

    def add(self, name: str, source: str, kind: str, addresses: Iterable[str] = (),
            srv: Iterable[SrvRecord] = (), cluster: tuple[ClusterTarget, ...] = (),
            export_to: frozenset[str] | None = None, scope: str | None = None) -> None:
        # A name that a scoped object speaks for stays scoped (fail closed): a pod's IP
        # is never shown to a tenant outside the pod's namespace through another object.
        self.scope[name] = self.scope.get(name) or scope
        self.addresses[name].update(addresses)
        self.srv[name].update(srv)
        self.sources[name].add(source)
        self.kind.setdefault(name, kind)
        if cluster:
            self.cluster.setdefault(name, cluster)
        if name in self.export_to:
            old = self.export_to[name]
            self.export_to[name] = None if old is None or export_to is None else old | export_to
        else:
            self.export_to[name] = export_to

    def records(self) -> list[NameRecord]:
        out = []
        for name in sorted(self.sources):
            rec = _record(name, tuple(sorted(self.sources[name])), kind=self.kind[name],
                          addresses=self.addresses[name], srv=self.srv[name],
                          cluster=self.cluster.get(name, ()), export_to=self.export_to[name],
                          scope=self.scope[name], options=self.options)
            if rec is not None:
                out.append(rec)
        return out


def _dashed(ip: str) -> str:
    return ip.replace(".", "-").replace(":", "-")


# One object's say about one name:
# (name, source, kind, addresses, srv, cluster, export_to, namespace_scope).
Contribution = tuple[str, str, str, tuple[str, ...], tuple[SrvRecord, ...],
                     tuple[ClusterTarget, ...], frozenset[str] | None, str | None]


class _Collector:
    """Gathers contributions in the shape ``_Builder.add`` takes."""

    def __init__(self) -> None:
        self.items: list[Contribution] = []

    def add(self, name: str, source: str, kind: str, addresses: Iterable[str] = (),
            srv: Iterable[SrvRecord] = (), cluster: tuple[ClusterTarget, ...] = (),
            export_to: frozenset[str] | None = None, scope: str | None = None) -> None:
        self.items.append((name, source, kind, tuple(addresses), tuple(srv), cluster,
                           export_to, scope))


_SRV_PROTOCOLS = {"TCP": "tcp", "UDP": "udp"}  # the port protocols SRV records have


@functools.lru_cache(maxsize=1 << 16)
def _service(svc: Service, slices: tuple[EndpointSlice, ...], zone: str
             ) -> tuple[Contribution, ...]:
    ns, name = svc.namespace, svc.name
    fqdn = f"{name}.{ns}.svc.{zone}"
    source = f"Service {ns}/{name}"
    if not svc.headless and svc.type != "ExternalName":  # ClusterIP: the common case
        # what b.add(fqdn, source, "service", svc.cluster_ips, srv) collects
        records = tuple([SrvRecord(p.name, _SRV_PROTOCOLS[p.protocol], p.port, fqdn)
                         for p in svc.ports if p.name and p.protocol in _SRV_PROTOCOLS])
        return ((fqdn, source, "service", tuple(svc.cluster_ips), records, (), None, None),)
    b = _Collector()
    named = [p for p in svc.ports if p.name and p.protocol in _SRV_PROTOCOLS]
    if svc.type == "ExternalName":
        port = svc.ports[0].port if svc.ports else 80
        b.add(fqdn, source, "externalname", cluster=(ClusterTarget(svc.external_name, port),))
    elif svc.headless:
        for sl in slices:
            slice_ports = {p.name: p for p in sl.ports}
            for ep in sl.endpoints:
                if not (ep.ready or svc.publish_not_ready) or not ep.addresses:
                    continue
                host = ep.hostname or _dashed(ep.addresses[0])
                target = f"{host}.{fqdn}"
                b.add(fqdn, source, "headless", ep.addresses)
                b.add(target, source, "headless", ep.addresses)
                srv = [SrvRecord(service=p.name, protocol=p.protocol.lower(),
                                 port=slice_ports[p.name].port if p.name in slice_ports
                                 else p.port, target=target) for p in named]
                if srv:
                    b.add(fqdn, source, "headless", srv=srv)
    return tuple(b.items)


@functools.lru_cache(maxsize=1 << 16)
def _service_entry(se: ServiceEntry, vips: tuple[tuple[str, str], ...]
                   ) -> tuple[Contribution, ...]:
    b = _Collector()
    ns, name = se.namespace, se.name
    source = f"ServiceEntry {ns}/{name}"
    export: frozenset[str] | None = None
    if se.export_to and "*" not in se.export_to:
        export = frozenset(ns if x == "." else x for x in se.export_to)
    vip_of = dict(vips)
    for host in se.hosts:
        wildcard = host.startswith("*.")
        vip = vip_of.get(host)
        if se.addresses:
            b.add(host, source, "serviceentry", se.addresses, export_to=export)
        elif wildcard:
            continue  # nothing to answer a wildcard with but declared addresses
        elif vip:
            b.add(host, source, "serviceentry", (vip,), export_to=export)
        elif se.resolution == "STATIC":
            b.add(host, source, "serviceentry",
                  [e.address for e in se.endpoints if parse_ip(e.address)], export_to=export)
        elif se.resolution in ("DNS", "DNS_ROUND_ROBIN"):
            port = se.ports[0].port if se.ports else 80
            targets = tuple(ClusterTarget(e.address, port) for e in se.endpoints
                            if e.address and parse_ip(e.address) is None)
            ips = [e.address for e in se.endpoints if parse_ip(e.address)]
            if ips:
                b.add(host, source, "serviceentry", ips, export_to=export)
            else:
                b.add(host, source, "serviceentry", export_to=export,
                      cluster=targets or (ClusterTarget(host, port),))
    return tuple(b.items)


def pod_name(ip: str, namespace: str, zone: str) -> str | None:
    """``10-1-2-3.ns.pod.<zone>`` / ``fd00--1.ns.pod.<zone>``; None when not a valid name."""
    addr = _ip(ip)
    if addr is None:
        return None
    name = f"{_dashed(str(addr))}.{namespace}.pod.{zone}"
    # "::1" or "fd00::" would give a label starting or ending with a dash.
    return None if name_problem(name) else name


@functools.lru_cache(maxsize=1 << 16)
def _pod(pod: Pod, zone: str) -> tuple[Contribution, ...]:
    b = _Collector()
    source = f"Pod {pod.namespace}/{pod.name}"
    for ip in pod.ips:
        name = pod_name(ip, pod.namespace, zone)
        if name is not None:
            b.add(name, source, "pod", (str(_ip(ip)),), scope=pod.namespace)
    return tuple(b.items)


OptionsKey = tuple[str, tuple[tuple[str, int], ...], int, bool]


def options_key(opts: RecordOptions) -> OptionsKey:
    """The hashable part of the options that shapes records (VIPs live in contributions)."""
    return (opts.zone, tuple(sorted(opts.ttl.items())), opts.max_answers, opts.aaaa_mapped)


@functools.lru_cache(maxsize=64)
def options_from_key(key: OptionsKey) -> RecordOptions:
    """The options ``key`` stands for (one shared object per key: do not change its ttl)."""
    zone, ttl, max_answers, mapped = key
    return RecordOptions(zone=zone, ttl=dict(ttl), max_answers=max_answers, aaaa_mapped=mapped)


def single_record(contribution: Contribution, options: RecordOptions) -> NameRecord | None:
    """The record of a name only one object speaks for (the common case): what
    ``_Builder`` makes of that one contribution."""
    name, source, kind, addresses, srv, cluster, export_to, scope = contribution
    if len(addresses) == 1 and options.max_answers > 0:
        a = addresses[0]
        if ":" not in a and is_ipv4_text(a):
            # One IPv4 address (a ClusterIP Service: the common case): what _record makes
            # of it, without its steps (tests/test_records.py compares the two).
            mapped = bool(options.aaaa_mapped)
            v6: tuple[str, ...] = (f"::ffff:{a}",) if mapped else ()
            # the contribution's own tuple when it is one (no copy per name)
            v4 = addresses if type(addresses) is tuple else (a,)
            return NameRecord(name, v4, v6, _sorted_srv(srv) if srv else (), (source,), kind,
                              options.ttl.get(kind, 30), (), 0, (), mapped, export_to, scope)
    return _record(name, (source,), kind=kind, addresses=addresses, srv=srv,
                   cluster=cluster, export_to=export_to, scope=scope, options=options)


@functools.lru_cache(maxsize=1 << 17)
def _single(contribution: Contribution, key: OptionsKey) -> NameRecord | None:
    """``single_record``, memoised (for ``cluster_records``)."""
    return single_record(contribution, options_from_key(key))


def cluster_records(inventory: Inventory, *, zone: str = "cluster.local",
                    options: RecordOptions | None = None) -> list[NameRecord]:
    """Every name the cluster answers, sorted by name.

    Incremental in effect: each object's contributions and each single-source
    name's record are memoised on the (frozen) objects, so a rebuild after one
    change redoes the work for that object's names only.
    """
    opts = options or RecordOptions(zone=zone)
    slices: dict[tuple[str, str], list[EndpointSlice]] = {}
    for (ns, _), sl in sorted(inventory.endpoint_slices.items()):
        slices.setdefault((ns, sl.service_name), []).append(sl)
    vips: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for (ns, name, host), vip in sorted(opts.vips.items()):
        vips.setdefault((ns, name), []).append((host, vip))
    by_name: dict[str, list[Contribution]] = {}
    for key, svc in inventory.services.items():
        for c in _service(svc, tuple(slices.get(key, ())) if svc.headless else (), opts.zone):
            by_name.setdefault(c[0], []).append(c)
    for key, se in inventory.service_entries.items():
        for c in _service_entry(se, tuple(vips.get(key, ()))):
            by_name.setdefault(c[0], []).append(c)
    for pod in inventory.pods.values():
        for c in _pod(pod, opts.zone):
            by_name.setdefault(c[0], []).append(c)
    shape = options_key(opts)
    out = []
    merged = _Builder(opts)
    for name in sorted(by_name):
        contributions = by_name[name]
        if len(contributions) == 1:
            rec = _single(contributions[0], shape)
            if rec is not None:
                out.append(rec)
        else:
            for c in sorted(contributions, key=lambda c: c[1]):
                merged.add(*c)
    if merged.sources:
        out = sorted(out + merged.records(), key=lambda r: r.name)
    return out

