"""DNS wire format for the table zones' primary (``primary.py``): queries read, answers
made from zone-file lines. Pure.

Only what a resolver asks a primary and what the table's zones hold: a query's header,
question and (IXFR, RFC 1995) the SOA in its authority section; records of the types
``unbound_table.py`` writes (A, AAAA, SRV, PTR, CNAME, TXT, NS, SOA), each line
``owner ttl IN TYPE rdata`` with absolute owners (or ``@``). Names are written
uncompressed (an answer is a change's few records, not a zone).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from controlplane.core.errors import WireError

A, NS, CNAME, SOA, PTR, TXT, AAAA, SRV = 1, 2, 5, 6, 12, 16, 28, 33
IXFR, AXFR = 251, 252
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, NOTAUTH = 0, 1, 2, 3, 4, 5, 9
QR, AA, TC = 0x8000, 0x0400, 0x0200
TYPES = {"A": A, "NS": NS, "CNAME": CNAME, "SOA": SOA, "PTR": PTR, "TXT": TXT, "AAAA": AAAA,
         "SRV": SRV}
MAX_MESSAGE = 60000  # bytes of records in one TCP message (its limit: 65535)


@dataclass(frozen=True, slots=True)
class Query:
    id: int
    flags: int
    qname: str  # lower case, with the trailing dot
    qtype: int
    qclass: int
    question: bytes  # the question section as sent, for the answer
    serial: int | None  # IXFR: the serial in the authority section's SOA


def name_wire(name: str, origin: str = ".") -> bytes:
    """``name`` (absolute, or ``@`` for ``origin``) in wire format, uncompressed."""
    if name == "@":
        name = origin
    if not name.endswith("."):
        raise WireError(f"not an absolute name: {name!r}")
    out = bytearray()
    for label in name[:-1].split(".") if name != "." else ():
        raw = label.encode()
        if not 0 < len(raw) < 64:
            raise WireError(f"bad label in {name!r}")
        out += bytes([len(raw)]) + raw
    return bytes(out + b"\0")


def _read_name(wire: bytes, at: int) -> tuple[str, int]:
    """The name at ``at`` (compression followed) and the offset after it."""
    labels: list[str] = []
    end = -1
    hops = 0
    while True:
        if at >= len(wire):
            raise WireError("name past the message's end")
        n = wire[at]
        if n & 0xC0 == 0xC0:
            if at + 1 >= len(wire) or hops > 32:
                raise WireError("bad compression pointer")
            if end < 0:
                end = at + 2
            at = ((n & 0x3F) << 8) | wire[at + 1]
            hops += 1
            continue
        if n == 0:
            name = ".".join(labels).lower() + "."
            return ("." if name == "." else name), (end if end >= 0 else at + 1)
        labels.append(wire[at + 1:at + 1 + n].decode("ascii", errors="replace"))
        at += 1 + n


def parse_query(wire: bytes) -> Query:
    """The header, question and (IXFR) the client's serial of a query."""
    if len(wire) < 12:
        raise WireError("shorter than a header")
    qid, flags, qd, an, ns, _ = struct.unpack("!HHHHHH", wire[:12])
    if qd != 1:
        raise WireError(f"{qd} questions")
    qname, at = _read_name(wire, 12)
    if at + 4 > len(wire):
        raise WireError("question cut short")
    qtype, qclass = struct.unpack("!HH", wire[at:at + 4])
    question = wire[12:at + 4]
    at += 4
    serial = None
    for _ in range(an):  # (none expected) skipped
        at = _skip_rr(wire, at)[0]
    for _ in range(ns):
        _, after_name = _read_name(wire, at)
        rtype = struct.unpack("!H", wire[after_name:after_name + 2])[0]
        at, rdata_end = _skip_rr(wire, at)
        if rtype == SOA and rdata_end >= 20:
            serial = struct.unpack("!I", wire[rdata_end - 20:rdata_end - 16])[0]
    return Query(qid, flags, qname, qtype, qclass, question, serial)


def _skip_rr(wire: bytes, at: int) -> tuple[int, int]:
    """The offset after the record at ``at``, and where its rdata ends."""
    _, at = _read_name(wire, at)
    if at + 10 > len(wire):
        raise WireError("record cut short")
    rdlen = struct.unpack("!H", wire[at + 8:at + 10])[0]
    end = at + 10 + rdlen
    if end > len(wire):
        raise WireError("rdata past the message's end")
    return end, end


def rr_wire(line: str, origin: str) -> bytes:
    """One zone-file line (``owner ttl IN TYPE rdata``) as a wire record."""
    try:
        owner, ttl, cls, typ, rdata = line.split(None, 4)
    except ValueError as exc:
        raise WireError(f"not a record line: {line!r}") from exc
    rtype = TYPES.get(typ.upper())
    if cls.upper() != "IN" or rtype is None:
        raise WireError(f"unsupported record: {line!r}")
    body = _rdata(rtype, rdata.strip(), origin)
    return (name_wire(owner, origin) + struct.pack("!HHIH", rtype, CLASS_IN, int(ttl), len(body))
            + body)


def _rdata(rtype: int, text: str, origin: str) -> bytes:
    if rtype == A:
        return ipaddress.IPv4Address(text).packed
    if rtype == AAAA:
        return ipaddress.IPv6Address(text).packed
    if rtype in (NS, CNAME, PTR):
        return name_wire(text, origin)
    if rtype == SRV:
        prio, weight, port, target = text.split()
        return struct.pack("!HHH", int(prio), int(weight), int(port)) + name_wire(target, origin)
    if rtype == SOA:
        mname, rname, *numbers = text.split()
        return (name_wire(mname, origin) + name_wire(rname, origin)
                + struct.pack("!IIIII", *(int(n) for n in numbers)))
    # TXT: one or more quoted strings without escapes (the table's only TXT: dns-version)
    parts = [p for p in text.split('"') if p.strip()]
    out = bytearray()
    for part in parts:
        raw = part.encode()
        if len(raw) > 255:
            raise WireError("TXT string over 255 bytes")
        out += bytes([len(raw)]) + raw
    return bytes(out)


def response(query: Query, records: list[bytes], *, rcode: int = NOERROR,
             truncated: bool = False) -> list[bytes]:
    """The answer to ``query``: ``records`` in its answer section, split into messages
    under ``MAX_MESSAGE`` bytes (TCP; each carries the question)."""
    flags = QR | AA | (query.flags & 0x0100) | rcode | (TC if truncated else 0)
    chunks: list[list[bytes]] = [[]]
    size = 0
    for rr in records:
        if chunks[-1] and size + len(rr) > MAX_MESSAGE:
            chunks.append([])
            size = 0
        chunks[-1].append(rr)
        size += len(rr)
    return [struct.pack("!HHHHHH", query.id, flags, 1, len(chunk), 0, 0) + query.question
            + b"".join(chunk) for chunk in chunks]


def error(wire: bytes, rcode: int) -> bytes | None:
    """An answer with ``rcode`` to a message that could not be read whole (its header and
    id kept; no question); None when not even the header is there."""
    if len(wire) < 12:
        return None
    qid, flags = struct.unpack("!HH", wire[:4])
    return struct.pack("!HHHHHH", qid, QR | (flags & 0x7900) | rcode, 0, 0, 0, 0)
