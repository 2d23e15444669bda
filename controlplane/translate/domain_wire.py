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

import operator

from controlplane.dns.records import NameRecord, SrvRecord
from controlplane.translate.wire import SMALL_VARINTS, varint

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

_UINT32 = 1 << 32
_INT64 = 1 << 63


def _field(tag: bytes, payload: bytes) -> bytes:
    n = len(payload)
    return tag + (SMALL_VARINTS[n] if n < 128 else varint(n)) + payload


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
        out = _DURATION_SECONDS + varint(seconds % (1 << 64)) if seconds else b""
        if len(_DURATIONS) < 1024:
            _DURATIONS[seconds] = out
    return out


_TTL_FIELDS: dict[int, bytes | None] = {}


def _ttl_field(seconds: int) -> bytes | None:
    """``answer_ttl`` of a virtual domain (memoised: a cluster has few TTLs)."""
    out = _TTL_FIELDS.get(seconds, b"-")
    if out == b"-":
        ttl = _duration(seconds)
        out = None if ttl is None else _field(_VD_TTL, ttl)
        if len(_TTL_FIELDS) < 1024:
            _TTL_FIELDS[seconds] = out
    return out


def _name(rec: NameRecord) -> bytes:
    return _text(_VD_NAME, rec.name) if rec.name else b""


def domains(rec: NameRecord) -> tuple[bytes | None, bytes | None]:
    """``(address_domain(rec), srv_domain(rec))``, the name written once."""
    try:
        name = _name(rec)
    except UnicodeEncodeError:
        return None, None
    return _address_domain(rec, name), _srv_domain(rec, name)


def address_domain(rec: NameRecord) -> bytes | None:
    """The record's address (or cluster) domain as a ``virtual_domains`` field, b"" when it
    has neither; None when the fast path does not write it."""
    return domains(rec)[0]


def _address_domain(rec: NameRecord, name: bytes) -> bytes | None:
    try:
        addresses = rec.ipv4 + rec.ipv6
        if addresses:
            listed: list[bytes] = []
            for a in addresses:
                text = a.encode()
                n = len(text)
                listed += (_ADDRESS, SMALL_VARINTS[n] if n < 128 else varint(n), text)
            body = b"".join(listed)
            n = len(body)
            endpoint = _EP_ADDRESS_LIST + (SMALL_VARINTS[n] if n < 128 else varint(n)) + body
        elif rec.cluster:
            endpoint = _text(_EP_CLUSTER, rec.cluster_name)
        else:
            return b""
    except UnicodeEncodeError:
        return None
    ttl = _TTL_FIELDS.get(rec.ttl) or _ttl_field(rec.ttl)  # memoised (never b"")
    if ttl is None:
        return None
    n = len(endpoint)
    body = b"".join((name, _VD_ENDPOINT, SMALL_VARINTS[n] if n < 128 else varint(n), endpoint,
                     ttl))
    n = len(body)
    return _TABLE_VIRTUAL_DOMAINS + (SMALL_VARINTS[n] if n < 128 else varint(n)) + body


def _len(n: int) -> bytes:
    return SMALL_VARINTS[n] if n < 128 else varint(n)


_MEMO_LIMIT = 4096  # entries per memo below; past it, values are made and not kept
_SERVICE_HEADS: dict[tuple[str, str, bytes], bytes] = {}
_TARGET_NUMBERS: dict[tuple[int, int, int], bytes | None] = {}


def _service_head(service: str, protocol: str, ttl: bytes) -> bytes:
    """A ``DnsService``'s fields before its targets: name, protocol, ttl (memoised: a
    cluster has few port names)."""
    key = (service, protocol, ttl)
    out = _SERVICE_HEADS.get(key)
    if out is None:
        out = ((_text(_SVC_NAME, service) if service else b"")
               + _field(_SVC_PROTOCOL, _text(_PROTOCOL_NAME, protocol))
               + _field(_SVC_TTL, ttl))
        if len(_SERVICE_HEADS) < _MEMO_LIMIT:
            _SERVICE_HEADS[key] = out
    return out


def _target_numbers(priority: int, weight: int, port: int) -> bytes | None:
    """A ``DnsServiceTarget``'s number fields (memoised); None outside uint32."""
    key = (priority, weight, port)
    out = _TARGET_NUMBERS.get(key, b"-")
    if out == b"-":
        if 0 <= port < _UINT32 and 0 <= priority < _UINT32 and 0 <= weight < _UINT32:
            out = ((_TARGET_PRIORITY + varint(priority) if priority else b"")
                   + (_TARGET_WEIGHT + varint(weight) if weight else b"")
                   + (_TARGET_PORT + varint(port) if port else b""))
        else:
            out = None
        if len(_TARGET_NUMBERS) < _MEMO_LIMIT:
            _TARGET_NUMBERS[key] = out
    return out


def srv_domain(rec: NameRecord) -> bytes | None:
    """The record's SRV domain as a ``virtual_domains`` field, b"" when it has no SRV; None
    when the fast path does not write it. One service per (service, protocol), its targets
    in the record's order (Envoy keeps one service per ``_service._proto`` name)."""
    return domains(rec)[1]


_SHAPE = operator.attrgetter("service", "protocol", "priority", "weight", "port")
_SRV_TEMPLATES: dict[tuple[object, ...], list[bytes] | None] = {}


def _srv_domain(rec: NameRecord, name: bytes) -> bytes | None:
    srv = rec.srv
    if not srv:
        return b""
    if name:
        own = rec.name
        for s in srv:
            if s.target != own:
                break
        else:
            # Every target is the record's own name (a ClusterIP Service's SRV records):
            # the bytes are a template of the ports, the TTL and the name's length, with
            # the name's field (which is each target's host field too) written between.
            key = (rec.ttl, len(name), *map(_SHAPE, srv))
            pieces = _SRV_TEMPLATES.get(key, _NO_TEMPLATE)
            if pieces is _NO_TEMPLATE:
                pieces = _srv_template(srv, rec.ttl, len(name))
                if len(_SRV_TEMPLATES) < _MEMO_LIMIT:
                    _SRV_TEMPLATES[key] = pieces
            return None if pieces is None else name.join(pieces)
    return _srv_any(rec, name)


_NO_TEMPLATE: list[bytes] = []
_HOST = None  # where the name's field goes in a template's parts
_Parts = list[bytes | None]


def _size(parts: _Parts, host: int) -> int:
    return sum(host if p is None else len(p) for p in parts)


def _srv_template(srv: tuple[SrvRecord, ...], seconds: int, host: int) -> list[bytes] | None:
    """``_srv_any``'s bytes for a record whose targets are all its own name, as the pieces
    between the name's fields (``host`` bytes long each): name field, then the domain."""
    ttl = _duration(seconds)
    if ttl is None:
        return None
    try:
        by_service: dict[tuple[str, str], _Parts] = {}
        for s in srv:
            numbers = _target_numbers(s.priority, s.weight, s.port)
            if numbers is None:
                return None
            field: _Parts = [_SVC_TARGET + _len(host + len(numbers)), _HOST, numbers]
            group = by_service.get((s.service, s.protocol))
            if group is None:
                by_service[(s.service, s.protocol)] = field
            else:
                group += field
        endpoint: _Parts = []
        for (service, protocol), targets in by_service.items():
            body = [_service_head(service, protocol, ttl), *targets]
            endpoint += [_SERVICE + _len(_size(body, host)), *body]
    except UnicodeEncodeError:
        return None
    services = [_EP_SERVICES + _len(_size(endpoint, host)), *endpoint]
    inner = [_HOST, _VD_ENDPOINT + _len(_size(services, host)), *services]
    parts = [_TABLE_VIRTUAL_DOMAINS + _len(_size(inner, host)), *inner]
    pieces = [b""]
    for p in parts:
        if p is None:
            pieces.append(b"")
        else:
            pieces[-1] += p
    return pieces


def _srv_any(rec: NameRecord, name: bytes) -> bytes | None:
    ttl = _duration(rec.ttl)
    if ttl is None:
        return None
    try:
        hosts: dict[str, bytes] = {}  # a record's targets are mostly one name
        by_service: dict[tuple[str, str], list[bytes]] = {}
        for srv in rec.srv:
            numbers = _target_numbers(srv.priority, srv.weight, srv.port)
            if numbers is None:
                return None
            host = hosts.get(srv.target)
            if host is None:
                host = hosts[srv.target] = _text(_TARGET_HOST, srv.target)
            target = host + numbers
            field = _SVC_TARGET + _len(len(target)) + target
            group = by_service.get((srv.service, srv.protocol))
            if group is None:
                by_service[(srv.service, srv.protocol)] = [field]
            else:
                group.append(field)
        services = []
        for (service, protocol), targets in by_service.items():
            body = _service_head(service, protocol, ttl) + b"".join(targets)
            services.append(_SERVICE + _len(len(body)) + body)
        endpoint = _field(_EP_SERVICES, b"".join(services))
        return _field(_TABLE_VIRTUAL_DOMAINS, name + _field(_VD_ENDPOINT, endpoint))
    except UnicodeEncodeError:
        return None
