"""TenantView -> ``envoy.data.dns.v3.DnsTable``.

Order matters to Envoy: SRV (``service_list``) domains are attached to the
suffix node created by an address domain, so address domains come first
(see Envoy's DnsFilterEnvoyConfig constructor).

Each record's virtual domains are serialised once and kept (records are
frozen values, and a view that changes keeps most of them): a table is the
concatenation of its domains, the way protobuf writes a repeated field, so
re-translating a view after one change costs a lookup per name, not a
message built field by field.
"""

from __future__ import annotations

from envoy.data.dns.v3 import dns_table_pb2
from google.protobuf.duration_pb2 import Duration

from controlplane.dns.records import NameRecord, SrvRecord
from controlplane.dns.views import TenantView
from controlplane.translate import wire

DnsTable = dns_table_pb2.DnsTable
VIRTUAL_DOMAINS = DnsTable.DESCRIPTOR.fields_by_name["virtual_domains"].number


def _address_domain(rec: NameRecord) -> bytes:
    """The record's address (or cluster) domain, as a ``virtual_domains`` field; b"" if none."""
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


def _srv_domain(rec: NameRecord) -> bytes:
    """The record's SRV domain, as a ``virtual_domains`` field; b"" if it has no SRV."""
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


# By record identity (hashing a record costs more than building nothing): a record is
# kept alive by its entry here, so its id is not reused while the entry stands.
_BY_ID: dict[int, tuple[NameRecord, bytes, bytes]] = {}
_BY_ID_MAX = 1 << 18


def _domains(rec: NameRecord) -> tuple[NameRecord, bytes, bytes]:
    hit = _BY_ID.get(id(rec))
    if hit is None or hit[0] is not rec:
        if len(_BY_ID) >= _BY_ID_MAX:
            _BY_ID.clear()
        hit = _BY_ID[id(rec)] = (rec, _address_domain(rec), _srv_domain(rec))
    return hit


def dns_table_bytes(view: TenantView) -> bytes:
    """The serialised table: every address domain, then every SRV domain."""
    domains = [_domains(e.record) for e in view.entries]
    return b"".join([*(d[1] for d in domains), *(d[2] for d in domains)])


def dns_table(view: TenantView) -> dns_table_pb2.DnsTable:
    return DnsTable.FromString(dns_table_bytes(view))
