"""TenantView -> ``envoy.data.dns.v3.DnsTable``.

Order matters to Envoy: SRV (``service_list``) domains are attached to the
suffix node created by an address domain, so address domains come first
(see Envoy's DnsFilterEnvoyConfig constructor).
"""

from __future__ import annotations

from envoy.data.dns.v3 import dns_table_pb2
from google.protobuf.duration_pb2 import Duration

from controlplane.records import SrvRecord
from controlplane.views import TenantView

DnsTable = dns_table_pb2.DnsTable


def dns_table(view: TenantView) -> dns_table_pb2.DnsTable:
    table = DnsTable()
    domains = table.virtual_domains
    for entry in view.entries:
        rec = entry.record
        addresses = rec.ipv4 + rec.ipv6
        if addresses:
            vd = domains.add(name=rec.name)
            vd.endpoint.address_list.address.extend(addresses)
            vd.answer_ttl.CopyFrom(Duration(seconds=rec.ttl))
        elif rec.cluster:
            vd = domains.add(name=rec.name)
            vd.endpoint.cluster_name = rec.cluster_name
            vd.answer_ttl.CopyFrom(Duration(seconds=rec.ttl))
    for entry in view.entries:
        rec = entry.record
        if not rec.srv:
            continue
        vd = domains.add(name=rec.name)
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
    return table
