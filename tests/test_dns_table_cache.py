"""The DNS table's domain cache: held by the caller, keyed by name, never a stale answer."""

from __future__ import annotations

from controlplane.dns.records import NameRecord, SrvRecord
from controlplane.dns.views import TableEntry, TenantView
from controlplane.policy.selection import Action
from controlplane.translate import dns_table as dns_table_module
from controlplane.translate.dns_table import DomainCache, dns_table, dns_table_bytes


def view(*records: NameRecord) -> TenantView:
    return TenantView(tenant="t", policy="p", upstreams=(), ttl_seconds=30,
                      entries=tuple(TableEntry(r, Action.ALLOW, "default") for r in records))


def record(name: str, ip: str, *, srv_port: int = 0) -> NameRecord:
    srv = (SrvRecord("http", "tcp", srv_port, name),) if srv_port else ()
    return NameRecord(name=name, ipv4=(ip,), srv=srv)


def answers(table_bytes: bytes) -> dict[str, list[str]]:
    table = dns_table_module.DnsTable.FromString(table_bytes)
    return {vd.name: list(vd.endpoint.address_list.address) for vd in table.virtual_domains
            if vd.endpoint.address_list.address}


def test_a_cached_table_is_the_table_built_afresh() -> None:
    cache = DomainCache()
    v = view(record("a.ns.svc.cluster.local", "10.0.0.1", srv_port=80),
             record("b.ns.svc.cluster.local", "10.0.0.2"))
    assert dns_table_bytes(v, cache) == dns_table_bytes(v)
    assert dns_table_bytes(v, cache) == dns_table_bytes(v)  # now from the cache
    assert len(cache) == 2
    assert dns_table(v) == dns_table_module.DnsTable.FromString(dns_table_bytes(v, cache))


def test_a_changed_record_is_serialised_again() -> None:
    cache = DomainCache()
    a, b = record("a.x", "10.0.0.1"), record("b.x", "10.0.0.2")
    dns_table_bytes(view(a, b), cache)
    moved = record("a.x", "10.9.9.9")  # the same name, a new record
    assert answers(dns_table_bytes(view(moved, b), cache)) == {
        "a.x": ["10.9.9.9"], "b.x": ["10.0.0.2"]}
    assert len(cache) == 2  # in place of the old entry, not beside it


def test_the_cache_is_bounded_and_keeps_what_is_still_asked_for() -> None:
    cache = DomainCache(limit=4)
    kept = record("kept.x", "10.0.0.1")
    first = cache.get(kept)
    for i in range(20):
        out = dns_table_bytes(view(kept, record(f"gone-{i}.x", "10.1.0.1")), cache)
        assert answers(out)["kept.x"] == ["10.0.0.1"]
        assert len(cache) <= 2 * 4
    assert cache.get(kept) is first  # never rebuilt: it moved back at every turn


def test_the_module_keeps_no_state() -> None:
    dns_table_bytes(view(record("a.x", "10.0.0.1")))
    state = {name: value for name, value in vars(dns_table_module).items()
             if isinstance(value, dict | list | set) and not name.startswith("__")}
    assert state == {}
