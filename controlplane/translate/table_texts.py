"""A tenant's table -> the tenant resolver's files, made again by what changed.

``unbound_table.table_zones``, ``table_rpz`` and ``outside_data`` make everything from
the whole table: ~0.1 s of CPU at 10,000 names, ~1 s at 100,000, on every change of a
wide tenant. ``TableTexts`` keeps, per name, the lines its record gave last time, and
per IP the names that may own its PTR, and formats again only the names whose record
changed (the view's records are immutable: the same object, or an equal one, gives the
same lines). Its output is the very output of the full functions
(tests/test_table_texts.py compares them over random sequences of changes).

What still follows the table's size: one pass that compares each entry's record with
the last one of its name (identity first), the join of the zone text, and unbound's
reload of the file (``resolvers/pool.py``). Aliases and zone wildcards depend on other
names: they are planned again on every change, as the full functions do (a table has
few of them; a wildcard in the cluster zone makes its owners be collected again, a
pass over the names).

Not thread-safe: one owner (the pool, under its lock).
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from controlplane.core.names import is_ipv4_text
from controlplane.dns.records import NameRecord
from controlplane.dns.views import Forwarding
from controlplane.translate.unbound_table import (
    SPEC_VERSION,
    AliasPlan,
    RpzRecord,
    _address_lines,
    _addresses,
    _bare,
    _endpoint_name,
    _external,
    _fqdn,
    _head,
    _in_zone,
    _reverse_zone,
    _Table,
    _zone_wildcards,
    alias_lines,
    ipv4_reverse_pointer,
    outside_data,
    reverse_pointer,
    rpz_records,
    table_rpz,
    table_zones,
)

# Where a record goes (the order of ``table_zones``' tests).
_WILD, _ALIAS, _ZONE, _OUTSIDE = range(4)


@dataclass(frozen=True, slots=True)
class TableOutput:
    """What the resolver is given for one table."""

    zones: dict[str, str]  # ``table_zones``: zone -> zone file text
    rpz: tuple[RpzRecord, ...]  # ``table_rpz``
    outside: tuple[str, ...]  # ``outside_data``


@dataclass(slots=True, eq=False)  # removed from lists by identity
class _Name:
    """One name of the last table: its record and what it gave (kept small: one per name
    of a 100,000-name table)."""

    rec: NameRecord
    place: int
    text: str = ""  # _ZONE: its A/AAAA/SRV lines, each ending in a newline
    lines: tuple[str, ...] = ()  # _OUTSIDE: its local-data lines
    rank: int = -1  # for the PTR of its addresses (``ptr_ips``): lower wins; -1: none
    ptr: tuple[str, ...] = ()  # with one address in ``ptr_ips``: its PTR line, if it wins
    ip: str = ""  # with ``ptr``: that address

    @property
    def ptr_ips(self) -> tuple[str, ...]:
        """The addresses whose PTR this name may own (``_ptr_sources``)."""
        return () if self.rank < 0 else _ptr_ips(self.rec)

    def owners(self) -> list[str]:
        """_ZONE: the owners of its lines (a zone wildcard stops there)."""
        name = self.rec.name
        return [name, *(f"_{s.service}._{s.protocol}.{name}" for s in self.rec.srv)]


_SRV_SHAPE = operator.attrgetter("service", "protocol", "priority", "weight", "port")
_SRV_TEXTS: dict[tuple[object, ...], list[str]] = {}
_MEMO_LIMIT = 4096  # SRV shapes kept (a cluster has few port lists)


def _name(rec: NameRecord, bare: str) -> _Name:
    """What ``rec`` gives, as ``table_zones`` / ``outside_data`` / ``_ptr_sources`` see it.

    A Service's name in the zone with one IPv4 address (mapped or none of IPv6), nothing
    dropped and every SRV target its own name (a ClusterIP Service: the common case) is
    made here with fewer steps: its SRV lines a memoised text per shape (ports, TTL)
    joined with the owner, its one PTR line directly. The rest: ``_any_name``
    (tests/test_table_texts.py compares the two)."""
    name = rec.name
    ipv4 = rec.ipv4
    if (len(ipv4) != 1 or rec.kind != "service" or rec.dropped or rec.cluster
            or (rec.ipv6 and not rec.mapped) or name.startswith("*.")
            or (name != bare and not name.endswith("." + bare))):  # not _in_zone
        return _any_name(rec, bare)
    ip = ipv4[0]
    if not is_ipv4_text(ip):
        return _any_name(rec, bare)
    owner = _fqdn(name)
    ttl = rec.ttl
    text = f"{owner} {ttl} IN A {ip}\n"
    srv = rec.srv
    if srv:
        for s in srv:
            if s.target != name:
                return _any_name(rec, bare)
        key = (ttl, *map(_SRV_SHAPE, srv))
        pieces = _SRV_TEXTS.get(key)
        if pieces is None:
            # the SRV lines cut where the owner goes (twice a line: owner and target)
            pieces = []
            sep = ""
            for s in srv:
                pieces += [f"{sep}_{s.service}._{s.protocol}.",
                           f" {ttl} IN SRV {s.priority} {s.weight} {s.port} "]
                sep = "\n"
            pieces.append("\n")
            if len(_SRV_TEXTS) < _MEMO_LIMIT:
                _SRV_TEXTS[key] = pieces
        text += owner.join(pieces)
    ptr = f"{ipv4_reverse_pointer(ip)}. {ttl} IN PTR {owner}"
    return _Name(rec, _ZONE, text, (), 0, (ptr,), ip)


def _any_name(rec: NameRecord, bare: str) -> _Name:
    """``_name`` of any record (the full steps)."""
    name = rec.name
    in_zone = _in_zone(name, bare)
    owner = ""
    if name.startswith("*."):  # rec.is_wildcard
        item = _Name(rec, _WILD)
    elif rec.cluster:
        item = _Name(rec, _ALIAS)
    elif in_zone:
        owner = _fqdn(name)
        ttl = rec.ttl
        if rec.dropped:
            lines = _address_lines(owner, ttl, *_addresses(rec))
        else:  # _addresses without lists: the record's own addresses
            lines = [f"{owner} {ttl} IN A {a}" for a in rec.ipv4]
            if rec.ipv6 and not rec.mapped:
                lines += [f"{owner} {ttl} IN AAAA {a}" for a in rec.ipv6]
        for s in rec.srv:
            target = owner if s.target == name else _fqdn(s.target)
            lines.append(f"_{s.service}._{s.protocol}.{owner} {ttl} IN SRV {s.priority} "
                         f"{s.weight} {s.port} {target}")
        item = _Name(rec, _ZONE, text="\n".join(lines) + "\n" if lines else "")
    else:
        item = _Name(rec, _OUTSIDE,
                     lines=tuple(_address_lines(_fqdn(name), rec.ttl, *_addresses(rec))))
    kind = rec.kind
    if kind == "service":
        rank = 0
    elif kind == "pod":
        rank = 2
    elif kind == "headless" and _endpoint_name(name, bare):
        rank = 1
    else:
        return item
    if in_zone:
        item.rank = rank
        ips = _ptr_ips(rec)
        if len(ips) == 1:  # the common case; what _Reverse._lines_of makes of it
            item.ip = ips[0]
            item.ptr = (f"{reverse_pointer(item.ip)}. {rec.ttl} IN PTR "
                        f"{owner or _fqdn(name)}",)
    return item


def _ptr_ips(rec: NameRecord) -> tuple[str, ...]:
    """``_Name.ptr_ips`` of a name that may own PTR records."""
    ips = rec.ipv4 + (() if rec.mapped else rec.ipv6) + rec.dropped
    return ips if len(ips) == 1 else tuple(dict.fromkeys(ips))


class NameTexts:
    """What each record gives a table (``_name``: its place, lines and PTR rank), shared
    by the tables of one owner: a record that many tenants' tables hold (each wide
    tenant's, and the narrow tenant's whose namespace it is in) is formatted once.

    Like ``dns_table.DomainCache``: an entry is used only for the very record object it
    was made from (it holds the object) and the same zone; bounded: when ``limit`` names
    are stored they become the previous generation, looked up until the next turn. Not
    thread-safe: one owner (the pool, under its lock), as ``TableTexts``.
    """

    def __init__(self, limit: int = 1 << 18) -> None:
        self.limit = limit
        self._current: dict[str, _Texts] = {}
        self._previous: dict[str, _Texts] = {}

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def name(self, rec: NameRecord, bare: str) -> _Name:
        """``_name(rec, bare)``: a new ``_Name`` (each table's own), its texts shared."""
        key = rec.name
        hit = self._current.get(key)
        if hit is None or hit[6] is not rec or hit[7] != bare:
            hit = self._previous.get(key)
            if hit is None or hit[6] is not rec or hit[7] != bare:
                item = _name(rec, bare)
                hit = (item.place, item.text, item.lines, item.rank, item.ptr, item.ip, rec,
                       bare)
            else:
                item = _Name(rec, *hit[:6])
            if len(self._current) >= self.limit:
                self._previous, self._current = self._current, {}
            self._current[key] = hit
            return item
        return _Name(rec, *hit[:6])


# What _name gave (place, text, lines, rank, ptr, ip: _Name's fields after the record),
# then the record and the zone it was placed for.
_Texts = tuple[int, str, tuple[str, ...], int, tuple[str, ...], str, NameRecord, str]


class _Exact(Mapping[str, NameRecord]):
    """The table's exact names, as ``_Table.exact`` holds them, over ``TableTexts``' index."""

    def __init__(self, names: dict[str, _Name]) -> None:
        self._names = names

    def __getitem__(self, name: str) -> NameRecord:
        item = self._names[name]
        if item.place == _WILD:
            raise KeyError(name)
        return item.rec

    def __iter__(self) -> Iterator[str]:
        return (n for n, item in self._names.items() if item.place != _WILD)

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass(slots=True)
class _Reverse:
    """The PTR records, kept by IP: who may own each, and each reverse zone's lines."""

    sources: dict[str, list[_Name]] = field(default_factory=dict)  # ip -> names that may own it
    lines: dict[str, tuple[str, ...]] = field(default_factory=dict)  # ip -> its PTR lines
    zones: dict[str, list[str]] = field(default_factory=dict)  # reverse zone -> sorted lines
    # (zone, line) -> how many more IPs give it than one (two spellings of one address)
    extra: dict[tuple[str, str], int] = field(default_factory=dict)
    # More IPs changed than this: their zones are sorted again whole (a first table, a
    # large change) instead of each line inserted in place (a memmove per line).
    bulk: int = 256
    # reverse zone -> (lines removed, lines added) by the last ``redo``
    delta: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)

    def drop(self, item: _Name) -> tuple[str, ...]:
        ips = item.ptr_ips
        for ip in ips:
            self.sources[ip].remove(item)
        return ips

    def add(self, item: _Name) -> tuple[str, ...]:
        ips = item.ptr_ips
        for ip in ips:
            self.sources.setdefault(ip, []).append(item)
        return ips

    def _lines_of(self, ip: str) -> tuple[str, ...]:
        names = self.sources.get(ip)
        if not names:
            self.sources.pop(ip, None)
            return ()
        if len(names) == 1:  # the common case: one name has the address
            item = names[0]
            if item.ptr:  # made with the name (its only PTR address is this one)
                return item.ptr
            return (f"{reverse_pointer(ip)}. {item.rec.ttl} IN PTR {_fqdn(item.rec.name)}",)
        owner = reverse_pointer(ip) + "."
        best = min(item.rank for item in names)
        return tuple(sorted({f"{owner} {item.rec.ttl} IN PTR {_fqdn(item.rec.name)}"
                             for item in names if item.rank == best}))

    def redo(self, ips: set[str]) -> set[str]:
        """The PTR lines of ``ips`` made again; the reverse zones they changed."""
        self.delta = {}
        if len(ips) > self.bulk:
            return self._redo_all(ips)
        dirty = set()
        for ip in ips:
            new = self._lines_of(ip)
            old = self.lines.get(ip, ())
            if new == old:
                continue
            rzone = _reverse_zone(ip)
            zone = self.zones.setdefault(rzone, [])
            removed, added = self.delta.setdefault(rzone, ([], []))
            for line in old:
                key = (rzone, line)
                if key in self.extra:
                    self.extra[key] -= 1
                    if not self.extra[key]:
                        del self.extra[key]
                else:
                    del zone[bisect.bisect_left(zone, line)]
                    removed.append(line)
            for line in new:
                at = bisect.bisect_left(zone, line)
                if at < len(zone) and zone[at] == line:
                    key = (rzone, line)
                    self.extra[key] = self.extra.get(key, 0) + 1
                else:
                    zone.insert(at, line)
                    added.append(line)
            if not zone:
                del self.zones[rzone]
            if new:
                self.lines[ip] = new
            else:
                self.lines.pop(ip, None)
            dirty.add(rzone)
        return dirty

    def fill(self, items: Iterable[_Name]) -> set[str]:
        """A new table's PTR records (``lines``, ``zones`` and ``extra`` empty): ``add``
        of each item and ``redo`` of every IP in one pass, without ``delta`` (a whole
        table's files tell no difference: ``TableTexts.update``); the reverse zones made.
        The names with one PTR address (``_Name.ip``, the common case) are in ``sources``
        already (``TableTexts._whole`` puts them there as it reads the table); ``items``:
        the others (an IP's list of names is a set to ``_lines_of`` and ``drop``: the
        order of its names does not matter)."""
        sources = self.sources
        for item in items:
            for ip in item.ptr_ips:
                have = sources.get(ip)
                if have is None:
                    sources[ip] = [item]
                else:
                    have.append(item)
        lines = self.lines
        found: dict[str, list[str]] = {}
        zone_of: dict[str, str] = {}  # an IPv4 address's first octet -> its reverse zone
        for ip, names in sources.items():
            # one name with its PTR made: the common case (``_lines_of``)
            new = names[0].ptr if len(names) == 1 and names[0].ptr else self._lines_of(ip)
            lines[ip] = new
            if ":" in ip:
                rzone = _reverse_zone(ip)
            else:
                head = ip.partition(".")[0]
                rzone = zone_of.get(head) or zone_of.setdefault(head, _reverse_zone(ip))
            zone_lines = found.get(rzone)
            if zone_lines is None:
                found[rzone] = list(new)
            else:
                zone_lines += new
        extra = self.extra
        for zone, every in found.items():
            if zone.endswith(".in-addr.arpa."):
                # IPv4: each address has one text (a record's addresses are valid, and the
                # PTR owner of IPv4 text that is not its address's own raises), its lines
                # are a set, and two addresses' owners differ: no line comes twice
                every.sort()
                self.zones[zone] = every
                continue
            unique = set(every)
            if len(unique) < len(every):
                for line in every:
                    extra[(zone, line)] = extra.get((zone, line), -1) + 1
            self.zones[zone] = sorted(unique)
        self.extra = {k: n for k, n in extra.items() if n}
        return set(found)

    def _redo_all(self, ips: set[str]) -> set[str]:
        """``redo`` for many IPs: their lines made again, then each zone they changed
        sorted again from every IP's lines."""
        dirty = set()
        zone_of: dict[str, str] = {}  # of the IPs changed (a first table: every IP)
        for ip in ips:
            new = self._lines_of(ip)
            if new == self.lines.get(ip, ()):
                continue
            if new:
                self.lines[ip] = new
            else:
                self.lines.pop(ip, None)
            rzone = zone_of[ip] = _reverse_zone(ip)
            dirty.add(rzone)
        found: dict[str, list[str]] = {zone: [] for zone in dirty}
        for ip, lines in self.lines.items():
            known = zone_of.get(ip)
            zone_lines = found.get(_reverse_zone(ip) if known is None else known)
            if zone_lines is not None:
                zone_lines.extend(lines)
        self.extra = {k: n for k, n in self.extra.items() if k[0] not in dirty}
        for zone, every in found.items():
            unique = sorted(set(every))
            before = set(self.zones.get(zone, ()))
            after = set(unique)
            self.delta[zone] = (sorted(before - after), sorted(after - before))
            if len(unique) < len(every):
                for line in every:
                    self.extra[(zone, line)] = self.extra.get((zone, line), -1) + 1
                self.extra = {k: n for k, n in self.extra.items() if n}
            if unique:
                self.zones[zone] = unique
            else:
                self.zones.pop(zone, None)
        return dirty


@dataclass(slots=True)
class _Parts:
    """What a table's names give its files, in table order (``TableTexts._update``)."""

    chunks: list[str] = field(default_factory=list)  # the zone names' texts
    outside: list[str] = field(default_factory=list)  # local-data lines
    aliases: list[NameRecord] = field(default_factory=list)
    wild_zone: dict[str, NameRecord] = field(default_factory=dict)  # base -> its record
    wild_all: list[NameRecord] = field(default_factory=list)

    def add(self, item: _Name, bare: str) -> None:
        place = item.place
        if place == _ZONE:
            self.chunks.append(item.text)
        elif place == _OUTSIDE:
            self.outside += item.lines
        elif place == _ALIAS:
            self.aliases.append(item.rec)
        else:
            rec = item.rec
            self.wild_all.append(rec)
            if _in_zone(rec.name, bare):
                self.wild_zone[rec.name[2:]] = rec


class TableTexts:
    """One tenant's table files, kept up to date by ``update`` (module docstring)."""

    def __init__(self, *, bulk: int = 256, shared: NameTexts | None = None) -> None:
        self._bulk = bulk  # ``_Reverse.bulk``
        # Each name's texts, shared with other tenants' tables (None: made here each time).
        self._shared = shared
        self.table_of: object = None  # the table tuple ``output`` was made from
        self.output = TableOutput({}, (), ())
        self._key: tuple[str, int] | None = None  # (zone, table TTL) the state is for
        self._names: dict[str, _Name] = {}
        self._reverse = _Reverse(bulk=self._bulk)
        self._reverse_texts: dict[str, str] = {}
        self.full_builds = 0  # how often the whole table was made (a start, a new zone)
        # What the last ``update`` changed, for a primary's IXFR (``resolvers/primary.py``):
        # zone -> (lines removed, lines added), from the table ``changes_from`` to
        # ``table_of``; None when not known (a first or whole build).
        self.changes: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] | None = None
        self.changes_from: object = None
        self._from: object = None  # ``changes_from`` of the last non-empty difference
        self._tail: list[str] = []  # the cluster zone's alias and wildcard lines

    def update(self, fwd: Forwarding) -> TableOutput:
        """The files of ``fwd``'s table; the names that changed since the last call are
        formatted again, the rest reused."""
        key = (fwd.zone, fwd.table_ttl)
        if fwd.table is self.table_of and key == self._key:
            return self.output
        first = key != self._key
        if first:
            self._key, self._names = key, {}
            self._reverse, self._reverse_texts = _Reverse(bulk=self._bulk), {}
            self.output = TableOutput({}, (), ())
            self._tail = []
            self.full_builds += 1
        since, before = self.table_of, self.changes
        self.changes_from, self.changes = since, None
        output = self._whole(fwd) if first else self._update(fwd)
        if first or self._key is None:  # a whole build: no difference to tell
            self.changes = None
        elif self.changes == {} and before:
            # an equal table again (a new tuple of the same records): the last difference
            # still takes its predecessor to this one
            self.changes_from, self.changes = self._from, before
        elif self.changes:
            self._from = since
        self.table_of, self.output = fwd.table, output
        return output

    def _update(self, fwd: Forwarding) -> TableOutput:
        bare = _bare(fwd.zone)
        old = self._names
        names: dict[str, _Name] = {}
        gone: list[_Name] = []
        came: list[_Name] = []
        parts = _Parts()
        chunks = parts.chunks
        seen = 0
        shared = self._shared
        make = _name if shared is None else shared.name
        for e in fwd.table:
            rec = e.record
            name = rec.name
            if name in names:  # two records of one name: what the full functions make
                return self._fallback(fwd)
            item = old.get(name)
            if item is not None:
                seen += 1
                if item.rec is not rec:
                    if item.rec == rec:
                        item.rec = rec  # the same record again: next time by identity
                    else:
                        gone.append(item)
                        item = None
            if item is None:
                item = make(rec, bare)
                came.append(item)
            names[name] = item
            if item.place == _ZONE:  # the common case, without a call
                chunks.append(item.text)
            else:
                parts.add(item, bare)
        if seen < len(old):
            gone += [item for n, item in old.items() if n not in names]
        self._names = names
        touched: set[str] = set()
        for item in gone:
            touched.update(self._reverse.drop(item))
        for item in came:
            touched.update(self._reverse.add(item))
        dirty = self._reverse.redo(touched)
        return self._files(fwd, parts, dirty, (gone, came))

    def _whole(self, fwd: Forwarding) -> TableOutput:
        """``_update`` of a first table (no state): every name new, its PTR records made
        in one pass (``_Reverse.fill``), no ``changes`` (a whole table's files)."""
        bare = _bare(fwd.zone)
        names: dict[str, _Name] = {}
        parts = _Parts()
        chunks = parts.chunks
        shared = self._shared
        make = _name if shared is None else shared.name
        sources = self._reverse.sources  # empty (a new _Reverse)
        more: list[_Name] = []  # the names with PTR addresses, but not one (``_Name.ip``)
        for e in fwd.table:
            rec = e.record
            name = rec.name
            if name in names:  # two records of one name: what the full functions make
                return self._fallback(fwd)
            item = names[name] = make(rec, bare)
            if item.place == _ZONE:  # the common case, without a call
                chunks.append(item.text)
            else:
                parts.add(item, bare)
            ip = item.ip
            if ip:  # one PTR address (``ptr_ips``): what _Reverse.fill's first pass did
                have = sources.get(ip)
                if have is None:
                    sources[ip] = [item]
                else:
                    have.append(item)
            elif item.rank >= 0:
                more.append(item)
        self._names = names
        dirty = self._reverse.fill(more)
        return self._files(fwd, parts, dirty, None)

    def _fallback(self, fwd: Forwarding) -> TableOutput:
        """Two records of one name: the full functions' files, and no state kept."""
        self.table_of, self._key, self._names = None, None, {}
        self.changes = None
        return TableOutput(table_zones(fwd), table_rpz(fwd), outside_data(fwd))

    def _files(self, fwd: Forwarding, parts: _Parts, dirty: set[str],
               changed: tuple[list[_Name], list[_Name]] | None) -> TableOutput:
        """The files from the table's parts and the reverse zones that changed; with
        ``changed`` (the names gone and come), ``changes`` too."""
        bare = _bare(fwd.zone)
        names = self._names
        zone = _fqdn(fwd.zone)
        ttl = fwd.table_ttl
        plans: list[AliasPlan] = []
        if parts.aliases:
            table = _Table(bare, _Exact(names),
                           {r.name[2:]: r for r in parts.wild_all if "." in r.name[2:]})
            plans = table.plans(parts.aliases)
        lines = _head(zone, zone, ttl)
        lines.append(f'dns-version.{zone} {ttl} IN TXT "{SPEC_VERSION}"')
        tail: list[str] = []
        owners: set[str] = set()
        for plan in plans:
            if _external(plan, bare) or not _in_zone(plan.name, bare):
                continue  # an RPZ record and a zone of its own, or outside the zone
            owners.add(plan.name)
            tail += alias_lines(plan)
        if parts.wild_zone:
            for item in names.values():
                if item.place == _ZONE:
                    owners.update(item.owners())
            tail += _zone_wildcards(owners, parts.wild_zone, bare)
        text = "".join([*(f"{line}\n" for line in lines), *parts.chunks,
                        *(f"{line}\n" for line in tail)])
        zones = {zone: text}
        if changed is None:
            self._tail = tail
        else:
            self.changes = self._changes(zone, *changed, tail)
        for rzone in dirty:
            if rzone in self._reverse.zones:
                self._reverse_texts[rzone] = "\n".join(
                    _head(rzone, zone, ttl) + self._reverse.zones[rzone]) + "\n"
            else:
                self._reverse_texts.pop(rzone, None)
        for rzone in sorted(self._reverse_texts):
            zones[rzone] = self._reverse_texts[rzone]
        for azone in sorted(_fqdn(p.name) for p in plans
                            if _external(p, bare) and _in_zone(p.name, bare)):
            zones[azone] = "\n".join(_head(azone, zone, ttl)) + "\n"
        return TableOutput(zones, rpz_records(parts.wild_all, plans, bare),
                           _outside(parts.outside, plans, bare))

    def _changes(self, zone: str, gone: list[_Name], came: list[_Name], tail: list[str]
                 ) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """Each zone's lines removed and added by this update (the names that changed, the
        alias and wildcard lines, the PTR lines): one step of an IXFR."""
        count: dict[str, int] = {}
        for item in gone:
            if item.place == _ZONE:
                for line in item.text.splitlines():
                    count[line] = count.get(line, 0) - 1
        for item in came:
            if item.place == _ZONE:
                for line in item.text.splitlines():
                    count[line] = count.get(line, 0) + 1
        if tail != self._tail:
            old_tail, new_tail = set(self._tail), set(tail)
            for line in old_tail - new_tail:
                count[line] = count.get(line, 0) - 1
            for line in new_tail - old_tail:
                count[line] = count.get(line, 0) + 1
        self._tail = tail
        out = {}
        removed = tuple(sorted(line for line, n in count.items() if n < 0))
        added = tuple(sorted(line for line, n in count.items() if n > 0))
        if removed or added:
            out[zone] = (removed, added)
        for rzone, (gone_lines, new_lines) in self._reverse.delta.items():
            if gone_lines or new_lines:
                out[rzone] = (tuple(gone_lines), tuple(new_lines))
        return out


def _outside(lines: list[str], plans: list[AliasPlan], bare: str) -> tuple[str, ...]:
    """``outside_data`` from the names outside the zone and the aliases' plans."""
    out = list(lines)
    for plan in plans:
        if not plan.target and not _in_zone(plan.name, bare):
            out += _address_lines(_fqdn(plan.name), plan.ttl, plan.ipv4, plan.ipv6)
    return tuple(sorted(out))
