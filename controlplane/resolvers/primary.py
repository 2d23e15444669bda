"""The table zones' primary: the tenant resolvers take a change by IXFR from here.

With ``--resolver-table-updates ixfr`` (docs/resolver-zone-updates.md) each resolver's
table auth-zones (the cluster zone and the reverse zones; not the RPZ, not the alias
zones) name ``primary: 127.0.0.1@PORT``, a port of its own on this one server (every
tenant's zones are named alike: the port tells them apart). After a change the pool
gives the zone's removed and added lines (``TableTexts.changes``: the names that
changed, O(change)) to ``change``, which keeps them as one step of a bounded history
and advances the serial, then runs ``auth_zone_transfer <zone>`` over the resolver's
control socket: unbound asks the SOA (UDP), then IXFR from its serial (TCP), and
applies the difference in memory; it then rewrites its zonefile itself, so a resolver
restarted while no control plane runs starts from the last change it took.

What this server answers, on one thread of its own (never the event loop): the SOA over
UDP and TCP, IXFR over TCP from the history (RFC 1995's condensed form, step by step).
An IXFR from a serial the history does not hold is answered by the current SOA alone and
the zone is noted for a resync (``take_resyncs``): the pool writes its whole file with
the current serial and runs ``auth_zone_reload`` on its own thread. AXFR is refused:
the whole zone is never made here (3-4 s of Python at 100,000 names).

Not the pool's lock: a lock of its own, held only to copy a zone's state.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import selectors
import socket
import struct
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from controlplane.core.errors import WireError
from controlplane.resolvers.zone_wire import (
    AXFR,
    IXFR,
    NOTAUTH,
    NOTIMP,
    REFUSED,
    SOA,
    error,
    parse_query,
    response,
    rr_wire,
)

log = logging.getLogger("controlplane.resolvers.primary")

# The SOA timers of a zone this primary serves: a lost trigger is caught by the refresh;
# the zone never expires while no control plane runs (unbound keeps it in a time_t).
REFRESH, RETRY, EXPIRE = 60, 10, 2**31 - 1
HISTORY_STEPS = 64  # differences kept per zone
STEP_LINES = 4000  # a change of more lines is not kept: the pool resyncs instead
TCP_TIMEOUT = 2.0  # seconds a resolver's TCP connection may take to send a query


@dataclass(slots=True)
class _Zone:
    name: str  # lower case, trailing dot
    soa: str  # "mname rname {serial} {refresh} {retry} {expire} minimum" as a format
    ttl: int
    serial: int
    steps: deque[tuple[int, tuple[str, ...], tuple[str, ...]]] = field(
        default_factory=lambda: deque(maxlen=HISTORY_STEPS))  # (from serial, gone, new)

    def soa_line(self, serial: int | None = None) -> str:
        return (f"@ {self.ttl} IN SOA " + self.soa.format(
            serial=self.serial if serial is None else serial, refresh=REFRESH, retry=RETRY,
            expire=EXPIRE))

    def ixfr_lines(self, since: int) -> list[str] | None:
        """RFC 1995's answer from ``since`` as lines; None when the history lacks it."""
        if since == self.serial:
            return [self.soa_line()]
        steps = list(self.steps)
        start = next((i for i, s in enumerate(steps) if s[0] == since), None)
        if start is None:
            return None
        out = [self.soa_line()]
        for serial, gone, new in steps[start:]:
            out += [self.soa_line(serial), *gone, self.soa_line(serial + 1), *new]
        out.append(self.soa_line())
        return out


def soa_parts(text: str) -> tuple[str, int]:
    """The SOA of a zone text (``unbound_table._head``: its third line) as a format for
    ``_Zone.soa``, and its TTL."""
    line = text.split("\n", 3)[2]
    owner, ttl, _, typ, mname, rname, _serial, _r, _t, _e, minimum = line.split()
    if owner != "@" or typ != "SOA":
        raise ValueError(f"no SOA on the zone's third line: {line!r}")
    return f"{mname} {rname} {{serial}} {{refresh}} {{retry}} {{expire}} {minimum}", int(ttl)


def with_soa(text: str, serial: int) -> str:
    """``text`` with its SOA carrying ``serial`` and this primary's timers."""
    parts = text.split("\n", 3)
    fields = parts[2].split()
    fields[6:10] = [str(serial), str(REFRESH), str(RETRY), str(EXPIRE)]
    parts[2] = " ".join(fields)
    return "\n".join(parts)


class ZonePrimary:
    """Every resolver's table zones, each resolver on a loopback port of its own."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.served: Counter[str] = Counter()  # answers by kind (soa, ixfr, gap, refused)
        self._lock = threading.Lock()
        self._zones: dict[int, dict[str, _Zone]] = {}  # port -> zone name -> zone
        self._sockets: dict[int, tuple[socket.socket, socket.socket]] = {}
        # (port, zone) -> the serial the resolver asked from (0: not known)
        self._resync: dict[tuple[int, str], int] = {}
        self._selector = selectors.DefaultSelector()
        self._ops: list[tuple[str, socket.socket]] = []  # (un)registrations for the thread
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, ("wake", 0))
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="zone-primary", daemon=True)
        self._thread.start()
        # The triggers (``auth_zone_transfer`` over a resolver's control socket), sent in
        # order on a thread of their own: unbound answers a control command only when its
        # first thread is free, and it may be writing the zone file of the last transfer
        # (~30 ms at 10,000 Services): the pool's thread does not wait for that.
        self._later: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self._trigger_thread = threading.Thread(target=self._run_later,
                                                name="zone-primary-triggers", daemon=True)
        self._trigger_thread.start()

    # -- ports ---------------------------------------------------------------
    def bind(self, port: int = 0) -> int:
        """Listen for one resolver on ``port`` (0: a free one), UDP and TCP; the port.
        OSError when ``port`` is taken."""
        for _ in range(20 if port == 0 else 1):
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((self.host, port))
                got = tcp.getsockname()[1]
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    udp.bind((self.host, got))
                except OSError:
                    udp.close()
                    raise
                tcp.listen(16)
            except OSError:
                tcp.close()
                if port:
                    raise
                continue
            tcp.setblocking(False)
            udp.setblocking(False)
            with self._lock:
                self._sockets[got] = (tcp, udp)
                self._zones.setdefault(got, {})
                self._ops += [("add", tcp), ("add", udp)]
            self._wake()
            return int(got)
        raise OSError("no free port for the zones' primary")

    def release(self, port: int) -> None:
        """Stop serving ``port`` (its resolver retired)."""
        with self._lock:
            socks = self._sockets.pop(port, None)
            self._zones.pop(port, None)
            self._resync = {k: v for k, v in self._resync.items() if k[0] != port}
            if socks is not None:
                self._ops += [("remove", s) for s in socks]
        self._wake()

    def later(self, call: Callable[[], object]) -> None:
        """Run ``call`` on the triggers' thread, after the ones before it."""
        self._later.put(call)

    def _run_later(self) -> None:
        while (call := self._later.get()) is not None:
            try:
                call()
            except Exception:  # noqa: BLE001 - one resolver's failure ends no other's trigger
                log.exception("zone primary: a trigger failed")

    def close(self) -> None:
        """Stop the threads and close every socket; again: nothing."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self._wake()
        self._later.put(None)
        self._thread.join(timeout=5)
        self._trigger_thread.join(timeout=5)
        # Every socket: served, released but not yet closed by the thread (its pending
        # operations), and the open transfer connections it had registered.
        with self._lock:
            socks = [s for pair in self._sockets.values() for s in pair]
            socks += [s for _, s in self._ops]
            self._sockets.clear()
            self._ops = []
        socks += [key.fileobj for key in list(self._selector.get_map().values())
                  if isinstance(key.fileobj, socket.socket)]
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def ports(self) -> list[int]:
        with self._lock:
            return sorted(self._sockets)

    # -- zones (the pool's thread) --------------------------------------------
    def load(self, port: int, zone: str, text: str, *, serial: int = 0) -> int:
        """Serve ``zone``'s SOA from ``text`` on ``port``; its serial (kept when the zone is
        known and ``serial`` is 0, else ``serial`` or 1: the first of a new resolver).
        The history is kept: ``text`` is what the zone already holds."""
        soa, ttl = soa_parts(text)
        with self._lock:
            zones = self._zones.setdefault(port, {})
            old = zones.get(zone)
            if old is not None and not serial:
                old.soa, old.ttl = soa, ttl
                return old.serial
            zones[zone] = _Zone(zone, soa, ttl, serial or 1)
            return serial or 1

    def resync(self, port: int, zone: str, text: str, *, at_least: int = 0) -> int:
        """A new serial for ``zone`` with no history before it (the pool writes the whole
        file with it and reloads it): above the last one and ``at_least``."""
        soa, ttl = soa_parts(text)
        with self._lock:
            zones = self._zones.setdefault(port, {})
            old = zones.get(zone)
            serial = max(old.serial + 1 if old else 1, at_least)
            zones[zone] = _Zone(zone, soa, ttl, serial)
            self._resync.pop((port, zone), None)
            return serial

    def change(self, port: int, zone: str, gone: tuple[str, ...],
               new: tuple[str, ...]) -> int | None:
        """One change of ``zone``: its removed and added lines become the next step; the
        new serial. None when the zone is not served or the change is too large to keep
        (the pool resyncs it)."""
        if len(gone) + len(new) > STEP_LINES:
            return None
        with self._lock:
            z = self._zones.get(port, {}).get(zone)
            if z is None:
                return None
            z.steps.append((z.serial, gone, new))
            z.serial += 1
            return z.serial

    def serial(self, port: int, zone: str) -> int | None:
        with self._lock:
            z = self._zones.get(port, {}).get(zone)
            return None if z is None else z.serial

    def take_resyncs(self) -> dict[tuple[int, str], int]:
        """The (port, zone) a resolver asked from a serial not in the history since the
        last call, with that serial (0: not known): the pool resyncs them."""
        with self._lock:
            out, self._resync = self._resync, {}
            return out

    # -- the server thread -----------------------------------------------------
    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _serve(self) -> None:
        while True:
            with self._lock:
                if self._stopping:  # close() closes the sockets of what is pending
                    return
                ops, self._ops = self._ops, []
            for op, listening in ops:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    if op == "add":
                        kind = "tcp" if listening.type == socket.SOCK_STREAM else "udp"
                        self._selector.register(listening, selectors.EVENT_READ,
                                                (kind, listening.getsockname()[1]))
                    else:
                        self._selector.unregister(listening)
                        listening.close()
            for key, _ in self._selector.select(timeout=1.0):
                kind, port = key.data
                obj = key.fileobj
                if not isinstance(obj, socket.socket):
                    continue
                sock = obj
                try:
                    if kind == "wake":
                        with contextlib.suppress(OSError):
                            sock.recv(4096)
                    elif kind == "udp":
                        self._on_udp(sock, port)
                    elif kind == "tcp":
                        conn, _ = sock.accept()
                        conn.settimeout(TCP_TIMEOUT)
                        self._selector.register(conn, selectors.EVENT_READ, ("conn", port))
                    else:
                        self._on_conn(sock, port)
                except OSError as exc:
                    log.debug("zone primary on port %d: %s", port, exc)
                    if kind == "conn":
                        self._drop(sock)
                except Exception:  # noqa: BLE001 - a bad message never ends the server
                    log.exception("zone primary on port %d", port)
                    if kind == "conn":
                        self._drop(sock)

    def _drop(self, conn: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn)
        conn.close()

    def _on_udp(self, sock: socket.socket, port: int) -> None:
        wire, peer = sock.recvfrom(65535)
        for out in self._answer(port, wire, tcp=False)[:1]:
            sock.sendto(out, peer)

    def _on_conn(self, conn: socket.socket, port: int) -> None:
        head = recv_exact(conn, 2)
        if not head:
            self._drop(conn)
            return
        wire = recv_exact(conn, struct.unpack("!H", head)[0])
        if not wire:
            self._drop(conn)
            return
        for out in self._answer(port, wire, tcp=True):
            conn.sendall(struct.pack("!H", len(out)) + out)

    def _answer(self, port: int, wire: bytes, *, tcp: bool) -> list[bytes]:
        try:
            query = parse_query(wire)
        except (WireError, struct.error, IndexError):
            bad = error(wire, 1)
            return [bad] if bad is not None else []
        if query.flags & 0x8000:  # an answer (to nothing we sent)
            return []
        if (query.flags >> 11) & 0xF:  # not a query (e.g. NOTIFY): not used here
            return response(query, [], rcode=NOTIMP)
        with self._lock:
            zone = self._zones.get(port, {}).get(query.qname)
            if zone is None:
                self.served["refused"] += 1
                return response(query, [], rcode=NOTAUTH)
            if query.qtype == SOA:
                lines = [zone.soa_line()]
                kind = "soa"
            elif query.qtype == IXFR and not tcp:
                lines, kind = [zone.soa_line()], "ixfr-udp"  # "up to date or ask by TCP"
            elif query.qtype == IXFR:
                got = zone.ixfr_lines(query.serial) if query.serial is not None else None
                if got is None:
                    self._resync[(port, zone.name)] = query.serial or 0
                    lines, kind = [zone.soa_line()], "gap"
                else:
                    lines, kind = got, "ixfr"
            elif query.qtype == AXFR:
                self._resync.setdefault((port, zone.name), 0)
                self.served["axfr-refused"] += 1
                return response(query, [], rcode=REFUSED)
            else:
                self.served["refused"] += 1
                return response(query, [], rcode=REFUSED)
            self.served[kind] += 1
            name = zone.name
        try:  # made outside the lock: O(change) lines
            records = [rr_wire(line, name) for line in lines]
        except (WireError, ValueError, OSError) as exc:
            log.warning("zone primary: %s cannot be sent (%s): the zone is resynced", name, exc)
            with self._lock:
                self._resync.setdefault((port, name), 0)
            records = [rr_wire(lines[0], name)]
        return response(query, records)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """``n`` bytes from a stream socket; b"" when it closes first."""
    buf = b""
    while len(buf) < n:
        got = sock.recv(n - len(buf))
        if not got:
            return b""
        buf += got
    return buf
