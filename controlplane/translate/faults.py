"""Test-only fault injection: make Envoy reject a configuration on purpose.

``serve --fault-invalid-name NAME`` (hidden from --help) gives NAME, in every
view that contains it, an address Envoy cannot parse, so Envoy NACKs that
view's listener. The fault tests use it to prove that a rejected version is
not resent, that the NACK is visible, and that other views are unaffected.
Never enable it in production.
"""

from __future__ import annotations

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.udp.dns_filter.v3 import dns_filter_pb2
from google.protobuf.message import Message

from controlplane.translate.types import LISTENER_TYPE

INVALID_ADDRESS = "not-an-ip-address"


def poison(resources: dict[str, dict[str, Message]], names: frozenset[str]) -> bool:
    """Replace the addresses of ``names`` in the DNS listener; True if anything changed."""
    changed = False
    for name, listener in list(resources.get(LISTENER_TYPE, {}).items()):
        if not isinstance(listener, listener_pb2.Listener) or not listener.listener_filters:
            continue
        config = dns_filter_pb2.DnsFilterConfig()
        if not listener.listener_filters[0].typed_config.Unpack(config):
            continue
        hit = False
        for vd in config.server_config.inline_dns_table.virtual_domains:
            if vd.name in names and vd.endpoint.HasField("address_list"):
                del vd.endpoint.address_list.address[:]
                vd.endpoint.address_list.address.append(INVALID_ADDRESS)
                hit = True
        if hit:
            poisoned = listener_pb2.Listener()
            poisoned.CopyFrom(listener)
            poisoned.listener_filters[0].typed_config.Pack(config)
            resources[LISTENER_TYPE][name] = poisoned
            changed = True
    return changed
