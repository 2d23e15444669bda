"""Prototype: would IXFR from a primary make the tenant resolver follow a change faster
than rewriting its zone file and ``auth_zone_reload``? (issue 21, item 2; RESULTS.md
section 25, docs/resolver-zone-updates.md)

    nice .venv/bin/python benchmarks/resolver_ixfr_proto.py [--services 10000]
        [--edits 40] [--round 10] [--no-ports] [--paths ixfr,...] [--robust]

Not the control plane's code: a minimal primary in this process (dnspython, loopback,
one thread per transport) that serves the zones ``TableTexts`` makes for the synthetic
cluster's wide ALLOW tenant (benchmarks/synthetic.py, as resolver_table_change.py builds
it; two named ports per Service unless ``--no-ports``): SOA over UDP and TCP, IXFR
(RFC 1995: the differences since the client's serial, or the whole zone AXFR-style when
it has no history from that serial) and AXFR over TCP, NOTIFY to the resolver after each
change. Its differences come from comparing each zone's whole line set (20-25 ms at
10,000 Services, ~300 ms at 100,000: the prototype's cost, counted before the NOTIFY;
``TableTexts`` knows the names that changed). The resolvers are the real unbound
(``/usr/sbin/unbound``) with a copy of the very ``unbound.conf`` the pool writes, their
auth-zones given ``primary:`` and ``allow-notify:``.

Each edit gives one Service a new cluster IP (its A line in the cluster zone and its PTR
in ``10.in-addr.arpa.`` change); the time from the change to the first answer carrying
the new IP, polled every 0.5 ms, is measured for these resolvers, in alternating rounds:

- ``reload``: today's path, the ``ResolverPool`` (file rewrite + ``auth_zone_reload``);
- ``ixfr``: NOTIFY -> SOA probe -> IXFR, with ``zonefile:`` (unbound writes the whole
  zone back to the file after each transfer);
- ``ixfr-2threads``: the same with ``num-threads: 2``;
- ``ixfr-nofile``: no ``zonefile:`` (no write; nothing to start from without a primary);
- ``ixfr-nowrite``: the zonefile read at start but never written by unbound (its path
  named through 520 ``./``: unbound 1.17.1 skips the write when the path does not fit
  its 1024-byte buffer);
- ``ixfr-nowrite-ctl``: the same, the transfer started over the control socket
  (``auth_zone_transfer <zone>``) instead of a NOTIFY.

Beside each: the time from the NOTIFY to the answer (the resolver's part), unbound's CPU
per change, its RSS, and the longest wait of a query for another name sent every 2 ms
meanwhile (from this process: a stall of this process's threads counts too). ``--robust``
instead runs the failure cases with SOA refresh 5 s, retry 2 s, expire 20 s (a NOTIFY
lost; the resolver restarted while the primary is gone; the expiry; a primary restarted
with a higher or a lower serial; the resync by file + ``auth_zone_reload``; expire
2^31-1; a resolver restarted with an old file).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controlplane.resolvers.primary import recv_exact  # noqa: E402 - the primary's reader

UNBOUND = "/usr/sbin/unbound"
LOOP = "127.0.0.1"


def _rrset(line: str, origin: dns.name.Name) -> dns.rrset.RRset:
    owner, ttl, cls, typ, rdata = line.split(None, 4)
    name = origin if owner == "@" else dns.name.from_text(owner, origin)
    rd = dns.rdata.from_text(cls, typ, rdata, origin=origin, relativize=False)
    return dns.rrset.from_rdata(name, int(ttl), rd)


@dataclass
class Zone:
    """One zone's current version and the differences that led to it."""

    name: dns.name.Name
    head: list[str]  # $ORIGIN, $TTL
    soa: str  # the SOA line with {serial} {refresh} ... for the numbers
    body: set[str]
    serial: int
    history: dict[int, tuple[int, list[str], list[str]]] = field(default_factory=dict)
    timers: tuple[int, int, int] = (7200, 1800, 86400)  # refresh, retry, expire
    _axfr: tuple[int, list[dns.rrset.RRset], list[bytes]] | None = None

    @classmethod
    def parse(cls, name: str, text: str, *, serial: int,
              timers: tuple[int, int, int]) -> Zone:
        head, soa, body = _split(text)
        return cls(dns.name.from_text(name), head, soa, body, serial, timers=timers)

    def soa_line(self, serial: int | None = None) -> str:
        refresh, retry, expire = self.timers
        return self.soa.format(serial=self.serial if serial is None else serial,
                               refresh=refresh, retry=retry, expire=expire)

    def soa_rrset(self, serial: int | None = None) -> dns.rrset.RRset:
        return _rrset(self.soa_line(serial), self.name)

    def text(self) -> str:
        return "\n".join([*self.head, self.soa_line(), *sorted(self.body)]) + "\n"

    def update(self, text: str) -> bool:
        """The zone's new text: a new serial and its difference, if it changed."""
        _, _, body = _split(text)
        gone, new = sorted(self.body - body), sorted(body - self.body)
        if not gone and not new:
            return False
        self.history[self.serial] = (self.serial + 1, gone, new)
        self.serial += 1
        self.body = body
        return True

    def ixfr(self, since: int) -> list[dns.rrset.RRset] | None:
        """RFC 1995's answer from ``since`` to now; None without that history."""
        out = [self.soa_rrset()]
        serial = since
        while serial != self.serial:
            step = self.history.get(serial)
            if step is None:
                return None
            to, gone, new = step
            out += [self.soa_rrset(serial), *(_rrset(x, self.name) for x in gone),
                    self.soa_rrset(to), *(_rrset(x, self.name) for x in new)]
            serial = to
        return [*out, self.soa_rrset()]

    def axfr_messages(self, query: dns.message.Message, per: int = 400) -> list[bytes]:
        """The whole zone as TCP messages (made once per serial; the first carries the
        request's question, the others none, as RFC 5936 allows)."""
        if self._axfr is None or self._axfr[0] != self.serial:
            rrs = [self.soa_rrset(), *(_rrset(x, self.name) for x in sorted(self.body)),
                   self.soa_rrset()]
            chunks = [rrs[i:i + per] for i in range(0, len(rrs), per)]
            rest = []
            for chunk in chunks[1:]:
                m = dns.message.Message()
                m.flags = dns.flags.QR | dns.flags.AA
                m.answer = chunk
                rest.append(m.to_wire(max_size=65535))
            self._axfr = (self.serial, chunks[0], rest)
        return [_answer(query, self._axfr[1]), *(_with_id(m, query.id) for m in self._axfr[2])]


def _with_id(wire: bytes, qid: int) -> bytes:
    return struct.pack("!H", qid) + wire[2:]


def _answer(query: dns.message.Message, rrsets: list[dns.rrset.RRset]) -> bytes:
    r = dns.message.make_response(query)
    r.flags |= dns.flags.AA
    r.answer = list(rrsets)
    return r.to_wire(max_size=65535)


def _split(text: str) -> tuple[list[str], str, set[str]]:
    lines = text.splitlines()
    head = [x for x in lines if x.startswith("$")]
    soa = next(x for x in lines if " SOA " in x)
    fields = soa.split()
    soa_t = " ".join([*fields[:-5], "{serial} {refresh} {retry} {expire}", fields[-1]])
    body = {x for x in lines if x and not x.startswith("$") and x != soa}
    return head, soa_t, body


class Primary:
    """The zones on loopback: UDP (SOA, NOTIFY answers) and TCP (SOA, IXFR, AXFR)."""

    def __init__(self, zones: dict[str, Zone], port: int = 0) -> None:
        self.zones = {z.name: z for z in zones.values()}
        self.lock = threading.Lock()
        self.events: list[tuple[float, str]] = []
        primary = self

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                while True:
                    head = recv_exact(sock, 2)
                    if not head:
                        return
                    wire = recv_exact(sock, struct.unpack("!H", head)[0])
                    for out in primary.answer(dns.message.from_wire(wire), tcp=True):
                        sock.sendall(struct.pack("!H", len(out)) + out)

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                wire, sock = self.request
                msg = dns.message.from_wire(wire)
                if msg.flags & dns.flags.QR:
                    return  # the resolver's answer to a NOTIFY
                for out in primary.answer(msg, tcp=False):
                    sock.sendto(out, self.client_address)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.tcp = socketserver.ThreadingTCPServer((LOOP, port), Tcp)
        self.tcp.daemon_threads = True
        self.port = self.tcp.server_address[1]
        self.udp = socketserver.UDPServer((LOOP, self.port), Udp)
        self.threads = [threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True)
                        for s in (self.tcp, self.udp)]
        for t in self.threads:
            t.start()

    def note(self, what: str) -> None:
        self.events.append((time.perf_counter(), what))

    def answer(self, q: dns.message.Message, *, tcp: bool) -> list[bytes]:
        qname, qtype = q.question[0].name, q.question[0].rdtype
        with self.lock:
            zone = self.zones.get(qname)
            if zone is None:
                r = dns.message.make_response(q)
                r.set_rcode(dns.rcode.REFUSED)
                return [r.to_wire()]
            if qtype == dns.rdatatype.SOA:
                self.note(f"soa-{'tcp' if tcp else 'udp'} {qname}")
                return [_answer(q, [zone.soa_rrset()])]
            if not tcp:
                r = dns.message.make_response(q)
                r.flags |= dns.flags.TC
                return [r.to_wire()]
            if qtype == dns.rdatatype.IXFR:
                since = q.authority[0][0].serial if q.authority else -1
                rrs = zone.ixfr(since)
                if rrs is not None:
                    self.note(f"ixfr {qname} {since}->{zone.serial} {len(rrs)} rr")
                    return [_answer(q, rrs)]
                t = time.perf_counter()
                out = zone.axfr_messages(q)
                self.note(f"ixfr-as-axfr {qname} {since}->{zone.serial} "
                          f"(made in {(time.perf_counter() - t) * 1000:.0f} ms)")
                return out
            if qtype == dns.rdatatype.AXFR:
                t = time.perf_counter()
                out = zone.axfr_messages(q)
                self.note(f"axfr {qname} {zone.serial} "
                          f"(made in {(time.perf_counter() - t) * 1000:.0f} ms)")
                return out
            r = dns.message.make_response(q)
            r.set_rcode(dns.rcode.NOTIMP)
            return [r.to_wire()]

    def update(self, texts: dict[str, str], notify: int | None) -> list[str]:
        """New texts of the zones; NOTIFY ``notify`` (the resolver's port) of each changed."""
        with self.lock:
            changed = [name for name, text in texts.items()
                       if self.zones[dns.name.from_text(name)].update(text)]
        if notify:
            for name in changed:
                self.notify(name, notify)
        return changed

    def notify(self, name: str, port: int) -> None:
        zone = self.zones[dns.name.from_text(name)]
        n = dns.message.make_query(zone.name, dns.rdatatype.SOA)
        n.flags = dns.flags.AA  # (the opcode is in the flags: set it after)
        n.set_opcode(dns.opcode.NOTIFY)
        n.answer = [zone.soa_rrset()]
        self.note(f"notify {name} {zone.serial}")
        dns.query.udp(n, LOOP, port=port, timeout=2, source=LOOP)

    def close(self) -> None:
        for s in (self.tcp, self.udp):
            s.shutdown()
            s.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOP, 0))
        return int(s.getsockname()[1])


STARTED: list[Unbound] = []  # stopped when the run ends, however it ends


class Unbound:
    """One unbound with a copy of the pool's resolver directory and config, its table
    zones taken from the primary."""

    def __init__(self, source_conf: Path, directory: Path, *, primary: int,
                 zonefile: str, zones: dict[str, Zone], threads: int = 1) -> None:
        self.dir = directory
        self.port = _free_port()
        src = source_conf.parent
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "policy.rpz", directory / "policy.rpz")
        conf = source_conf.read_text().replace(str(src), str(directory))
        conf = re.sub(r"interface: 127\.0\.0\.1@\d+", f"interface: {LOOP}@{self.port}", conf)
        conf = re.sub(r"\n  port: \d+", f"\n  port: {self.port}", conf)
        out = []
        for i, block in enumerate(conf.split("auth-zone:\n")):
            if i and block.startswith("  name:"):
                name = block.split('"')[1]
                lines = block.split("\n")
                lines.insert(1, f"  primary: {LOOP}@{primary}\n  allow-notify: {LOOP}")
                if zonefile == "none":
                    lines = [x for x in lines if not x.startswith("  zonefile:")]
                else:
                    path = re.search(r'zonefile: "([^"]+)"', block)
                    assert path
                    Path(path.group(1)).write_text(zones[name].text())
                    if zonefile == "read-only":  # NOWRITE_PATH: read at start, never written
                        lines = [_nowrite(x) if x.startswith("  zonefile:") else x
                                 for x in lines]
                block = "\n".join(lines)
            out.append(block)
        conf = "auth-zone:\n".join(out)
        if threads != 1:
            conf = re.sub(r"num-threads: \d+", f"num-threads: {threads}", conf)
        self.conf = directory / "unbound.conf"
        self.conf.write_text(conf)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log = open(self.dir / "unbound.out", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([UNBOUND, "-d", "-c", str(self.conf)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        STARTED.append(self)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                ask(self.port, "cluster.local.", "SOA", timeout=0.2)
                return
            except (TimeoutError, dns.exception.Timeout, OSError):
                time.sleep(0.05)
        raise RuntimeError(f"unbound on {self.port} did not answer")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
            self.log.close()


def control(path: Path, command: str) -> str:
    """``command`` over unbound's control socket, as the pool speaks it (``control-use-cert:
    no``: "UBCT1 <command>", the answer until the socket closes)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(f"UBCT1 {command}\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    text = b"".join(chunks).decode()
    if text.startswith("error"):
        raise RuntimeError(f"{command}: {text}")
    return text


def _nowrite(line: str) -> str:
    """unbound 1.17.1 skips its write after a transfer when the zonefile's path and 16
    characters do not fit 1024 bytes (``xfr_write_after_update``): the same file, named
    through 520 ``./``."""
    path = line.split('"')[1]
    head, _, tail = path.rpartition("/")
    return f'  zonefile: "{head}/{"./" * 520}{tail}"'


def ask(port: int, name: str, rdtype: str = "A", *, timeout: float = 2.0) -> tuple[str, list[str]]:
    r = dns.query.udp(dns.message.make_query(name, rdtype), LOOP, port=port, timeout=timeout)
    return dns.rcode.to_text(r.rcode()), [rd.to_text() for rs in r.answer for rd in rs]


def wait_for(port: int, name: str, want: str, *, limit: float = 30.0,
             every: float = 0.0005) -> tuple[float, int, float]:
    """Poll until ``name`` answers ``want``: (seconds, polls, longest poll)."""
    t0 = time.perf_counter()
    polls, longest = 0, 0.0
    while True:
        s = time.perf_counter()
        try:
            _, got = ask(port, name, timeout=1.0)
        except dns.exception.Timeout:
            got = []
        e = time.perf_counter()
        polls += 1
        longest = max(longest, e - s)
        if got == [want]:
            return e - t0, polls, longest
        if e - t0 > limit:
            raise RuntimeError(f"{name} still {got}, not {want}, after {limit} s")
        time.sleep(every)


class Prober(threading.Thread):
    """A query for an unchanged name every 2 ms: (send time, round trip) of each."""

    def __init__(self, port: int, name: str) -> None:
        super().__init__(daemon=True)
        self.port, self.name, self.stopping = port, name, threading.Event()
        self.rtts: list[tuple[float, float]] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            s = time.perf_counter()
            with contextlib.suppress(dns.exception.Timeout):
                ask(self.port, self.name, timeout=2)
            self.rtts.append((s, time.perf_counter() - s))
            time.sleep(0.002)

    def longest(self, start: float, end: float) -> float:
        return max((r for s, r in self.rtts if start <= s <= end), default=0.0)


def q(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--edits", type=int, default=40, help="per path")
    parser.add_argument("--round", type=int, default=10, help="edits per path in a row")
    parser.add_argument("--no-ports", action="store_true")
    parser.add_argument("--paths", default="ixfr,ixfr-2threads,ixfr-nofile,ixfr-nowrite,"
                        "ixfr-nowrite-ctl",
                        help="the IXFR variants to run beside reload")
    parser.add_argument("--robust", action="store_true", help="the failure cases instead")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import benchmarks.synthetic as synthetic
    from benchmarks.procstat import cpu_seconds, load_average
    from controlplane.core.model import Service, ServicePort
    from controlplane.core.settings import DnsSettings
    from controlplane.dns.views import build_tenant_view, cluster_records
    from controlplane.resolvers.pool import ResolverPool
    from controlplane.translate.table_texts import TableTexts

    if args.no_ports:
        real = synthetic.Service

        def bare(*a: Any, ports: tuple[ServicePort, ...] = (), **kw: Any) -> Service:
            return real(*a, **kw)
        synthetic.Service = bare  # type: ignore[assignment,misc]
    inv = synthetic.cluster(args.services, wide=1, own=500)
    records = cluster_records(inv, zone="cluster.local")
    fwd0 = build_tenant_view(inv.policies["wide0"], records, inv, DnsSettings())[0].forward
    assert fwd0 is not None
    work = Path(tempfile.mkdtemp(prefix="ixfr-proto-"))
    pool = ResolverPool(work / "pool")
    pool.apply({"wide0": fwd0})
    res = pool.resolvers["wide0"]
    source_conf = Path(res.conf_path)
    first_texts = TableTexts().update(fwd0).zones
    print(f"{args.services} Services{'' if args.no_ports else ' with 2 named ports'}: "
          f"{len(fwd0.table)} table entries, zones "
          + ", ".join(f"{z} {t.count(chr(10))} lines" for z, t in first_texts.items())
          + f"; unbound {UNBOUND}; load average {load_average()}")
    index = next(i for i, e in enumerate(fwd0.table)
                 if e.record.name.startswith("svc") and e.record.kind == "service")
    other = fwd0.table[index + 3 * args.edits + 1].record.name

    def edits(offset: int) -> Callable[[Any, int], tuple[Any, str, str]]:
        def edit(fwd: Any, k: int) -> tuple[Any, str, str]:
            entry = fwd.table[index + offset + k]
            n = offset + k
            ip = f"10.66.{n // 250}.{n % 250 + 1}"
            table = list(fwd.table)
            table[index + offset + k] = replace(entry, record=replace(entry.record, ipv4=(ip,)))
            return replace(fwd, table=tuple(table)), entry.record.name, ip
        return edit

    if args.robust:
        try:
            return robust(work, source_conf, first_texts, fwd0, edits(3 * args.edits + 2), TableTexts,
                          load_average)
        finally:
            pool.stop_all()

    timers = (7200, 1800, 86400)
    paths: dict[str, dict[str, Any]] = {}
    variants: tuple[tuple[str, str, int], ...] = (
        ("ixfr", "unbound", 1), ("ixfr-2threads", "unbound", 2),
        ("ixfr-nofile", "none", 1), ("ixfr-nowrite", "read-only", 1),
        ("ixfr-nowrite-ctl", "read-only", 1))
    variants = tuple(v for v in variants if v[0] in args.paths.split(","))
    for k, (name, zonefile, threads) in enumerate(variants):
        zones = {z: Zone.parse(z, t, serial=1, timers=timers) for z, t in first_texts.items()}
        prim = Primary(zones)
        ub = Unbound(source_conf, work / name, primary=prim.port, zonefile=zonefile,
                     zones=zones, threads=threads)
        t = time.perf_counter()
        ub.start()
        if zonefile == "none":  # no data until the first AXFR
            wait_for(ub.port, fwd0.table[index].record.name,
                     fwd0.table[index].record.ipv4[0], every=0.01)
        print(f"{name}: unbound started (pid {ub.proc.pid if ub.proc else 0}) and answering "
              f"in {time.perf_counter() - t:.2f} s; primary events {[e for _, e in prim.events]}")
        paths[name] = {"fwd": fwd0, "texts": TableTexts(), "edit": edits(args.edits * (k + 1)),
                       "primary": prim, "unbound": ub, "port": ub.port, "rows": [],
                       "pid": ub.proc.pid if ub.proc else 0}
        paths[name]["texts"].update(fwd0)
    paths["reload"] = {"fwd": fwd0, "edit": edits(0), "port": res.paths.listen.port,
                       "rows": [], "pid": res.unbound.pid}
    probers = {name: Prober(p["port"], other) for name, p in paths.items()}
    for prober in probers.values():
        prober.start()
    order = ["reload", *(v[0] for v in variants)]
    done = 0
    try:
        while done < args.edits:
            for name in order:
                p = paths[name]
                cpu0 = cpu_seconds(p["pid"])
                for k in range(done, min(args.edits, done + args.round)):
                    fwd, host, ip = p["edit"](p["fwd"], k)
                    p["fwd"] = fwd
                    t0 = time.perf_counter()
                    if name == "reload":
                        pool.prepare({"wide0": fwd})
                        pool.apply({"wide0": fwd})
                        made = time.perf_counter()
                    else:
                        texts = p["texts"].update(fwd).zones
                        made = time.perf_counter()
                        p["primary"].events.clear()
                        if name.endswith("-ctl"):  # unbound-control's auth_zone_transfer
                            for zone in p["primary"].update(texts, notify=None):
                                p["primary"].note(f"notify(control) {zone}")
                                control(p["unbound"].dir / "control.sock",
                                        f"auth_zone_transfer {zone}")
                        else:
                            p["primary"].update(texts, notify=p["port"])
                    sent = time.perf_counter()
                    took, polls, longest = wait_for(p["port"], host, ip)
                    end = time.perf_counter()
                    p["rows"].append({
                        "change->answer": end - t0, "texts": made - t0,
                        "after texts": end - made, "notify/apply": sent - made,
                        "polls": polls, "longest poll": longest,
                        "notify->answer": end - next(
                            (t for t, e in p["primary"].events if e.startswith("notify")), made)
                        if "primary" in p else 0.0,
                        "other wait": probers[name].longest(t0, end),
                        "events": [(round((t - made) * 1000, 1), e)
                                   for t, e in (p["primary"].events if "primary" in p else [])]})
                p["cpu"] = p.get("cpu", 0.0) + cpu_seconds(p["pid"]) - cpu0
            done += args.round
        for p in paths.values():
            status = Path(f"/proc/{p['pid']}/status").read_text()
            p["rss"] = next(x.split()[1] for x in status.splitlines() if x.startswith("VmRSS"))
    finally:
        for pr in probers.values():
            pr.stopping.set()
        for name in order[1:]:
            if name in paths:
                paths[name]["unbound"].stop()
                paths[name]["primary"].close()
        pool.stop_all()
    print(f"{args.edits} edits per path, in rounds of {args.round}, each a Service's new "
          f"cluster IP (A in the cluster zone, PTR in 10.in-addr.arpa)")
    for name in order:
        rows = paths[name]["rows"]
        def ms(key: str) -> str:
            xs = [r[key] for r in rows]
            return f"p50 {q(xs, 0.5) * 1000:.1f} p99 {q(xs, 0.99) * 1000:.1f}"
        print(f"{name:12s} change->new answer {ms('change->answer')} ms; texts "
              f"{ms('texts')}; after texts {ms('after texts')}; NOTIFY->answer "
              f"{ms('notify->answer')}; other name's longest wait "
              f"{ms('other wait')}; unbound CPU "
              f"{paths[name]['cpu'] / len(rows) * 1000:.1f} ms/change")
        if name != "reload":
            print(f"{'':12s} first edit's primary events (ms after texts): {rows[0]['events']}")
    print(f"reload: unbound RSS {paths['reload']['rss']} kB at end")
    for name in order[1:]:
        f = work / name / "table-cluster.local.zone"
        soa = next((x for x in f.read_text().splitlines() if "SOA" in x), "") if f.exists() else ""
        rss = paths[name]["rss"]
        print(f"{name}: unbound RSS {rss} kB at end; its cluster zone file on disk: "
              f"{soa.split()[-5] if soa else 'none'} "
              f"(serial now {paths[name]['primary'].zones[dns.name.from_text('cluster.local.')].serial})")
    print(f"load average at end {load_average()}")
    return 0


def robust(work: Path, source_conf: Path, first: dict[str, str], fwd0: Any,
           edit: Callable[[Any, int], tuple[Any, str, str]], texts_cls: Any,
           load_average: Callable[[], str]) -> int:
    """The failure cases, with SOA refresh 5 s, retry 2 s, expire 20 s (7, 8: the resync
    and expire 2^31-1)."""
    timers = (5, 2, 20)
    texts = texts_cls()
    texts.update(fwd0)
    zones = {z: Zone.parse(z, t, serial=100, timers=timers) for z, t in first.items()}
    prim: Primary | None = Primary(zones)
    assert prim is not None
    port = prim.port
    ub = Unbound(source_conf, work / "robust", primary=port, zonefile="unbound", zones=zones)
    ro = Unbound(source_conf, work / "robust-ro", primary=port, zonefile="read-only",
                 zones=zones)
    ub.start()
    ro.start()
    fwd = fwd0
    print(f"SOA refresh {timers[0]} s, retry {timers[1]} s, expire {timers[2]} s; "
          f"load average {load_average()}")
    cz = dns.name.from_text(fwd0.zone)  # absolute

    def change(k: int, *, notify: bool = True) -> tuple[str, str, float]:
        nonlocal fwd
        fwd, host, ip = edit(fwd, k)
        assert prim is not None
        new = texts.update(fwd).zones
        t = time.perf_counter()
        prim.update(new, notify=None)
        if notify:
            for name in new:
                prim.notify(name, ub.port)
                prim.notify(name, ro.port)
        return host, ip, t

    try:
        host, ip, t0 = change(0)
        wait_for(ub.port, host, ip)
        wait_for(ro.port, host, ip)
        print(f"1. a change with NOTIFY: new answer from both after "
              f"{(time.perf_counter() - t0) * 1000:.1f} ms")

        host, ip, t0 = change(1, notify=False)
        wait_for(ub.port, host, ip, limit=60, every=0.05)
        print(f"2. a NOTIFY lost: new answer after {time.perf_counter() - t0:.1f} s "
              f"(SOA refresh {timers[0]} s, counted from the last transfer or probe)")
        wait_for(ro.port, host, ip, limit=60, every=0.05)

        prim.close()
        prim = None
        for u in (ub, ro):
            u.stop()
            u.start()
        t0 = time.perf_counter()
        print(f"3. primary gone, unbound restarted: {host} -> {ask(ub.port, host)} with the "
              f"file unbound wrote after each transfer, {ask(ro.port, host)} with the file "
              f"never written after its start (today's IP {ip})")
        t_expire, rcode, got = None, "", list[str]()
        while time.perf_counter() - t0 < timers[2] + 15:
            rcode, got = ask(ub.port, host)
            if rcode != "NOERROR" or got != [ip]:
                t_expire = time.perf_counter() - t0
                break
            time.sleep(0.25)
        print(f"   after the restart it answered for {t_expire and round(t_expire, 1)} s, "
              f"then {rcode} {got} (SOA expire {timers[2]} s, counted from the restart)")

        fwd, host, ip = edit(fwd, 2)  # the change made while no primary ran
        zones = {z: Zone.parse(z, t, serial=100_001, timers=timers)
                 for z, t in texts.update(fwd).zones.items()}
        for z in zones.values():  # made before it listens: the time below is unbound's
            z.axfr_messages(dns.message.make_query(z.name, "AXFR"))
        prim = Primary(zones, port=port)
        t0 = time.perf_counter()
        for name in zones:
            prim.notify(name, ub.port)
            prim.notify(name, ro.port)
        wait_for(ub.port, host, ip, limit=60, every=0.01)
        took = time.perf_counter() - t0
        wait_for(ro.port, host, ip, limit=60, every=0.01)
        print(f"4. primary back with a new, higher serial and no history: new answer after "
              f"{took * 1000:.0f} ms (both: {(time.perf_counter() - t0) * 1000:.0f} ms); "
              f"primary events {[e for _, e in prim.events if 'xfr' in e]}")

        prim.close()
        zones = {z: Zone.parse(z, t, serial=5, timers=timers)
                 for z, t in texts.update(fwd).zones.items()}
        prim = Primary(zones, port=port)
        host, ip, t0 = change(3)
        try:
            wait_for(ub.port, host, ip, limit=timers[0] * 3, every=0.05)
            print("5. primary back with a lower serial: the change arrived")
        except RuntimeError as exc:
            print(f"5. primary back with a lower serial ({zones[cz.to_text()].serial}, "
                  f"the resolver has 100001): {exc}; primary events "
                  f"{sorted({e.split()[0] for _, e in prim.events})}")

        # 7. the resync: the primary's text in the file + auth_zone_reload, whatever serial
        # the resolver had; the SOA expire at 2^31-1 from here on
        never = (5, 2, 2**31 - 1)
        for z in zones.values():
            z.timers = never
        t0 = time.perf_counter()
        for name, z in zones.items():
            (ub.dir / f"table-{name.rstrip('.')}.zone").write_text(z.text())
            control(ub.dir / "control.sock", f"auth_zone_reload {name}")
        serial = ask(ub.port, cz.to_text(), "SOA")[1]
        rcode, got = ask(ub.port, host)
        print(f"7. resync with file + auth_zone_reload: SOA now {serial}, {host} -> {got} "
              f"(want {ip}) after {(time.perf_counter() - t0) * 1000:.0f} ms")
        prim.events.clear()
        host, ip, t0 = change(5)
        wait_for(ub.port, host, ip, limit=30, every=0.01)
        print(f"   the next change by IXFR again: new answer after "
              f"{(time.perf_counter() - t0) * 1000:.0f} ms; primary events "
              f"{[e for _, e in prim.events if 'xfr' in e]}")

        # 8. SOA expire 2^31-1: the primary gone, probes failing, the zone still answers
        prim.close()
        prim = None
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 25:
            rcode, got = ask(ub.port, host)
            if rcode != "NOERROR" or got != [ip]:
                break
            time.sleep(0.5)
        print(f"8. expire 2^31-1, primary gone: after {time.perf_counter() - t0:.0f} s "
              f"(refresh 5, retry 2: several failed probes) {host} -> {rcode} {got}")
        prim = Primary(zones, port=port)

        prim.close()
        ub.stop()  # from here on only the resolver restarted with an old file
        fwd, host, ip = edit(fwd, 4)
        zones = {z: Zone.parse(z, t, serial=200_001, timers=(3600, 600, 86400))
                 for z, t in texts.update(fwd).zones.items()}
        for z in zones.values():
            z.axfr_messages(dns.message.make_query(z.name, "AXFR"))
        prim = Primary(zones, port=port)
        ro.stop()
        ro.start()  # its file: the one written before its first start
        t0 = time.perf_counter()
        try:
            wait_for(ro.port, host, ip, limit=3, every=0.05)
            print("6. restarted with an old file, primary up, no NOTIFY: new answer after "
                  f"{time.perf_counter() - t0:.1f} s")
        except RuntimeError as exc:
            print(f"6. restarted with an old file, primary up, no NOTIFY: {exc} (its first "
                  f"probe waits for the SOA refresh of its file, {timers[0]} s here)")
        prim.events.clear()
        t0 = time.perf_counter()
        for name in texts.update(fwd).zones:
            prim.notify(name, ro.port)
        wait_for(ro.port, host, ip, limit=60, every=0.01)
        print(f"   then a NOTIFY: new answer after {(time.perf_counter() - t0) * 1000:.0f} ms; "
              f"primary events {[e for _, e in prim.events if 'xfr' in e]}")
        print(f"load average at end {load_average()}")
    finally:
        ub.stop()
        ro.stop()
        if prim is not None:
            prim.close()
    return 0


def run() -> int:
    try:
        return main()
    finally:
        for ub in STARTED:
            ub.stop()


if __name__ == "__main__":
    raise SystemExit(run())
