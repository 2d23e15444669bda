"""What one tenant sees: the DNS table of a view, before it becomes protobuf.

``cluster_records`` turns the inventory into every name the cluster can
answer; ``build_tenant_view`` filters them through the tenant's policy and
works out forwarding. Both are pure. The admin API shows ``TenantView`` as
JSON, and ``translate`` turns it into Envoy resources, so what operators see
is what Envoy gets.

Forwarding: Envoy answers the tenant's table and forwards every other A/AAAA
query to the tenant's **resolver** (``Forwarding``: an unbound per tenant,
configured by ``translate/unbound.py``), never straight to the tenant's
server. The resolver enforces the policy for those names (RPZ triggers from
``CompiledPolicy.resolver_triggers``, case-insensitive, any suffix length),
answers NXDOMAIN for unknown names under the cluster zone itself (search-list
expansions never leave), synthesises IPv4-mapped AAAA for IPv4-only names
(Envoy turns a forwarded NODATA into NXDOMAIN, which musl takes as failure),
follows CNAME chains and speaks TLS or HTTPS to the tenant's server when the
policy upgrades. Envoy 1.40 alone could do none of this (facts 3, 6, 8, 20).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from controlplane.core.errors import (
    BadAddress,
    BadUpstream,
    InvalidValue,
    MissingService,
    NoTlsName,
)
from controlplane.core.frozen import slot_init
from controlplane.core.inventory import Inventory
from controlplane.core.model import DefaultAction, DnsPolicy, FailureMode
from controlplane.core.names import Pattern, normalise, parse_ip, split_host_port
from controlplane.core.settings import DefaultView, DnsSettings
from controlplane.dns.record_index import RecordIndex
from controlplane.dns.records import NameRecord, SrvRecord, cluster_records
from controlplane.policy.decisions import ExternalDecision, failure_mode, table_allows
from controlplane.policy.selection import Action, CompiledPolicy, Decision

DEFAULT_TENANT = "_default"
DOT_PORT = 853
DOH_PORT = 443
DOH_PATH = "/dns-query"


@slot_init
@dataclass(frozen=True, slots=True)
class TableEntry:
    record: NameRecord
    action: Action
    rule: str


@dataclass(frozen=True, slots=True)
class Upstream:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class Transport(StrEnum):
    """How the tenant resolver reaches the tenant's own DNS server."""

    UDP = "udp"  # plain DNS (UDP, TCP for truncated answers)
    TLS = "dns-over-tls"
    HTTPS = "dns-over-https"


@dataclass(frozen=True, slots=True)
class Trigger:
    """One policy rule as the resolver applies it: the most specific trigger decides."""

    name: str  # an exact name, "*.suffix", or "*" for every other name
    deny: bool
    rule: str  # the policy rule behind it, e.g. "blacklist *.tracker.example"


@dataclass(frozen=True, slots=True)
class PolicyGate:
    """The tenant resolver asks the control plane for each forwarded name that no
    whitelist/blacklist entry decides (the policy server's decisions, cached)."""

    timeout_ms: int
    failure_open: bool
    default_ttl_seconds: int


@dataclass(frozen=True, slots=True)
class Forwarding:
    """What the tenant resolver does with the names Envoy does not answer."""

    # The tenant's own DNS server; None: nothing may be forwarded, the resolver answers
    # the table and NXDOMAIN for every other name (one ``*`` deny trigger, no forward-zone).
    server: Upstream | None
    transport: Transport = Transport.UDP
    tls_name: str = ""  # the name the server's certificate must carry (TLS, HTTPS)
    ca_bundle: str = ""  # PEM from the policy; "" means the control plane's default
    doh_path: str = DOH_PATH
    triggers: tuple[Trigger, ...] = ()
    zone: str = "cluster.local"  # answered by the resolver itself: NXDOMAIN when unknown
    gate: PolicyGate | None = None  # an external policy server decides per name
    # The tenant's table, which the resolver answers too (translate/unbound_table.py):
    # the view's entries and its answer TTL. Left out of equality: the view holds them.
    table: tuple[TableEntry, ...] = field(default=(), compare=False, repr=False)
    table_ttl: int = 30
    # The policy logs WARN or denied queries: the resolver reports its answers (dnstap,
    # resolvers/reports.py), as Envoy does through TenantView.log_queries.
    log_queries: bool = False

    @property
    def encrypted(self) -> bool:
        return self.transport is not Transport.UDP


@dataclass(frozen=True, slots=True)
class ResolverHop:
    """How the sidecar reaches its tenant resolver over TLS: Envoy's resolver asks a local
    TCP listener whose cluster speaks TLS to the resolver, verified with this CA and name."""

    server_name: str
    ca_pem: str
    # Mutual (--resolver-hop mtls): the sidecar presents the tenant's client certificate,
    # sent as an SDS Secret with the view, and names its tenant by SNI to the terminator.
    sni: str = ""  # "": server_name
    client_cert_pem: str = ""
    client_key_pem: str = field(default="", repr=False)

    @property
    def mutual(self) -> bool:
        return bool(self.client_cert_pem)


@dataclass(frozen=True)
class TenantView:
    """Everything that decides one tenant's DNS listener (except its address)."""

    tenant: str
    policy: str  # policy name, or "" for the default view
    entries: tuple[TableEntry, ...]
    upstreams: tuple[Upstream, ...]  # where Envoy forwards: the tenant resolver (hub fills it)
    ttl_seconds: int
    forward: Forwarding | None = None  # what the tenant resolver does; None: no forwarding
    hop: ResolverHop | None = None  # TLS from the sidecar to the resolver; None: plain UDP
    notes: tuple[str, ...] = field(default=(), compare=False)
    conflicts: tuple[str, ...] = field(default=(), compare=False)
    # Rules Envoy cannot enforce exactly, and the fail-closed substitute for each.
    unenforced: tuple[str, ...] = field(default=(), compare=False)
    # Whether Envoy sends per-query records (the policy logs WARN or denied queries).
    log_queries: bool = False
    # With a policy server: the table names whose answer is its decision, and those it denied.
    asked: tuple[str, ...] = field(default=(), compare=False)
    server_denied: tuple[str, ...] = ()
    # The namespaces the policy selects (the tenant's own; ``translate.envoy_part``).
    namespaces: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def forwarding(self) -> bool:
        """Whether Envoy's DNS filter forwards the names outside its table: only to a
        resolver that has a server. A table-only resolver (``forward.server`` None) would
        answer every such A/AAAA NXDOMAIN, as Envoy alone does (mixed-case spellings of
        table names aside), so Envoy is not pointed at it: a sidecar without the DNS front
        then gets the listener it got before that resolver existed, which does not change
        with the resolver's port (a control-plane restart, a replica switch). Only a DNS
        front uses such a resolver, through the hop (``translate_view``)."""
        return (bool(self.upstreams) and self.forward is not None
                and self.forward.server is not None)


def with_resolver(view: TenantView, address: Upstream | None,
                  hop: ResolverHop | None = None) -> TenantView:
    """The view forwarding to its tenant resolver at ``address`` (None: none runs), over
    TLS when ``hop`` says how."""
    if view.forward is None:
        return view
    if address is None:
        return replace(view, upstreams=(), notes=view.notes + (
            "no tenant resolver runs for this tenant: Envoy answers every query",))
    return replace(view, upstreams=(address,), hop=hop)


def resolve_upstream(address: str, inventory: Inventory, *, zone: str,
                     default_port: int = 53) -> Upstream:
    """An upstream from ``IP[:port]`` or a Service name (``svc.ns[.svc[.zone]]``).

    Raises ``BadAddress`` (not HOST[:PORT]), ``BadUpstream`` (neither an IP nor a
    Service name) or ``MissingService`` (no such Service, or it has no cluster IP)."""
    host, port = split_host_port(address, default_port)
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
        raise BadUpstream(f"server.address {address!r} is neither an IP address nor a Service "
                          "name of the form <service>.<namespace>[.svc[.<zone>]]")
    svc = inventory.services.get((parts[1], parts[0]))
    if svc is None:
        raise MissingService(f"server.address {address!r} names Service "
                             f"{parts[1]}/{parts[0]}, which does not exist")
    if not svc.cluster_ips:
        raise MissingService(f"server.address {address!r} names Service "
                             f"{parts[1]}/{parts[0]}, which has no cluster IP")
    return Upstream(svc.cluster_ips[0], port)


def upstream_service(address: str, *, zone: str) -> tuple[str, str] | None:
    """The Service (namespace, name) that ``address`` names, or None (an IP address, or
    not a Service name): what ``resolve_upstream`` reads from the inventory."""
    try:
        host, _ = split_host_port(address, 53)
    except BadAddress:
        return None
    if parse_ip(host) is not None:
        return None
    name = normalise(host)
    for suffix in (f".svc.{zone}", ".svc"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    parts = name.split(".")
    return (parts[1], parts[0]) if len(parts) == 2 else None


def in_zone(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def _triggers(compiled: CompiledPolicy, zone: str,
              entries: list[TableEntry]) -> tuple[Trigger, ...]:
    out = [Trigger(name, not d.action.answers, d.rule)
           for name, d in compiled.resolver_triggers(skip=lambda n: in_zone(n, zone))]
    # Names the table answers from a cluster (ExternalName, DNS ServiceEntries) are
    # resolved through the tenant resolver too: their targets must pass, unless the
    # blacklist names them (exactly or by a wildcard): a blacklisted name stays denied,
    # asked directly or as a CNAME target.
    known = {t.name for t in out}
    for e in entries:
        for target in e.record.cluster:
            host = target.host.lower()
            if host not in known and not in_zone(host, zone) and parse_ip(host) is None:
                known.add(host)
                if compiled.classify(host).rule.startswith("blacklist"):
                    continue
                out.append(Trigger(host, False, f"target of {', '.join(e.record.sources)}"))
    return tuple(sorted(out, key=lambda t: t.name))


NO_SERVER_RULE = "no server: nothing outside the table is forwarded"


def table_only(zone: str) -> Forwarding:
    """A resolver for a tenant that forwards nothing: its table, NXDOMAIN for the rest."""
    return Forwarding(server=None, triggers=(Trigger("*", True, NO_SERVER_RULE),), zone=zone)


def _gate(policy: DnsPolicy) -> PolicyGate | None:
    ps = policy.policy_server
    if ps is None:
        return None
    return PolicyGate(timeout_ms=ps.timeout_ms,
                      failure_open=failure_mode(policy) is FailureMode.OPEN,
                      default_ttl_seconds=ps.decision_ttl_seconds)


def _forwarding(policy: DnsPolicy, server: Upstream, triggers: tuple[Trigger, ...], *,
                zone: str) -> Forwarding:
    """How the view forwards to ``server``; ``NoTlsName`` when TLS has no name to verify."""
    if not policy.upgrade:
        return Forwarding(server=server, triggers=triggers, zone=zone, gate=_gate(policy))
    transport = Transport(policy.upgrade_type or Transport.TLS.value)
    try:
        written, _ = split_host_port(policy.server_address, 0)
    except BadAddress:
        written = ""
    tls_name = policy.tls_server_name or (written if parse_ip(written) is None else "")
    if not tls_name:
        raise NoTlsName(f"protocol.upgrade to {transport.value}: server.address "
                        f"{policy.server_address or '(none)'} is an IP address, so "
                        "protocol.serverName must name the certificate to verify; nothing "
                        "is forwarded")
    return Forwarding(server=server, transport=transport, tls_name=normalise(tls_name),
                      ca_bundle=policy.tls_ca_bundle, doh_path=policy.doh_path or DOH_PATH,
                      triggers=triggers, zone=zone, gate=_gate(policy))


def build_tenant_view(
    policy: DnsPolicy | None,
    records: list[NameRecord],
    inventory: Inventory,
    settings: DnsSettings,
    *,
    last_good_upstream: Upstream | None = None,
    compiled: CompiledPolicy | None = None,
    decisions: dict[str, Decision] | None = None,
    index: RecordIndex | None = None,
    external: Mapping[str, ExternalDecision] | None = None,
) -> tuple[TenantView, str | None]:
    """The view of ``policy``'s tenant (or the default view) and an upstream error, if any.

    ``compiled`` and ``decisions`` (a name -> decision cache kept by the caller
    for as long as the policy is unchanged) make rebuilds after small changes
    cheap: a name is classified once per policy version.

    With ``policy.server``, a blacklisted name is denied locally; every other name is
    decided by the policy server (``external``: its decisions by name), whitelisted
    names included (the server may veto them); until a name has a decision, the
    failure mode decides (closed: left out).
    """
    if policy is None:
        return _default_view(records, inventory, settings)
    compiled = compiled or CompiledPolicy.of(policy)
    cache = decisions if decisions is not None else {}
    notes: list[str] = []
    unenforced: list[str] = []
    server = policy.policy_server
    mode = failure_mode(policy)
    decided = external if external is not None else {}
    asked: list[str] = []
    server_denied: list[str] = []
    selected = {ns for ns, obj in inventory.namespaces.items()
                if policy.namespace_selector.matches(dict(obj.labels))}
    entries = []
    # Under DENY only whitelisted names can be answered: look them up by suffix.
    candidates = (index.candidates(compiled.whitelist)
                  if index is not None and policy.default_action is DefaultAction.DENY
                  and server is None else records)
    deny = Action.DENY
    for rec in candidates:
        name = rec.name
        d = cache.get(name)
        if d is None:
            # classify_pattern(Pattern(name)) is classify(name) for a name that is not a
            # wildcard (rec.is_wildcard): without a Pattern made for each of 100,000 names.
            d = (compiled.classify_pattern(Pattern(name)) if name.startswith("*.")
                 else compiled.classify(name))
            cache[name] = d
        if server is None:  # the common case: no policy server
            if d.action is deny:  # not d.action.answers
                continue
            by_server = False
        else:
            by_server = not d.rule.startswith("blacklist")
            if d.action is deny and not by_server:
                continue
        if rec.export_to is not None and not (selected and selected <= rec.export_to):
            continue  # exportTo: only when every namespace of the tenant may see it
        if rec.namespace_scope is not None and rec.namespace_scope not in selected:
            continue  # pod records: only tenants that select the pod's namespace
        if by_server:
            asked.append(rec.name)
            if not table_allows(decided, rec.name, mode):
                server_denied.append(rec.name)
                continue
            ext = decided.get(rec.name)
            d = Decision(Action.ALLOW, "policy server" if ext is not None else
                         "policy server: no decision yet, failure mode open")
        entries.append(TableEntry(rec, d.action, d.rule))
    error = None
    forward: Forwarding | None = None
    # With a policy server, names no rule decides pass the RPZ and go to the server.
    triggers = _triggers(compiled if server is None else CompiledPolicy(
        compiled.whitelist, compiled.blacklist, DefaultAction.ALLOW), settings.zone, entries)
    # Under DENY the resolver is needed only when some name outside the table may pass.
    needed = (policy.default_action is not DefaultAction.DENY or server is not None
              or any(not t.deny and t.name != "*" for t in triggers))
    address = policy.server_address or settings.default_upstream
    if needed and address:
        port = {"dns-over-tls": DOT_PORT, "dns-over-https": DOH_PORT}.get(
            policy.upgrade_type if policy.upgrade else "", 53)
        if policy.upgrade and not policy.upgrade_type:
            port = DOT_PORT
        resolved: Upstream | None
        try:
            resolved = resolve_upstream(address, inventory, zone=settings.zone,
                                        default_port=port)
        except InvalidValue as exc:
            error = str(exc)
            resolved = last_good_upstream
            notes.append(f"{error}; the last valid server {last_good_upstream} keeps serving"
                         if resolved is not None else f"{error}; nothing is forwarded")
        if resolved is not None:
            try:
                forward = _forwarding(policy, resolved, triggers, zone=settings.zone)
            except NoTlsName as exc:
                error = str(exc)
                notes.append(error)
    elif needed and policy.default_action is DefaultAction.DENY:
        notes.append("external whitelist entries need a server (spec.server.address or "
                     "--default-upstream); without one only cluster names resolve")
    log_queries = bool(policy.blacklist) or policy.default_action is not DefaultAction.ALLOW
    if forward is None:
        # Every policy tenant has a resolver, which answers its table (every type, TCP,
        # PTR, dns-version) even when nothing may be forwarded: it then denies every
        # name outside the table (NXDOMAIN) and has no server to ask.
        forward = table_only(settings.zone)
        notes.append("nothing outside the table is forwarded: the tenant resolver answers "
                     "the table and NXDOMAIN for every other name")
    forward = replace(forward, table=tuple(entries),
                      table_ttl=settings.answer_ttl_seconds, log_queries=log_queries)
    view = TenantView(
        tenant=policy.tenant, policy=policy.name, entries=tuple(entries), upstreams=(),
        ttl_seconds=settings.answer_ttl_seconds, forward=forward,
        notes=tuple(notes + unenforced), unenforced=tuple(unenforced),
        log_queries=log_queries,
        asked=tuple(asked), server_denied=tuple(server_denied),
        namespaces=frozenset(selected),
    )
    return view, error


def _default_view(records: list[NameRecord], inventory: Inventory,
                  settings: DnsSettings) -> tuple[TenantView, str | None]:
    if settings.default_view is DefaultView.DENY:
        return TenantView(tenant=DEFAULT_TENANT, policy="", entries=(), upstreams=(),
                          ttl_seconds=settings.answer_ttl_seconds,
                          notes=("no DnsPolicy selects this workload: default view 'deny' "
                                 "answers NXDOMAIN to everything",)), None
    forward: Forwarding | None = None
    error = None
    if settings.default_upstream:
        try:
            forward = Forwarding(server=resolve_upstream(settings.default_upstream, inventory,
                                                         zone=settings.zone),
                                 zone=settings.zone)
        except InvalidValue as exc:
            error = str(exc)
    entries = tuple(TableEntry(r, Action.ALLOW, "default view 'cluster'") for r in records
                    if r.export_to is None and r.namespace_scope is None)
    if forward is not None:
        forward = replace(forward, table=entries, table_ttl=settings.answer_ttl_seconds)
    return TenantView(tenant=DEFAULT_TENANT, policy="", entries=entries, forward=forward,
                      upstreams=(), ttl_seconds=settings.answer_ttl_seconds,
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
        "resolver": forwarding_as_json(view.forward),
        "notes": list(view.notes),
        "unenforced": list(view.unenforced),
        "conflicts": list(view.conflicts),
    }


def forwarding_as_json(fwd: Forwarding | None) -> dict[str, object] | None:
    """What the tenant resolver does with names outside the table."""
    if fwd is None:
        return None
    return {
        "server": str(fwd.server) if fwd.server is not None else None,
        "transport": fwd.transport.value,
        "tls_server_name": fwd.tls_name or None,
        "ca_bundle": ("from the policy" if fwd.ca_bundle else "control plane default")
        if fwd.encrypted else None,
        "doh_path": fwd.doh_path if fwd.transport is Transport.HTTPS else None,
        "zone": {"name": fwd.zone, "unknown_names": "NXDOMAIN from the tenant resolver"},
        "rules": [{"names": t.name, "action": "deny" if t.deny else "forward", "rule": t.rule}
                  for t in fwd.triggers],
    }


__all__ = ["DEFAULT_TENANT", "Forwarding", "NameRecord", "PolicyGate", "ResolverHop",
           "SrvRecord", "TableEntry", "TenantView", "Transport", "Trigger", "Upstream",
           "build_tenant_view", "cluster_records", "forwarding_as_json", "resolve_upstream",
           "table_only", "view_as_json", "with_resolver"]
