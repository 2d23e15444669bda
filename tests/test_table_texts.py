"""``TableTexts`` (translate/table_texts.py) makes, change after change, exactly what the
full functions make from the whole table (``table_zones``, ``table_rpz``,
``outside_data``): over random sequences of tables where records are kept (the same
object), copied (an equal one), changed, added and removed, with PTR owners competing
for an IP, aliases, wildcards in and outside the zone, SRV records, and changes of the
table's TTL and zone."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.dns.records import ClusterTarget, NameRecord, SrvRecord
from controlplane.dns.views import Forwarding, TableEntry
from controlplane.policy.selection import Action
from controlplane.translate.table_texts import NameTexts, TableTexts, _any_name, _name
from controlplane.translate.unbound_table import (
    outside_data,
    reverse_pointer,
    table_rpz,
    table_zones,
)

NAMES = (
    "s0.a.svc.cluster.local", "s1.b.svc.cluster.local", "s2.a.svc.cluster.local",
    "h0.db.a.svc.cluster.local", "h1.db.a.svc.cluster.local", "db.a.svc.cluster.local",
    "10-1-0-1.a.pod.cluster.local", "api.partner.example", "web.partner.example",
    "*.partner.example", "*.w.a.svc.cluster.local", "x.w.a.svc.cluster.local",
    "y.x.w.a.svc.cluster.local", "ext.a.svc.cluster.local", "ext2.a.svc.cluster.local",
    "out-alias.example", "*.example", "cluster.local",
)
ALIASABLE = {"ext.a.svc.cluster.local", "ext2.a.svc.cluster.local", "out-alias.example",
             "s2.a.svc.cluster.local", "api.partner.example"}
TARGETS = ("s0.a.svc.cluster.local", "ext2.a.svc.cluster.local", "ext.a.svc.cluster.local",
           "api.partner.example", "foo.example.com", "10.0.0.1", "fd00::9",
           "z.w.a.svc.cluster.local", "nothere.a.svc.cluster.local", "out-alias.example")
V4 = ("10.0.0.1", "10.0.0.2", "10.1.0.1", "192.0.2.1", "192.0.2.2")
V6 = ("fd00::1", "fd00::2", "2001:db8::1")
KINDS = ("service", "headless", "pod", "serviceentry")

srvs = st.lists(st.builds(SrvRecord, service=st.sampled_from(("http", "grpc")),
                          protocol=st.sampled_from(("tcp", "udp")),
                          port=st.sampled_from((80, 9090)),
                          target=st.sampled_from(NAMES[:6])),
                max_size=2).map(tuple)


@st.composite
def records(draw: st.DrawFn, name: str) -> NameRecord:
    cluster: tuple[ClusterTarget, ...] = ()
    if name in ALIASABLE and not name.startswith("*") and draw(st.booleans()):
        host = draw(st.sampled_from((*TARGETS, name)))
        cluster = (ClusterTarget(host, 80),)
    return NameRecord(
        name=name,
        ipv4=tuple(draw(st.lists(st.sampled_from(V4), max_size=3, unique=True))),
        ipv6=tuple(draw(st.lists(st.sampled_from(V6), max_size=2, unique=True))),
        srv=draw(srvs),
        sources=(f"Service {name}",),
        kind=draw(st.sampled_from(KINDS)),
        ttl=draw(st.sampled_from((5, 30))),
        cluster=cluster,
        dropped=tuple(draw(st.lists(st.sampled_from(("10.9.0.1", "FD00::1")), max_size=1))),
        mapped=draw(st.booleans()),
    )


# One step: for some names, what happens to them (new record, an equal copy, removed).
ops = st.one_of(st.just("copy"), st.just("remove"), st.just("keep"), st.just("new"))


@st.composite
def sequences(draw: st.DrawFn) -> list[tuple[list[NameRecord], int, str]]:
    table: dict[str, NameRecord] = {}
    out = []
    for _ in range(draw(st.integers(1, 8))):
        for name in draw(st.lists(st.sampled_from(NAMES), max_size=len(NAMES), unique=True)):
            op = draw(ops)
            if op == "remove":
                table.pop(name, None)
            elif op == "copy" and name in table:
                table[name] = replace(table[name])  # equal, not the same object
            elif op != "keep" or name not in table:
                table[name] = draw(records(name))
        order = draw(st.permutations(sorted(table)))
        ttl = draw(st.sampled_from((30, 30, 30, 10)))
        zone = draw(st.sampled_from(("cluster.local",) * 5 + ("example",)))
        out.append(([table[n] for n in order], ttl, zone))
    return out


def forwarding(recs: list[NameRecord], ttl: int, zone: str) -> Forwarding:
    return Forwarding(server=None, zone=zone, table_ttl=ttl,
                      table=tuple(TableEntry(r, Action.ALLOW, "test") for r in recs))


@settings(max_examples=300, deadline=None)
@given(sequences(), st.sampled_from((0, 3, 256)), st.sampled_from((0, 2, 1 << 18)))
def test_the_same_files_as_the_whole_table_made_again(steps: list[tuple[list[NameRecord],
                                                                        int, str]],
                                                      bulk: int, shared: int) -> None:
    """``bulk``: past that many changed IPs the reverse zones are sorted again whole;
    ``shared``: two tables share their names' texts (``NameTexts`` of that limit), the
    second one given every other table of the sequence (0: nothing shared)."""
    names = NameTexts(limit=shared) if shared else None
    texts = TableTexts(bulk=bulk, shared=names)
    other = TableTexts(bulk=bulk, shared=names)
    for i, (recs, ttl, zone) in enumerate(steps):
        fwd = forwarding(recs, ttl, zone)
        for t in (texts, other) if i % 2 else (other, texts):
            got = t.update(fwd)
            assert list(got.zones.items()) == list(table_zones(fwd).items())
            assert got.rpz == table_rpz(fwd)
            assert got.outside == outside_data(fwd)
            assert t.update(fwd) is got  # the very table again: nothing made


def test_only_the_changed_name_is_formatted_again() -> None:
    recs = [NameRecord(f"s{i}.a.svc.cluster.local", ipv4=(f"10.0.{i // 250}.{i % 250 + 1}",))
            for i in range(1000)]
    texts = TableTexts()
    texts.update(forwarding(recs, 30, "cluster.local"))
    before = dict(texts._names)  # noqa: SLF001 - what was kept is what this test is about
    recs[7] = replace(recs[7], ipv4=("10.66.0.1",))
    recs[8] = replace(recs[8])  # an equal copy: reused
    fwd = forwarding(recs, 30, "cluster.local")
    got = texts.update(fwd)
    after = texts._names  # noqa: SLF001
    remade = [n for n in after if after[n] is not before[n]]
    assert remade == ["s7.a.svc.cluster.local"]
    assert "s7.a.svc.cluster.local. 30 IN A 10.66.0.1\n" in got.zones["cluster.local."]
    assert "1.0.66.10.in-addr.arpa. 30 IN PTR s7.a.svc.cluster.local." in got.zones[
        "10.in-addr.arpa."]
    assert list(got.zones.items()) == list(table_zones(fwd).items())
    assert texts.full_builds == 1


def test_two_records_of_one_name_fall_back_to_the_whole_table() -> None:
    recs = [NameRecord("s.a.svc.cluster.local", ipv4=("10.0.0.1",)),
            NameRecord("s.a.svc.cluster.local", ipv4=("10.0.0.2",))]
    texts = TableTexts()
    for _ in range(2):
        fwd = forwarding(list(recs), 30, "cluster.local")
        assert texts.update(fwd).zones == table_zones(fwd)
    fwd = forwarding(recs[:1], 30, "cluster.local")
    assert texts.update(fwd).zones == table_zones(fwd)


def test_a_record_in_two_tables_is_formatted_once() -> None:
    rec = NameRecord("s.a.svc.cluster.local", ipv4=("10.0.0.1",),
                     srv=(SrvRecord("http", "tcp", 80, "s.a.svc.cluster.local"),))
    names = NameTexts()
    one, two = TableTexts(shared=names), TableTexts(shared=names)
    fwd = forwarding([rec], 30, "cluster.local")
    assert one.update(fwd).zones == two.update(fwd).zones == table_zones(fwd)
    first, second = one._names[rec.name], two._names[rec.name]  # noqa: SLF001
    assert first is not second and first.text is second.text  # each its own, texts shared
    assert len(names) == 1


@given(st.integers(0, (1 << 32) - 1))
def test_an_ipv4_reverse_pointer_is_ipaddress_one(value: int) -> None:
    ip = str(ipaddress.IPv4Address(value))
    assert reverse_pointer(ip) == ipaddress.ip_address(ip).reverse_pointer


def test_other_reverse_pointers_are_ipaddress_ones() -> None:
    for ip in ("fd00::1", "FD00::1", "2001:db8::1", "::ffff:10.0.0.1"):
        assert reverse_pointer(ip) == ipaddress.ip_address(ip).reverse_pointer


def _lines(text: str) -> set[str]:
    """A zone text's records as a set, the head ($ORIGIN, $TTL) left out."""
    return {line for line in text.splitlines() if line and not line.startswith("$")}


@settings(max_examples=200, deadline=None)
@given(sequences(), st.sampled_from((0, 3, 256)))
def test_the_changes_turn_each_zone_into_its_next_text(
        steps: list[tuple[list[NameRecord], int, str]], bulk: int) -> None:
    """What an IXFR sends (``TableTexts.changes``, resolvers/primary.py): each zone's lines
    removed and added take the last text's records to the new one's, exactly."""
    texts = TableTexts(bulk=bulk)
    made: list[tuple[object, dict[str, str]]] = []  # each table and its zones
    for recs, ttl, zone in steps:
        fwd = forwarding(recs, ttl, zone)
        last = texts.table_of
        zones = texts.update(fwd).zones
        if texts.changes is not None:
            # from the last table, or (an equal table again) from the one before it
            # (the latest such table: every empty table is the one tuple ``()``)
            base = next((z for t, z in reversed(made) if t is texts.changes_from), None)
            assert base is not None and (texts.changes_from is last or texts.changes)
            for name, text in zones.items():
                if name not in base:
                    continue
                gone, new = texts.changes.get(name, ((), ()))
                old = _lines(base[name])
                assert set(gone) <= old and not set(new) & (old - set(gone)), name
                assert (old - set(gone)) | set(new) == _lines(text), name
        made.append((fwd.table, zones))


def test_one_changed_address_is_a_change_of_two_lines_per_zone() -> None:
    web = NameRecord(name="web.a.svc.cluster.local", ipv4=("10.96.0.1",),
                     sources=("Service a/web",), kind="service")
    texts = TableTexts()
    texts.update(forwarding([web], 30, "cluster.local"))
    assert texts.changes is None  # a first table: the whole files
    texts.update(forwarding([replace(web, ipv4=("10.96.0.2",))], 30, "cluster.local"))
    assert texts.changes == {
        "cluster.local.": (("web.a.svc.cluster.local. 30 IN A 10.96.0.1",),
                           ("web.a.svc.cluster.local. 30 IN A 10.96.0.2",)),
        "10.in-addr.arpa.": (("1.0.96.10.in-addr.arpa. 30 IN PTR web.a.svc.cluster.local.",),
                             ("2.0.96.10.in-addr.arpa. 30 IN PTR web.a.svc.cluster.local.",)),
    }


def test_a_first_table_counts_a_ptr_line_two_spellings_give() -> None:
    """Two spellings of one address owned by one name give one PTR line: a first table
    (``_Reverse.fill``) keeps count, so the line stays when one spelling goes."""
    both = NameRecord(name="s.a.svc.cluster.local", ipv6=("fd00::1",), dropped=("FD00::1",),
                      kind="service", sources=("Service a/s",))
    one = replace(both, dropped=())
    for bulk in (0, 256):
        texts = TableTexts(bulk=bulk)
        for recs in ([both], [one], [both], []):
            fwd = forwarding(recs, 30, "cluster.local")
            assert list(texts.update(fwd).zones.items()) == list(table_zones(fwd).items())


def _fields(item: object) -> tuple[object, ...]:
    return tuple(getattr(item, f) for f in ("rec", "place", "text", "lines", "rank", "ptr",
                                            "ip"))


@st.composite
def one_records(draw: st.DrawFn) -> NameRecord:
    """A ClusterIP Service's record (``_name``'s short path), often with one thing that
    makes it another (each way of not being one)."""
    name = "s.a.svc.cluster.local"
    ip = str(ipaddress.IPv4Address(draw(st.integers(0, (1 << 32) - 1))))
    srv = tuple(draw(st.lists(st.builds(
        SrvRecord, service=st.sampled_from(("http", "grpc", "")),
        protocol=st.sampled_from(("tcp", "udp")), port=st.integers(0, 70000),
        target=st.just(name), priority=st.integers(0, 3), weight=st.integers(0, 200)),
        max_size=3)))
    rec = NameRecord(name=name, ipv4=(ip,), ipv6=(f"::ffff:{ip}",), srv=srv, kind="service",
                     ttl=draw(st.sampled_from((5, 30, 0))), mapped=True)
    spoil = draw(st.sampled_from(("", "", "", "", "two", "v6", "unmapped", "kind", "dropped",
                                  "cluster", "outside", "apex", "wildcard", "target", "upper",
                                  "similar")))
    changes: dict[str, object] = {
        "": {}, "two": {"ipv4": (ip, "10.0.0.1")}, "v6": {"ipv4": ("fd00::1",)},
        "unmapped": {"ipv6": ("fd00::2",), "mapped": False}, "kind": {"kind": draw(
            st.sampled_from(KINDS[1:]))}, "dropped": {"dropped": ("10.9.0.1",)},
        "cluster": {"cluster": (ClusterTarget("t.example", 80),)},
        "outside": {"name": "s.example"}, "apex": {"name": "cluster.local"},
        "wildcard": {"name": "*.a.svc.cluster.local"},
        "target": {"srv": (*srv, SrvRecord("x", "tcp", 1, "t.b.svc.cluster.local"))},
        "upper": {"name": "S.a.svc.cluster.local"}, "similar": {"name": "s.xcluster.local"},
    }[spoil]
    return replace(rec, **changes)  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(one_records(), st.sampled_from(("cluster.local", "example")))
def test_a_service_name_short_path_gives_what_the_full_steps_give(rec: NameRecord,
                                                                   bare: str) -> None:
    assert _fields(_name(rec, bare)) == _fields(_any_name(rec, bare))
