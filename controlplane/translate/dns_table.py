"""TenantView -> ``envoy.data.dns.v3.DnsTable``.

Order matters to Envoy: SRV (``service_list``) domains are attached to the
suffix node created by an address domain, so address domains come first
(see Envoy's DnsFilterEnvoyConfig constructor).

A table is the concatenation of its records' virtual domains, the way
protobuf writes a repeated field. A caller that translates the same tenant
again and again (the hub) keeps a ``DomainCache`` and passes it in: the
domains of records that earlier tables had are reused (records are frozen
values, and a view that changes keeps most of them), so re-translating a view
after one change costs a lookup per name, not a message built field by field.
Without one every domain is built afresh; the bytes are the same.
"""

from __future__ import annotations

import operator

from envoy.data.dns.v3 import dns_table_pb2
from google.protobuf.duration_pb2 import Duration

from controlplane.dns.records import NameRecord, SrvRecord
from controlplane.dns.views import TenantView
from controlplane.translate import domain_wire, wire

DnsTable = dns_table_pb2.DnsTable
VIRTUAL_DOMAINS = DnsTable.DESCRIPTOR.fields_by_name["virtual_domains"].number


def address_domain_message(rec: NameRecord) -> bytes:
    """The record's address (or cluster) domain, as a ``virtual_domains`` field; b"" if none:
    built as a message (``domain_wire`` writes the same bytes directly)."""
    addresses = rec.ipv4 + rec.ipv6
    vd = DnsTable.DnsVirtualDomain(name=rec.name)
    if addresses:
        vd.endpoint.address_list.address.extend(addresses)
    elif rec.cluster:
        vd.endpoint.cluster_name = rec.cluster_name
    else:
        return b""
    vd.answer_ttl.CopyFrom(Duration(seconds=rec.ttl))
    return wire.length_delimited(VIRTUAL_DOMAINS, vd.SerializeToString(deterministic=True))


def srv_domain_message(rec: NameRecord) -> bytes:
    """The record's SRV domain, as a ``virtual_domains`` field; b"" if it has no SRV: built
    as a message (``domain_wire`` writes the same bytes directly)."""
    if not rec.srv:
        return b""
    vd = DnsTable.DnsVirtualDomain(name=rec.name)
    # Envoy keeps one service per _service._proto name: its targets go together.
    by_service: dict[tuple[str, str], list[SrvRecord]] = {}
    for srv in rec.srv:
        by_service.setdefault((srv.service, srv.protocol), []).append(srv)
    for (service, protocol), targets in by_service.items():
        svc = vd.endpoint.service_list.services.add(service_name=service)
        svc.protocol.name = protocol
        svc.ttl.CopyFrom(Duration(seconds=rec.ttl))
        for srv in targets:
            svc.targets.add(host_name=srv.target, port=srv.port, priority=srv.priority,
                            weight=srv.weight)
    return wire.length_delimited(VIRTUAL_DOMAINS, vd.SerializeToString(deterministic=True))


Domains = tuple[NameRecord, bytes, bytes]  # a record, its address and SRV domains
_ADDRESS_PART, _SRV_PART = operator.itemgetter(1), operator.itemgetter(2)


def _domains(rec: NameRecord) -> Domains:
    address, srv = domain_wire.domains(rec)
    return (rec, address_domain_message(rec) if address is None else address,
            srv_domain_message(rec) if srv is None else srv)


class DomainCache:
    """The serialised domains of the records tables had, by record name.

    Held by the caller (the hub keeps one for all its tenants: they share record
    objects). An entry is reused only for the very record object it was built from (the
    entry holds that object, so no other record can take its identity); a name whose
    record changed gets a new entry in place of the old. Bounded: when ``limit`` names
    have been stored, they become the previous generation, which is looked up until the
    next turn (an entry found there moves back), so the names of deleted Services go
    with the next turn. Safe to share between threads: an entry is checked against the
    record on every lookup, so an interleaving costs at worst a rebuild.
    """

    def __init__(self, limit: int = 1 << 18) -> None:
        self.limit = limit
        self._current: dict[str, Domains] = {}
        self._previous: dict[str, Domains] = {}

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def get(self, rec: NameRecord) -> Domains:
        name = rec.name
        hit = self._current.get(name)
        if hit is not None and hit[0] is rec:
            return hit
        hit = self._previous.get(name) if self._previous else None
        if hit is None or hit[0] is not rec:
            hit = _domains(rec)
        if len(self._current) >= self.limit:
            self._previous, self._current = self._current, {}
        self._current[name] = hit
        return hit


def dns_table_parts(view: TenantView, cache: DomainCache | None = None) -> list[bytes]:
    """The serialised table in pieces, to be joined (once, with what wraps it): every
    address domain, then every SRV domain (those of unchanged records from ``cache``)."""
    build = cache.get if cache is not None else _domains
    parts = [build(e.record) for e in view.entries]
    out = list(map(_ADDRESS_PART, parts))
    out += map(_SRV_PART, parts)
    return out


def dns_table_bytes(view: TenantView, cache: DomainCache | None = None) -> bytes:
    """The serialised table: ``dns_table_parts`` joined."""
    return b"".join(dns_table_parts(view, cache))


def dns_table(view: TenantView) -> dns_table_pb2.DnsTable:
    return DnsTable.FromString(dns_table_bytes(view))
