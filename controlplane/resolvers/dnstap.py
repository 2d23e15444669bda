"""What a tenant resolver reports of each answer: dnstap over Frame Streams (pure).

unbound 1.17 (Debian 12 is built with ``--enable-dnstap``) sends one dnstap
``CLIENT_RESPONSE`` message per answer to a unix socket when its config has a
``dnstap:`` section (``translate/unbound.py``). Its writer thread queues the
messages (bounded; it drops when nobody reads) and never blocks the answer path
(measured in docs/tenant-resolver.md, "Query reports").

This module holds the wire formats only, so any byte string can be thrown at it:

- Frame Streams (the bidirectional handshake of the ``fstrm`` library): a data
  frame is a 4-byte big-endian length and the payload; a control frame is a zero
  length, a 4-byte control length, a 4-byte type and its fields.
- the dnstap protobuf (``dnstap.proto``): only the fields needed here are read,
  with a minimal decoder (no generated code);
- the DNS message the response carries: the question's name and type, the rcode.

Anything malformed is ``None`` (a counted drop), never an exception.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

CONTENT_TYPE = b"protobuf:dnstap.Dnstap"
# Frame Streams control types.
ACCEPT, START, STOP, READY, FINISH = 1, 2, 3, 4, 5
FIELD_CONTENT_TYPE = 1
MAX_FRAME = 65_536 + 1024  # a DNS message is at most 64 KiB; dnstap adds little
CLIENT_RESPONSE = 6  # dnstap Message.Type
TCP_PROTOCOLS = {2, 3, 4, 5}  # dnstap SocketProtocol: TCP, DOT, DOH, DNSCryptTCP

QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT",
          28: "AAAA", 33: "SRV", 35: "NAPTR", 43: "DS", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS",
          99: "SPF", 252: "AXFR", 255: "ANY", 257: "CAA"}  # HINFO: the front's ANY (RFC 8482)
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


@dataclass(frozen=True, slots=True)
class ResolverReply:
    """One answer a tenant resolver sent to a client."""

    time: float  # when it was sent (the resolver's clock, seconds since the epoch)
    source: str  # the client's address ("" when the message had none)
    tcp: bool  # came over TCP or TLS (the sidecar's hop, the front); False: UDP
    name: str  # the question's name, no trailing dot, as the client spelled it
    type: str  # "A", "TXT", ..., "TYPE1234"
    rcode: str  # "NOERROR", "NXDOMAIN", ..., "RCODE11"
    port: int = 0  # the client's port
    id: int = 0  # the DNS message id: with the address and port, which query it answers


def control_frame(kind: int, *, content_type: bool = True) -> bytes:
    """A Frame Streams control frame (ACCEPT and FINISH are what a reader sends)."""
    body = struct.pack(">I", kind)
    if content_type:
        body += struct.pack(">II", FIELD_CONTENT_TYPE, len(CONTENT_TYPE)) + CONTENT_TYPE
    return struct.pack(">II", 0, len(body)) + body


class FrameReader:
    """Cuts a byte stream into frames; partial frames wait for more bytes.

    ``feed`` returns ``(control_type, b"")`` for a control frame and ``(0, payload)``
    for a data frame. A length over ``MAX_FRAME`` raises ``ValueError`` (the stream
    is out of step: the caller drops the connection), so memory stays bounded.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out: list[tuple[int, bytes]] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 4:
            (length,) = struct.unpack_from(">I", buf, pos)
            if length == 0:  # control frame
                if len(buf) - pos < 8:
                    break
                (clen,) = struct.unpack_from(">I", buf, pos + 4)
                if clen < 4 or clen > 4096:
                    raise ValueError(f"bad control frame length {clen}")
                if len(buf) - pos < 8 + clen:
                    break
                (kind,) = struct.unpack_from(">I", buf, pos + 8)
                out.append((kind, b""))
                pos += 8 + clen
                continue
            if length > MAX_FRAME:
                raise ValueError(f"frame of {length} bytes")
            if len(buf) - pos < 4 + length:
                break
            out.append((0, bytes(buf[pos + 4:pos + 4 + length])))
            pos += 4 + length
        del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> dict[int, int | bytes]:
    """The last value of each field of one protobuf message (varints, byte strings and
    32-bit fixed fields; 64-bit ones are skipped)."""
    out: dict[int, int | bytes] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            out[number], pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated field")
            out[number] = data[pos:pos + length]
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            if pos + 4 > len(data):
                raise ValueError("truncated fixed32")
            out[number] = struct.unpack_from("<I", data, pos)[0]
            pos += 4
        else:
            raise ValueError(f"wire type {wire}")
    if pos != len(data):
        raise ValueError("truncated fixed field")
    return out


def _question(message: bytes) -> tuple[str, int, int]:
    """(name, qtype, rcode) of a DNS message with at least one question (the first)."""
    if len(message) < 12:
        raise ValueError("short DNS message")
    rcode = message[3] & 0x0F
    if struct.unpack_from(">H", message, 4)[0] < 1:
        raise ValueError("no question")
    labels: list[str] = []
    pos = 12
    while True:
        if pos >= len(message):
            raise ValueError("truncated name")
        length = message[pos]
        pos += 1
        if length == 0:
            break
        if length & 0xC0:
            raise ValueError("compressed question name")
        label = message[pos:pos + length]
        if len(label) != length:
            raise ValueError("truncated label")
        labels.append("".join(chr(b) if 0x21 <= b <= 0x7E and b not in (0x2E, 0x5C)
                              else f"\\{b:03d}" for b in label))
        pos += length
    if pos + 4 > len(message):
        raise ValueError("truncated question")
    qtype = struct.unpack_from(">H", message, pos)[0]
    return ".".join(labels), qtype, rcode


def decode(payload: bytes) -> ResolverReply | None:
    """A dnstap ``CLIENT_RESPONSE`` frame's reply; None for anything else or malformed."""
    try:
        top = _fields(payload)
        message = top.get(14)
        if not isinstance(message, bytes):
            return None
        msg = _fields(message)
        if msg.get(1) != CLIENT_RESPONSE:
            return None
        response = msg.get(14)
        if not isinstance(response, bytes):
            return None
        name, qtype, rcode = _question(response)
        address = msg.get(4)
        source = (str(ipaddress.ip_address(address))
                  if isinstance(address, bytes) and len(address) in (4, 16) else "")
        seconds, nanos = msg.get(12), msg.get(13)  # response_time_sec, response_time_nsec
        sent = float(seconds) if isinstance(seconds, int) else 0.0
        if sent and isinstance(nanos, int) and nanos < 1_000_000_000:
            sent += nanos / 1e9
        protocol, port = msg.get(3), msg.get(6)
        return ResolverReply(
            time=sent, source=source,
            tcp=protocol in TCP_PROTOCOLS, name=name or ".",
            type=QTYPES.get(qtype, f"TYPE{qtype}"), rcode=RCODES.get(rcode, f"RCODE{rcode}"),
            port=port if isinstance(port, int) else 0,
            id=struct.unpack_from(">H", response, 0)[0])
    except (ValueError, IndexError, struct.error):
        return None
