"""What one tenant sees: the DNS table of a view, before it becomes protobuf.

``cluster_records`` turns the inventory into every name the cluster can
answer; ``build_tenant_view`` filters them through the tenant's policy and
works out forwarding. Both are pure. The admin API shows ``TenantView`` as
JSON, and ``translate`` turns it into Envoy resources, so what operators see
is what Envoy gets.

Deny entries: with forwarding on, a name missing from the table is sent
upstream. Measured on Envoy 1.40 (tests/e2e), a ``cluster_name`` endpoint
naming a missing cluster is *also* forwarded, so it cannot deny. What does
stop forwarding is a table entry whose addresses are all of the other
family: the filter counts the entry as found and answers with no records.
A deny entry therefore holds only ``DENY_SINK_ADDRESS`` (``100::``, the
IPv6 discard-only prefix, RFC 6666): A queries get NXDOMAIN and AAAA
queries get ``100::``, an address that leads nowhere. Nothing is forwarded.
Without forwarding no deny entries are needed: every unknown name gets
NXDOMAIN for both types.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane.inventory import Inventory
from controlplane.model import DefaultAction, DnsPolicy
from controlplane.names import Pattern, normalise, parse_ip, split_host_port
from controlplane.policy import Action, CompiledPolicy, Decision
from controlplane.record_index import RecordIndex
from controlplane.records import NameRecord, SrvRecord, cluster_records
from controlplane.settings import DefaultView, Settings

DENY_SINK_ADDRESS = "100::"
DEFAULT_TENANT = "_default"


@dataclass(frozen=True, slots=True)
class TableEntry:
    record: NameRecord
    action: Action
    rule: str


@dataclass(frozen=True, slots=True)
class DenyEntry:
    pattern: str
    rule: str


@dataclass(frozen=True, slots=True)
class Upstream:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class TenantView:
    """Everything that decides one tenant's DNS listener (except its address)."""

    tenant: str
    policy: str  # policy name, or "" for the default view
    entries: tuple[TableEntry, ...]
    deny: tuple[DenyEntry, ...]
    upstreams: tuple[Upstream, ...]
    ttl_seconds: int
    notes: tuple[str, ...] = field(default=(), compare=False)
    conflicts: tuple[str, ...] = field(default=(), compare=False)
    # Rules Envoy cannot enforce exactly, and the fail-closed substitute for each.
    unenforced: tuple[str, ...] = field(default=(), compare=False)
    # Whether Envoy sends per-query records (the policy logs WARN or denied queries).
    log_queries: bool = False

    @property
    def forwarding(self) -> bool:
        return bool(self.upstreams)


def resolve_upstream(address: str, inventory: Inventory, *, zone: str) -> Upstream | str:
    """An upstream from ``IP[:port]`` or a Service name (``svc.ns[.svc[.zone]]``)."""
    split = split_host_port(address, 53)
    if isinstance(split, str):
        return split
    host, port = split
    ip = parse_ip(host)
    if ip is not None:
        return Upstream(str(ip), port)
    name = normalise(host)
    for suffix in (f".svc.{zone}", ".svc"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    parts = name.split(".")
    if len(parts) != 2:
        return (f"server.address {address!r} is neither an IP address nor a Service name "
                "of the form <service>.<namespace>[.svc[.<zone>]]")
    svc = inventory.services.get((parts[1], parts[0]))
    if svc is None:
        return (f"server.address {address!r} names Service {parts[1]}/{parts[0]}, which does "
                "not exist")
    if not svc.cluster_ips:
        return (f"server.address {address!r} names Service {parts[1]}/{parts[0]}, which has no "
                "cluster IP")
    return Upstream(svc.cluster_ips[0], port)


def is_search_level(pattern: Pattern, zone: str) -> bool:
    """True for wildcards a pod's search list appends to arbitrary names.

    With ``ndots:5`` a pod in namespace N asks ``<name>.N.svc.<zone>``,
    ``<name>.svc.<zone>`` and ``<name>.<zone>`` before ``<name>``. A deny
    wildcard at one of those levels would answer AAAA ``100::`` for every
    external lookup's expansion, and glibc would take it.
    """
    if not pattern.is_wildcard:
        return False
    suffix = pattern.suffix
    if suffix == zone or zone.endswith("." + suffix):
        return True
    if not suffix.endswith("." + zone):
        return False
    return len(suffix[: -len(zone) - 1].split(".")) <= 2


def _deny_entries(compiled: CompiledPolicy, records: list[NameRecord],
                  zone: str) -> tuple[DenyEntry, ...]:
    """Deny entries for a forwarding view (see the module docstring)."""
    out: dict[str, DenyEntry] = {}
    for b in compiled.effective_blacklist():
        if not is_search_level(b, zone):
            out.setdefault(b.text, DenyEntry(b.text, f"blacklist {b}"))
            continue
        # Expand into the existing cluster names it denies: exact entries never
        # catch the search-list expansions of other names.
        for rec in records:
            if b.matches(rec.name) and not compiled.classify(rec.name).action.answers:
                out.setdefault(rec.name, DenyEntry(rec.name, f"blacklist {b}"))
    return tuple(out[k] for k in sorted(out))


def single_label_wildcard(pattern: str) -> bool:
    """Envoy looks a name up among entries sharing its last two labels, so ``*.net``
    (whose suffix is one label) never matches anything."""
    return pattern.startswith("*.") and "." not in pattern[2:]


def _unenforced_for(policy: DnsPolicy, compiled: CompiledPolicy, zone: str) -> list[str]:
    """Rules Envoy cannot express exactly; each is replaced by something stricter."""
    out = []
    if policy.policy_server is not None:
        out.append(f"policy.server {policy.policy_server.address}: Envoy's DNS filter cannot "
                   "consult a policy server; it is ignored and whitelist, blacklist and "
                   f"defaultAction {policy.default_action.value} decide")
    if policy.default_action is DefaultAction.DENY:
        for p in compiled.whitelist:
            if not (p.suffix == zone or p.suffix.endswith("." + zone)):
                out.append(f"whitelist {p}: under defaultAction DENY nothing is forwarded, so "
                           "only cluster names (Services, ServiceEntries) matching it resolve; "
                           "external names matching it get NXDOMAIN")
    for w, b in compiled.shadowed_whitelist():
        out.append(f"whitelist {w} lies under blacklist {b}: cluster names there resolve, but "
                   "external names are denied (Envoy cannot forward them selectively)")
    return out


def build_tenant_view(
    policy: DnsPolicy | None,
    records: list[NameRecord],
    inventory: Inventory,
    settings: Settings,
    *,
    last_good_upstream: Upstream | None = None,
    compiled: CompiledPolicy | None = None,
    decisions: dict[str, Decision] | None = None,
    index: RecordIndex | None = None,
) -> tuple[TenantView, str | None]:
    """The view of ``policy``'s tenant (or the default view) and an upstream error, if any.

    ``compiled`` and ``decisions`` (a name -> decision cache kept by the caller
    for as long as the policy is unchanged) make rebuilds after small changes
    cheap: a name is classified once per policy version.
    """
    if policy is None:
        return _default_view(records, inventory, settings)
    compiled = compiled or CompiledPolicy.of(policy)
    cache = decisions if decisions is not None else {}
    notes: list[str] = []
    unenforced = _unenforced_for(policy, compiled, settings.zone)
    selected = {ns for ns, obj in inventory.namespaces.items()
                if policy.namespace_selector.matches(dict(obj.labels))}
    entries = []
    # Under DENY only whitelisted names can be answered: look them up by suffix.
    candidates = (index.candidates(compiled.whitelist)
                  if index is not None and policy.default_action is DefaultAction.DENY
                  else records)
    for rec in candidates:
        d = cache.get(rec.name)
        if d is None:
            d = compiled.classify_pattern(Pattern(rec.name))
            cache[rec.name] = d
        if not d.action.answers:
            continue
        if rec.export_to is not None and not (selected and selected <= rec.export_to):
            continue  # exportTo: only when every namespace of the tenant may see it
        entries.append(TableEntry(rec, d.action, d.rule))
    upstreams: tuple[Upstream, ...] = ()
    error = None
    if policy.default_action is not DefaultAction.DENY:
        address = policy.server_address or settings.default_upstream
        if policy.upgrade:
            kind = policy.upgrade_type or "an encrypted protocol"
            unenforced.append(f"protocol upgrade to {kind} is not supported yet; nothing is "
                              "forwarded rather than forwarding in cleartext")
        elif address:
            resolved = resolve_upstream(address, inventory, zone=settings.zone)
            if isinstance(resolved, str):
                error = resolved
                if last_good_upstream is not None:
                    upstreams = (last_good_upstream,)
                    notes.append(f"{resolved}; the last valid server {last_good_upstream} "
                                 "keeps serving")
                else:
                    notes.append(f"{resolved}; nothing is forwarded")
            else:
                upstreams = (resolved,)
    deny: tuple[DenyEntry, ...] = ()
    if upstreams:
        deny = _deny_entries(compiled, records, settings.zone)
        lost = [d.pattern for d in deny if single_label_wildcard(d.pattern)]
        if lost:
            unenforced.append(f"blacklist {', '.join(lost)}: Envoy matches wildcards only within "
                              "a name's last two labels, so it cannot deny these while "
                              "forwarding; nothing is forwarded for this tenant (fail closed)")
            upstreams, deny = (), ()
        elif deny:
            unenforced.append("blacklist entries match lower-case queries only: Envoy 1.40 "
                              "compares names case-sensitively (envoyproxy/envoy#45381), so a "
                              "mixed-case spelling of a denied name is forwarded upstream")
    view = TenantView(
        tenant=policy.tenant, policy=policy.name, entries=tuple(entries), deny=deny,
        upstreams=upstreams, ttl_seconds=settings.answer_ttl_seconds,
        notes=tuple(notes + unenforced), unenforced=tuple(unenforced),
        log_queries=bool(policy.blacklist) or policy.default_action is not DefaultAction.ALLOW,
    )
    return view, error


def _default_view(records: list[NameRecord], inventory: Inventory,
                  settings: Settings) -> tuple[TenantView, str | None]:
    if settings.default_view is DefaultView.DENY:
        return TenantView(tenant=DEFAULT_TENANT, policy="", entries=(), deny=(), upstreams=(),
                          ttl_seconds=settings.answer_ttl_seconds,
                          notes=("no DnsPolicy selects this workload: default view 'deny' "
                                 "answers NXDOMAIN to everything",)), None
    upstreams: tuple[Upstream, ...] = ()
    error = None
    if settings.default_upstream:
        resolved = resolve_upstream(settings.default_upstream, inventory, zone=settings.zone)
        if isinstance(resolved, str):
            error = resolved
        else:
            upstreams = (resolved,)
    entries = tuple(TableEntry(r, Action.ALLOW, "default view 'cluster'") for r in records
                    if r.export_to is None)
    return TenantView(tenant=DEFAULT_TENANT, policy="", entries=entries, deny=(),
                      upstreams=upstreams, ttl_seconds=settings.answer_ttl_seconds,
                      notes=("no DnsPolicy selects this workload: default view 'cluster'",)), error


def view_as_json(view: TenantView) -> dict[str, object]:
    """The table as operators read it (``GET /api/v1/views/{tenant}/dns-table``)."""
    return {
        "tenant": view.tenant,
        "policy": view.policy or None,
        "forwarding": [str(u) for u in view.upstreams],
        "ttl_seconds": view.ttl_seconds,
        "names": [
            {
                "name": e.record.name,
                "A": list(e.record.ipv4),
                "AAAA": list(e.record.ipv6),
                "SRV": [
                    {"name": f"_{s.service}._{s.protocol}.{e.record.name}", "port": s.port,
                     "target": s.target, "priority": s.priority, "weight": s.weight}
                    for s in e.record.srv
                ],
                "answered_from_cluster": ([f"{t.host}:{t.port}" for t in e.record.cluster]
                                          if e.record.cluster else None),
                "ttl_seconds": e.record.ttl,
                "truncated": e.record.truncated,
                "aaaa_mapped": e.record.mapped,
                "action": e.action.value,
                "rule": e.rule,
                "sources": list(e.record.sources),
            }
            for e in view.entries
        ],
        "denied": [
            {"pattern": d.pattern, "rule": d.rule,
             "answer": f"A: NXDOMAIN, AAAA: {DENY_SINK_ADDRESS}, never forwarded"}
            for d in view.deny
        ],
        "notes": list(view.notes),
        "unenforced": list(view.unenforced),
        "conflicts": list(view.conflicts),
    }


__all__ = ["DEFAULT_TENANT", "DENY_SINK_ADDRESS", "DenyEntry", "NameRecord", "SrvRecord",
           "TableEntry", "TenantView", "Upstream", "build_tenant_view", "cluster_records",
           "is_search_level", "resolve_upstream", "view_as_json"]
