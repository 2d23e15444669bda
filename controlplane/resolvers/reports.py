"""The reader of one tenant resolver's query reports (dnstap, ``dnstap.py``).

Each resolver's config names a unix socket in its directory (``tap.sock``);
unbound connects to it, and reconnects when it goes away. ``ReportReader``
listens there on a thread of its own while the tenant's view logs queries
(``Forwarding.log_queries``): it answers the Frame Streams handshake, cuts the
stream into frames (partial frames wait; a frame over ``MAX_FRAME`` drops the
connection, so memory stays bounded), decodes each ``CLIENT_RESPONSE`` and hands
it to ``sink``. Nothing of it runs on the event loop, and unbound never waits for
it: its writer thread queues a bounded backlog and drops the rest.

While nobody listens (the tenant logs nothing, the control plane is gone) unbound
keeps a bounded backlog and sends it on the next connection; replies sent before
``since`` (when this reader started) are skipped, so a tenant that starts logging
is not told of queries from before.

unbound 1.17 sometimes sends two ``CLIENT_RESPONSE`` messages for one query (measured:
after its cache entries expired under load, about one per cached name, microseconds
apart, while ``total.num.queries`` counts one): a reply with the same client address,
port, message id, name and type as one of the last ``RECENT`` is dropped as a duplicate
(a client's retransmission of the same query is one query too).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from controlplane.resolvers.dnstap import (
    ACCEPT,
    FINISH,
    READY,
    STOP,
    FrameReader,
    ResolverReply,
    control_frame,
    decode,
)

log = logging.getLogger("controlplane.resolvers.reports")

Sink = Callable[[str, ResolverReply], None]  # (tenant, reply)
RECENT = 4096  # replies remembered to drop duplicates


class ReportReader:
    """Listens on ``path`` for ``tenant``'s resolver until ``stop``."""

    def __init__(self, tenant: str, path: str, sink: Sink, *, since: float,
                 poll: float = 0.5) -> None:
        self.tenant = tenant
        self.path = path
        self.sink = sink
        self.since = since
        self.poll = poll  # how often the threads look at the stop flag
        self.replies = 0  # handed to the sink
        self.skipped = 0  # sent before ``since``
        self.malformed = 0  # frames that are not a readable CLIENT_RESPONSE
        self.connections = 0
        self.duplicates = 0  # the same answer reported twice (see the module's doc)
        self._recent: collections.deque[tuple[object, ...]] = collections.deque()
        self._recent_keys: set[tuple[object, ...]] = set()
        self._stop = threading.Event()
        self._server: socket.socket | None = None
        self._conn: socket.socket | None = None  # the resolver's connection, while open
        self._thread: threading.Thread | None = None

    def start(self) -> ReportReader:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a socket left by an earlier control plane
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(self.path)
            server.listen(2)
        except OSError:
            server.close()
            raise
        server.settimeout(self.poll)
        self._server = server
        self._thread = threading.Thread(target=self._serve, name=f"reports-{self.tenant}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ends the thread at once (the pool calls this on the event loop): shutting the
        sockets down wakes a blocked accept or recv."""
        self._stop.set()
        for sock in (self._server, self._conn):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            if Path(self.path).is_socket():
                os.unlink(self.path)

    def _serve(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._conn = conn
            with conn:
                try:
                    self._read(conn)
                except (OSError, ValueError) as exc:
                    if self._stop.is_set():
                        return
                    log.warning("query reports of %s's resolver: %s; waiting for it to "
                                "reconnect", self.tenant, exc, extra={"tenant": self.tenant})
                finally:
                    self._conn = None

    def _read(self, conn: socket.socket) -> None:
        conn.settimeout(self.poll)
        frames = FrameReader()
        while not self._stop.is_set():
            try:
                data = conn.recv(65_536)
            except TimeoutError:
                continue
            if not data:
                return
            for kind, payload in frames.feed(data):
                if kind == READY:
                    conn.sendall(control_frame(ACCEPT))
                elif kind == STOP:
                    conn.sendall(control_frame(FINISH, content_type=False))
                    return
                elif kind == 0:
                    self._frame(payload)

    def _frame(self, payload: bytes) -> None:
        reply = decode(payload)
        if reply is None:
            self.malformed += 1
            return
        if reply.time and reply.time < self.since:
            self.skipped += 1
            return
        key = (reply.source, reply.port, reply.id, reply.name, reply.type, reply.tcp)
        if key in self._recent_keys:
            self.duplicates += 1
            return
        self._recent.append(key)
        self._recent_keys.add(key)
        if len(self._recent) > RECENT:
            self._recent_keys.discard(self._recent.popleft())
        self.replies += 1
        try:
            self.sink(self.tenant, reply)
        except Exception:  # noqa: BLE001 - a sink bug must not end the reader
            log.exception("query report sink failed for %s", self.tenant)
