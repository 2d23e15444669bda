"""Raw DNS packets for bad-input tests: built byte by byte (dnspython refuses to build most
of them), sent over UDP or TCP, and the reply read back as far as it can be parsed.

A reply is a :class:`Reply`: its rcode (extended with the OPT record's bits when present,
so BADVERS reads as such), and what dnspython made of it; ``None`` means no reply within
the timeout (the server dropped the packet). Used by ``tests/test_front_config.py`` and
``e2e/test_sidecar_answers_e2e.py``.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.rcode

QUERY_FLAGS = 0x0100  # QR=0, opcode QUERY, RD=1


def header(*, qdcount: int = 1, flags: int = QUERY_FLAGS, ident: int = 0x1234,
           ancount: int = 0, nscount: int = 0, arcount: int = 0) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, qdcount, ancount, nscount, arcount)


def opcode_flags(opcode: int) -> int:
    """The header flags of a query with this opcode (RD set)."""
    return QUERY_FLAGS | (opcode << 11)


def qname(name: str) -> bytes:
    """``name`` in wire form, labels as given (no checks: a label may exceed 63 bytes)."""
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")
                    if label) + b"\0"


def question(name: str, rdtype: int = 1, rdclass: int = 1) -> bytes:
    return qname(name) + struct.pack("!HH", rdtype, rdclass)


def opt(*, payload: int = 1232, version: int = 0) -> bytes:
    """An OPT record (EDNS0) with no options."""
    return b"\0" + struct.pack("!HHBBHH", 41, payload, 0, version, 0, 0)


def query(name: str, rdtype: int = 1, rdclass: int = 1, *, flags: int = QUERY_FLAGS,
          edns: bool = False, payload: int = 1232, version: int = 0) -> bytes:
    """A one-question query, with an OPT record when ``edns``."""
    body = question(name, rdtype, rdclass)
    if not edns:
        return header(flags=flags) + body
    return header(flags=flags, arcount=1) + body + opt(payload=payload, version=version)


@dataclass(frozen=True)
class Reply:
    rcode: str  # "NOERROR", "FORMERR", "BADVERS", ...
    message: dns.message.Message | None  # None when dnspython cannot parse the reply
    wire: bytes

    @property
    def answer_types(self) -> list[str]:
        if self.message is None:
            return []
        return sorted(rrset.to_text().split()[3] for rrset in self.message.answer)


def parse_reply(wire: bytes) -> Reply:
    try:
        message = dns.message.from_wire(wire, ignore_trailing=True)
    except dns.exception.DNSException:
        # A server may echo a question it could not parse (unbound does): the header's
        # rcode is what it answered.
        return Reply(dns.rcode.to_text(dns.rcode.Rcode(wire[3] & 0x0F)), None, wire)
    return Reply(dns.rcode.to_text(message.rcode()), message, wire)


def send_udp(host: str, port: int, packet: bytes, *, timeout: float = 2.0) -> Reply | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (host, port))
        try:
            wire, _ = sock.recvfrom(65535)
        except TimeoutError:
            return None
    return parse_reply(wire)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def send_tcp(host: str, port: int, packet: bytes, *, timeout: float = 2.0) -> Reply | None:
    """One length-prefixed message on a new connection; None when the server closes it or
    stays silent."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack("!H", len(packet)) + packet)
        try:
            size = _read_exactly(sock, 2)
            wire = None if size is None else _read_exactly(sock, struct.unpack("!H", size)[0])
        except (TimeoutError, ConnectionResetError):
            return None
    return None if wire is None else parse_reply(wire)


def send(host: str, port: int, packet: bytes, *, tcp: bool, timeout: float = 2.0
         ) -> Reply | None:
    return (send_tcp if tcp else send_udp)(host, port, packet, timeout=timeout)


def rcode_of(reply: Reply | None) -> str | None:
    """The reply's rcode, or None for no reply."""
    return None if reply is None else reply.rcode


__all__ = ["Reply", "header", "opcode_flags", "opt", "parse_reply", "qname", "query",
           "question", "rcode_of", "send", "send_tcp", "send_udp"]
