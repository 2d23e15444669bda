"""A record's DNS-table domains written as protobuf bytes directly.

``dns_table.py`` builds each record's ``DnsVirtualDomain`` messages once (the
domain cache keeps them), but a full build at 100,000 Services builds 100,000 of
each, and building a message field by field costs a dozen calls into the
protobuf runtime per record. Here the same bytes are written as the
deterministic serialisation writes them: fields in number order, proto3
scalars left out when zero, oneof members and message fields written whenever
set (even empty). ``tests/test_domain_wire.py`` checks them against the
messages for every shape of record.

Returns None when a value is outside what the fast path writes (a number
outside uint32 / int64, text that is not UTF-8): the caller builds the message
instead, which says what is wrong the way it always did.
"""

from __future__ import annotations

from controlplane.dns.records import NameRecord

# Tags (field number << 3 | wire type 2, length-delimited; 0, varint) of the fields
# written here: every field number is under 16, so each tag is one byte.
_TABLE_VIRTUAL_DOMAINS = b"\x12"  # DnsTable.virtual_domains = 2
_VD_NAME, _VD_ENDPOINT, _VD_TTL = b"\x0a", b"\x12", b"\x1a"  # DnsVirtualDomain 1, 2, 3
_EP_ADDRESS_LIST, _EP_CLUSTER, _EP_SERVICES = b"\x0a", b"\x12", b"\x1a"  # DnsEndpoint
_ADDRESS = b"\x0a"  # AddressList.address = 1
_SERVICE = b"\x0a"  # DnsServiceList.services = 1
_SVC_NAME, _SVC_PROTOCOL, _SVC_TTL, _SVC_TARGET = b"\x0a", b"\x12", b"\x1a", b"\x22"
_PROTOCOL_NAME = b"\x12"  # DnsServiceProtocol.name = 2
_TARGET_HOST = b"\x0a"  # DnsServiceTarget.host_name = 1
_TARGET_PRIORITY, _TARGET_WEIGHT, _TARGET_PORT = b"\x18", b"\x20", b"\x28"  # 3, 4, 5 varint
_DURATION_SECONDS = b"\x08"  # Duration.seconds = 1, varint

_SMALL = [bytes((i,)) for i in range(128)]
_UINT32 = 1 << 32
_INT64 = 1 << 63


def _varint(value: int) -> bytes:
    if value < 128:
        return _SMALL[value]
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def _text(tag: bytes, text: str) -> bytes:
    return _field(tag, text.encode())


_DURATIONS: dict[int, bytes] = {}


def _duration(seconds: int) -> bytes | None:
    """``Duration(seconds=...)`` (nanos 0); None outside int64."""
    out = _DURATIONS.get(seconds)
    if out is None:
        if not -_INT64 <= seconds < _INT64:
            return None
        # int64: a negative value is written as its 64-bit two's complement.
        out = _DURATION_SECONDS + _varint(seconds % (1 << 64)) if seconds else b""
        if len(_DURATIONS) < 1024:
            _DURATIONS[seconds] = out
    return out


def _name(rec: NameRecord) -> bytes:
    return _text(_VD_NAME, rec.name) if rec.name else b""


def address_domain(rec: NameRecord) -> bytes | None:
    """The record's address (or cluster) domain as a ``virtual_domains`` field, b"" when it
    has neither; None when the fast path does not write it."""
    try:
        if rec.ipv4 or rec.ipv6:
            listed = b"".join([_text(_ADDRESS, a) for a in rec.ipv4 + rec.ipv6])
            endpoint = _field(_EP_ADDRESS_LIST, listed)
        elif rec.cluster:
            endpoint = _text(_EP_CLUSTER, rec.cluster_name)
        else:
            return b""
        ttl = _duration(rec.ttl)
        if ttl is None:
            return None
        return _field(_TABLE_VIRTUAL_DOMAINS, _name(rec) + _field(_VD_ENDPOINT, endpoint)
                      + _field(_VD_TTL, ttl))
    except UnicodeEncodeError:
        return None


def srv_domain(rec: NameRecord) -> bytes | None:
    """The record's SRV domain as a ``virtual_domains`` field, b"" when it has no SRV; None
    when the fast path does not write it. One service per (service, protocol), its targets
    in the record's order (Envoy keeps one service per ``_service._proto`` name)."""
    if not rec.srv:
        return b""
    ttl = _duration(rec.ttl)
    if ttl is None:
        return None
    try:
        by_service: dict[tuple[str, str], list[bytes]] = {}
        for srv in rec.srv:
            if not (0 <= srv.port < _UINT32 and 0 <= srv.priority < _UINT32
                    and 0 <= srv.weight < _UINT32):
                return None
            target = _text(_TARGET_HOST, srv.target)
            if srv.priority:
                target += _TARGET_PRIORITY + _varint(srv.priority)
            if srv.weight:
                target += _TARGET_WEIGHT + _varint(srv.weight)
            if srv.port:
                target += _TARGET_PORT + _varint(srv.port)
            by_service.setdefault((srv.service, srv.protocol), []).append(
                _field(_SVC_TARGET, target))
        services = []
        ttl_field = _field(_SVC_TTL, ttl)
        for (service, protocol), targets in by_service.items():
            body = ((_text(_SVC_NAME, service) if service else b"")
                    + _field(_SVC_PROTOCOL, _text(_PROTOCOL_NAME, protocol))
                    + ttl_field + b"".join(targets))
            services.append(_field(_SERVICE, body))
        endpoint = _field(_EP_SERVICES, b"".join(services))
        return _field(_TABLE_VIRTUAL_DOMAINS, _name(rec) + _field(_VD_ENDPOINT, endpoint))
    except UnicodeEncodeError:
        return None
