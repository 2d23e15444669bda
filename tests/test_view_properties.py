"""Properties over random clusters and policies: nobody sees a name that is not theirs.

Checked through ``TableModel``, the reading of the translated table that the
policy table showed to agree with the real Envoy on every case.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core.inventory import Inventory
from controlplane.core.model import DefaultAction, DnsPolicy, LabelSelector, Service, ServiceEntry
from controlplane.core.settings import DnsSettings
from controlplane.dns.views import build_tenant_view, cluster_records
from controlplane.policy.selection import CompiledPolicy
from controlplane.translate.explain import TableModel

NAMESPACES = ["alpha", "beta", "gamma"]
NAMES = ["web", "db", "api"]
HOST_SUFFIXES = ["partner.example", "foo.com", "ok.foo.com"]


@st.composite
def clusters(draw: st.DrawFn) -> Inventory:
    objects: list[object] = []
    n = draw(st.integers(min_value=1, max_value=8))
    for i in range(n):
        ns = draw(st.sampled_from(NAMESPACES))
        name = draw(st.sampled_from(NAMES)) + str(i)
        objects.append(Service(ns, name, cluster_ips=(f"10.{NAMESPACES.index(ns)}.0.{i + 1}",)))
    for i in range(draw(st.integers(min_value=0, max_value=4))):
        host = f"h{i}." + draw(st.sampled_from(HOST_SUFFIXES))
        objects.append(ServiceEntry(draw(st.sampled_from(NAMESPACES)), f"se{i}", hosts=(host,),
                                    addresses=(f"192.0.2.{i + 1}",)))
    return Inventory.of(objects)  # type: ignore[arg-type]


patterns = st.one_of(
    st.sampled_from([f"*.{ns}.svc.cluster.local" for ns in NAMESPACES]),
    st.sampled_from([f"*.{s}" for s in HOST_SUFFIXES]),
    st.sampled_from(["*.svc.cluster.local", "*.cluster.local", "*.com"]),
    st.builds(lambda n, ns, i: f"{n}{i}.{ns}.svc.cluster.local", st.sampled_from(NAMES),
              st.sampled_from(NAMESPACES), st.integers(0, 7)),
)


@st.composite
def policies(draw: st.DrawFn) -> DnsPolicy:
    return DnsPolicy(
        name="t", namespace_selector=LabelSelector(),
        whitelist=tuple(draw(st.lists(patterns, max_size=3, unique=True))),
        blacklist=tuple(draw(st.lists(patterns, max_size=3, unique=True))),
        default_action=draw(st.sampled_from(list(DefaultAction))),
        server_address=draw(st.sampled_from(["", "10.99.0.53"])),
    )


@settings(max_examples=300, deadline=None)
@given(inv=clusters(), policy=policies())
def test_no_denied_cluster_name_is_answered_or_forwarded(inv: Inventory, policy: DnsPolicy) -> None:
    records = cluster_records(inv, zone="cluster.local")
    view, error = build_tenant_view(policy, records, inv, DnsSettings())
    assert error is None
    table = TableModel(view)
    compiled = CompiledPolicy.of(policy)
    real_addresses = {a for r in records for a in r.ipv4}
    for rec in records:
        answer = table.simulate(rec.name, "A")
        if compiled.classify(rec.name).action.answers:
            # Every allowed cluster name is answered from the table, with its addresses.
            assert (answer.rcode, set(answer.records)) == ("NOERROR", set(rec.ipv4)), rec.name
        else:
            # A denied one is neither answered with a real address nor sent upstream.
            assert answer.rcode == "NXDOMAIN", (rec.name, answer)
            assert not set(answer.records) & real_addresses
    for entry in view.entries:
        assert compiled.classify(entry.record.name).action.answers


@settings(max_examples=200, deadline=None)
@given(inv=clusters(), own=st.sampled_from(NAMESPACES), other=st.sampled_from(NAMESPACES),
       forward=st.booleans())
def test_namespace_tenants_are_isolated(inv: Inventory, own: str, other: str,
                                        forward: bool) -> None:
    """A tenant whitelisting its namespace under DENY, or blacklisting the rest under ALLOW,
    never resolves another namespace's Service."""
    records = cluster_records(inv, zone="cluster.local")
    deny = DnsPolicy(name="t", namespace_selector=LabelSelector(),
                     whitelist=(f"*.{own}.svc.cluster.local",),
                     default_action=DefaultAction.DENY)
    allow = DnsPolicy(name="t", namespace_selector=LabelSelector(),
                      whitelist=(f"*.{own}.svc.cluster.local",),
                      blacklist=("*.svc.cluster.local",), default_action=DefaultAction.ALLOW,
                      server_address="10.99.0.53" if forward else "")
    for policy in (deny, allow):
        view, _ = build_tenant_view(policy, records, inv, DnsSettings())
        table = TableModel(view)
        for rec in records:
            if rec.name.endswith(f".{other}.svc.cluster.local") and other != own:
                for qtype in ("A", "AAAA"):
                    answer = table.simulate(rec.name, qtype)
                    assert answer.rcode != "FORWARDED"
                    assert not set(answer.records) & set(rec.ipv4 + rec.ipv6)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(clusters(), min_size=1, max_size=5), mapped=st.booleans())
def test_incremental_records_equal_a_full_rebuild(steps: list[Inventory], mapped: bool) -> None:
    from controlplane.core.names import Pattern
    from controlplane.dns.incremental_records import IncrementalRecords
    from controlplane.dns.record_index import RecordIndex
    from controlplane.dns.records import RecordOptions

    opts = RecordOptions(aaaa_mapped=mapped)
    inc = IncrementalRecords()
    previous: dict[str, object] = {}
    for inv in steps:
        # Reuse unchanged objects the way the store does, so identity diffs apply.
        changed = inc.update(inv, opts)
        full = cluster_records(inv, options=opts)
        assert inc.sorted_records() == full
        now = {r.name: r for r in full}
        assert changed == {n for n in now.keys() | previous.keys()
                           if now.get(n) != previous.get(n)}
        previous = now  # type: ignore[assignment]
        live = RecordIndex(inc.records, inc.by_suffix, inc.wildcards)
        fresh = RecordIndex.of(full)
        for suffix in ("alpha.svc.cluster.local", "svc.cluster.local", "foo.com",
                       "partner.example"):
            assert {r.name for r in live.candidates([Pattern("*." + suffix)])} == {
                r.name for r in fresh.candidates([Pattern("*." + suffix)])}


edits = st.lists(st.tuples(st.sampled_from(["ip", "delete", "add", "entry", "headless"]),
                           st.integers(0, 7)), max_size=8)


@settings(max_examples=150, deadline=None)
@given(inv=clusters(), plan=edits)
def test_incremental_records_follow_edits_that_keep_other_objects(inv: Inventory,
                                                                  plan: list[tuple[str, int]]
                                                                  ) -> None:
    """Edits replace single objects and keep the rest, like the store: identity reuse."""
    import dataclasses

    from controlplane.core.model import Endpoint, EndpointSlice
    from controlplane.dns.incremental_records import IncrementalRecords
    from controlplane.dns.records import RecordOptions

    opts = RecordOptions()
    inc = IncrementalRecords()
    inc.update(inv, opts)
    for action, i in plan:
        services = dict(inv.services)
        entries = dict(inv.service_entries)
        slices = dict(inv.endpoint_slices)
        keys = sorted(services)
        if action == "ip" and keys:
            k = keys[i % len(keys)]
            services[k] = dataclasses.replace(services[k], cluster_ips=(f"10.9.9.{i + 1}",))
        elif action == "delete" and keys:
            del services[keys[i % len(keys)]]
        elif action == "add":
            services[("gamma", f"new{i}")] = Service("gamma", f"new{i}",
                                                    cluster_ips=(f"10.8.0.{i + 1}",))
        elif action == "entry":
            entries[("beta", f"x{i}")] = ServiceEntry("beta", f"x{i}",
                                                      hosts=(f"x{i}.partner.example",),
                                                      addresses=(f"192.0.2.{100 + i}",))
        elif action == "headless":
            services[("alpha", "hl")] = Service("alpha", "hl", headless=True)
            slices[("alpha", "hl-1")] = EndpointSlice("alpha", "hl-1", "hl", endpoints=(
                Endpoint((f"10.7.0.{i + 1}",), hostname=f"h{i}"),))
        inv = dataclasses.replace(inv, services=services, service_entries=entries,
                                  endpoint_slices=slices)
        inc.update(inv, opts)
        assert inc.sorted_records() == cluster_records(inv, options=opts)
