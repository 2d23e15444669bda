"""Forwarding -> the tenant resolver's configuration: unbound, and dnsdist for DoH.

Pure: a tenant's ``Forwarding`` and the paths a runner chose go in, config
text comes out. ``unbound-checkconf`` and ``dnsdist --check-config`` validate
the output in the tests; the runner (``controlplane/resolvers/pool.py``) writes it,
starts the processes and applies changes.

What the text does, measured on Debian 12's unbound 1.17 behind Envoy 1.40
(docs/tenant-resolver.md has the figures):

- ``auth-zone:`` for the cluster zone and the table's reverse zones
  (``unbound_table.py``): the resolver answers the tenant's table itself (every
  address, SRV, PTR, dns-version, NODATA and NXDOMAIN with the SOA); every other
  cluster name, and every search-list expansion of an external name, stops there.
  unbound answers local-data first, then the RPZ, then auth-zones, so ``rpz_zone`` lets
  the zones pass (``table_triggers``) and holds the table's wildcards outside the zone
  and its CNAMEs to external names (``rpz_rules``); an alias in the zone has an
  auth-zone of its own that answers nothing downstream (``alias_zone_names``).
- ``module-config: "respip iterator"``: AAAA of an IPv4-only name is NODATA, as DNS says
  (what a sidecar's DNS front passes on). With ``ResolverPaths.map_aaaa`` (``serve
  --resolver-aaaa mapped``, for sidecars without a front) ``dns64`` with ``dns64-prefix:
  ::ffff:0:0/96`` answers the IPv4-mapped address instead, which Envoy's DNS filter does
  not turn into NXDOMAIN (musl would take that as a failed lookup); ``cache-min-ttl`` >=
  ``cache-max-negative-ttl`` keeps that true on repeats.
- RFC 8767 serve-stale: while the tenant's server is down, cached names are answered
  from the expired cache (TTL 30, up to a day past their TTL) and names that are not
  cached get SERVFAIL within about a second, never NXDOMAIN and never silence. RPZ
  applies before the cache, so a name denied while the server is down is NXDOMAIN.
- ``rpz:`` with a zone of triggers: ``name CNAME .`` answers NXDOMAIN,
  ``name CNAME rpz-passthru.`` forwards; the most specific trigger wins and
  matching ignores case, once every owner is closed (``_close``). Triggers are reloaded
  live (``auth_zone_reload``).
- ``forward-zone: "."`` to the tenant's server, with ``forward-tls-upstream``
  and a CA bundle for DNS over TLS, or to a local dnsdist that speaks DNS over
  HTTPS (unbound has no DoH client). ``forward-first: no``: never recursion.
  A tenant that may forward nothing (``Forwarding.server`` None) has no forward-zone:
  its RPZ ``*`` trigger denies every name outside the table, and ``do-not-query-address``
  for every address keeps the iterator from ever asking anyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from controlplane.dns.views import Forwarding, Transport, Trigger, Upstream
from controlplane.translate.unbound_table import (
    RpzRecord,
    alias_zone_names,
    outside_data,
    reverse_zone_names,
    table_file,
    table_rpz,
    table_zone_names,
)

_T = TypeVar("_T")

RPZ_ZONE = "policy.rpz."
DNS64_PREFIX = "::ffff:0:0/96"  # IPv4-mapped: reaches the IPv4 address over a dual-stack socket


# RFC 8767 serve-stale while the tenant's server is down (docs/tenant-resolver.md,
# "When the tenant's server is down"; measured on unbound 1.17.1).
SERVE_STALE = (
    "  serve-expired: yes",
    # How long past its TTL an answer may still be served: RFC 8767 suggests 1 to 3 days.
    "  serve-expired-ttl: 86400",
    # The TTL a stale answer carries: 30 s, RFC 8767's value, so clients come back soon.
    "  serve-expired-reply-ttl: 30",
    # Ask the server first, answer stale only when it has not answered in 300 ms: with 0
    # an expired name was answered stale (TTL 30 for a TTL-5 record, the old address)
    # even while the server was up; with RFC 8767's 1800 every stale answer took 1.83 s,
    # close to the sidecar's 2 s resolver timeout. While the server is known down, stale
    # answers come at once (measured 0.3-1 ms).
    "  serve-expired-client-timeout: 300",
)
# A name that is not cached, with the server down: SERVFAIL within about a second, never
# silence. By default unbound backs off up to 120 s per try and discard-timeout (1900 ms,
# backported to Debian's 1.17.1) drops the late SERVFAIL: the client saw no reply at all.
SERVFAIL_PROMPTLY = (
    # Caps each retransmit timeout to the server: SERVFAIL after 0.65-1.3 s (5 tries,
    # outbound-msg-retry's default), then at once while it is known down (measured).
    "  infra-cache-max-rtt: 500",
    # Above the longest wait for that SERVFAIL (5 x 500 ms) so it is sent, not discarded;
    # still bounds how long replies can pile up (the reason for discard-timeout).
    "  discard-timeout: 3000",
)


# A resolver without a server must never recurse: no address is ever asked.
NEVER_RECURSE = (
    "  do-not-query-address: 0.0.0.0/0",
    "  do-not-query-address: ::/0",
)


@dataclass(frozen=True, slots=True)
class ResolverPaths:
    """Where one tenant resolver lives; chosen by the runner."""

    directory: str
    listen: Upstream  # where Envoy sends the tenant's forwarded queries
    control_socket: str  # unbound-control's unix socket
    rpz_file: str
    ca_file: str = ""  # the CA bundle for TLS/HTTPS to the tenant's server
    doh_proxy: Upstream | None = None  # the local dnsdist for DNS over HTTPS
    access: tuple[str, ...] = ("127.0.0.0/8", "::1/128")  # who may query it
    cache_mb: int = 8
    gate_socket: str = ""  # the control plane's policy gate (a policy server decides)
    gate_script: str = ""  # where the rendered python module lives
    tls_port: int = 0  # DNS over TLS for the sidecars (the hop); 0: plain UDP only
    tls_cert: str = ""
    tls_key: str = ""
    # Where unbound sends a dnstap CLIENT_RESPONSE per answer (the pool's report reader,
    # resolvers/reports.py); "": no dnstap section.
    dnstap_socket: str = ""
    # AAAA of an IPv4-only name: an IPv4-mapped stand-in (DNS64) for sidecars whose Envoy
    # forwards itself; False: NODATA, as DNS says (sidecars with a DNS front).
    map_aaaa: bool = True
    # The control plane's loopback primary for the table zones (resolvers/primary.py):
    # changes arrive by IXFR from 127.0.0.1@primary_port; 0: by file and auth_zone_reload.
    primary_port: int = 0


# How much longer than the policy's timeout the gate waits for the control plane, whose own
# answer comes at the timeout at the latest (the failure mode's) but may queue behind other
# work on a loaded machine: past it the gate's own failure mode decides.
GATE_GRACE_MS = 250


def _gated_serve_stale(gate_timeout_ms: int) -> tuple[str, ...]:
    """Serve-stale with a policy gate: no stale answer outlives a decision. The client
    timeout waits for the gate's answer (two tries of its timeout plus the grace) before
    anything stale is considered, and a stale answer carries TTL 1 (not 30), so neither
    the clients nor the DNS front keep it past the decision it was answered under."""
    wait = 2 * (gate_timeout_ms + GATE_GRACE_MS)
    return tuple(
        "  serve-expired-reply-ttl: 1" if line.startswith("  serve-expired-reply-ttl:")
        else f"  serve-expired-client-timeout: {max(300, wait)}"
        if line.startswith("  serve-expired-client-timeout:") else line
        for line in SERVE_STALE)


def _module_config(fwd: Forwarding, paths: ResolverPaths) -> str:
    modules = ["respip", *(["python"] if fwd.gate else []), *(["dns64"] if paths.map_aaaa else []),
               "iterator"]
    return f'  module-config: "{" ".join(modules)}"'


def _quote(text: str) -> str:
    if any(c in text for c in '"\n'):
        raise ValueError(f"{text!r} cannot be quoted in unbound.conf")
    return f'"{text}"'


def _forward_addr(fwd: Forwarding, paths: ResolverPaths) -> tuple[str, bool]:
    """The forward-addr value ("" without a server), and whether unbound speaks TLS to it."""
    if fwd.server is None:
        return "", False
    if fwd.transport is Transport.HTTPS:
        if paths.doh_proxy is None:
            raise ValueError("DNS over HTTPS needs the local dnsdist (doh_proxy)")
        return f"{paths.doh_proxy.host}@{paths.doh_proxy.port}", False
    addr = f"{fwd.server.host}@{fwd.server.port}"
    if fwd.transport is Transport.TLS:
        return f"{addr}#{fwd.tls_name}", True
    return addr, False


def unbound_conf(tenant: str, fwd: Forwarding, paths: ResolverPaths) -> str:
    """unbound.conf for one tenant resolver."""
    forward_addr, tls = _forward_addr(fwd, paths)
    lines = [
        f"# tenant resolver for {tenant}: generated by dns-controlplane, do not edit",
        "server:",
        "  do-daemonize: no",
        '  username: ""',
        '  chroot: ""',
        f"  directory: {_quote(paths.directory)}",
        '  pidfile: ""',
        "  use-syslog: no",
        '  logfile: ""',
        "  log-time-ascii: yes",
        "  verbosity: 1",
        f"  interface: {paths.listen.host}@{paths.listen.port}",
        f"  port: {paths.listen.port}",
        "  do-not-query-localhost: no",
        # With a policy gate a miss waits for a decision in the thread that asked: a second
        # thread keeps cached names answering meanwhile.
        # With a primary, unbound writes the whole zone back to its file after a transfer:
        # a second thread answers (the new data too) meanwhile.
        f"  num-threads: {2 if fwd.gate or paths.primary_port else 1}",
        "  so-reuseport: no",
        f"  msg-cache-size: {max(1, paths.cache_mb // 2)}m",
        f"  rrset-cache-size: {paths.cache_mb}m",
        "  extended-statistics: yes",
        "  prefetch: yes",
        # With a policy server, names the RPZ lets through are asked (the python module)
        # before dns64 and the iterator; without one the module is not loaded.
        # DNS64 needs the A record cached at least as long as the AAAA's NODATA: with a
        # TTL-0 upstream (dnsmasq's default) a cached NODATA would otherwise be served
        # without synthesis, and Envoy turns it into NXDOMAIN (measured on unbound 1.17).
        # Without DNS64 nothing needs it: upstream TTLs pass unchanged (never inflated).
        f"  cache-min-ttl: {5 if paths.map_aaaa else 0}",
        "  cache-max-negative-ttl: 5",
        # After an outage of the tenant's server, try it again within seconds, not the
        # default 15 minutes' backoff (measured: 16.8 s to recover; 6.6 s with 10).
        "  infra-host-ttl: 10",
        # ... and keep probing it while it is down, one query at a time, so fresh answers
        # return within infra-host-ttl of its return (measured 3.5-10 s), stale until then.
        "  infra-keep-probing: yes",
        *(_gated_serve_stale(fwd.gate.timeout_ms) if fwd.gate else SERVE_STALE),
        *SERVFAIL_PROMPTLY,
        _module_config(fwd, paths),
        *([f"  dns64-prefix: {DNS64_PREFIX}"] if paths.map_aaaa else []),
        # The table's reverse zones, inside or at unbound's default empty zones (10.in-addr.arpa,
        # d.f.ip6.arpa): a transparent local zone there lets the auth-zone answer.
        *(f"  local-zone: {_quote(z)} transparent" for z in reverse_zone_names(fwd)),
        # The table's names outside the zone (ServiceEntry hosts); changed live (pool).
        *(f"  local-data: {_quote(rr)}" for rr in outside_data(fwd)),
        *(f"  access-control: {net} allow" for net in paths.access),
        # No server (nothing may be forwarded): the RPZ's ``*`` denies every name outside
        # the table, and the iterator may ask no address at all, so nothing ever leaves.
        *(NEVER_RECURSE if fwd.server is None else ()),
    ]
    if tls:
        lines.append(f"  tls-cert-bundle: {_quote(paths.ca_file)}")
    if paths.tls_port:
        lines += [
            f"  interface: {paths.listen.host}@{paths.tls_port}",
            f"  tls-port: {paths.tls_port}",
            f"  tls-service-key: {_quote(paths.tls_key)}",
            f"  tls-service-pem: {_quote(paths.tls_cert)}",
            "  incoming-num-tcp: 100",
        ]
    if fwd.gate:
        lines += ["python:", f"  python-script: {_quote(paths.gate_script)}"]
    if paths.dnstap_socket:
        lines += _dnstap(paths.dnstap_socket)
    lines += [
        "remote-control:",
        "  control-enable: yes",
        f"  control-interface: {_quote(paths.control_socket)}",
        "  control-use-cert: no",
        *_auth_zones(fwd, paths),
        "rpz:",
        f"  name: {RPZ_ZONE}",
        f"  zonefile: {_quote(paths.rpz_file)}",
    ]
    if forward_addr:
        lines += [
            "forward-zone:",
            '  name: "."',
            f"  forward-addr: {forward_addr}",
            f"  forward-tls-upstream: {'yes' if tls else 'no'}",
            "  forward-first: no",
        ]
    lines.append("")
    return "\n".join(lines)


def _dnstap(socket_path: str) -> list[str]:
    """One dnstap CLIENT_RESPONSE per answer to the pool's reader. unbound's writer thread
    queues them (bounded, dropped when nobody reads) and never holds up an answer; the
    reader listens only while the tenant's view logs queries (docs/tenant-resolver.md)."""
    return [
        "dnstap:",
        "  dnstap-enable: yes",
        "  dnstap-bidirectional: yes",
        f"  dnstap-socket-path: {_quote(socket_path)}",
        "  dnstap-send-identity: no",
        "  dnstap-send-version: no",
        "  dnstap-log-client-response-messages: yes",
    ]


def _auth_zones(fwd: Forwarding, paths: ResolverPaths) -> list[str]:
    """The table's zones (``unbound_table.py``): unknown names in them get NXDOMAIN with
    the zone's SOA from the resolver itself (search-list expansions never leave). An
    alias zone answers nothing itself: it only keeps the cluster zone from answering the
    alias before the RPZ's CNAME is followed."""
    lines = []
    aliases = set(alias_zone_names(fwd))
    for zone in table_zone_names(fwd):
        serve = "no" if zone in aliases else "yes"
        lines += ["auth-zone:", f"  name: {_quote(zone)}",
                  *([f"  primary: 127.0.0.1@{paths.primary_port}"]
                    if paths.primary_port and zone not in aliases else []),
                  f"  zonefile: {_quote(table_file(paths.directory, zone))}",
                  f"  for-downstream: {serve}", f"  for-upstream: {serve}",
                  "  fallback-enabled: no"]
    return lines


def _covering(name: str, triggers: dict[str, _T]) -> _T | None:
    """What the most specific trigger that matches ``name`` says (exact, then the longest
    ``*.suffix``, then ``*``)."""
    labels = name.split(".")
    for candidate in [name, *("*." + ".".join(labels[i:]) for i in range(1, len(labels))),
                      "*"]:
        if candidate in triggers:
            return triggers[candidate]
    return None


def table_triggers(fwd: Forwarding) -> tuple[Trigger, ...]:
    """Passthru for the table's zones (RPZ applies before the zones: a ``*`` deny would
    hide them; what the tenant sees there is decided by the table), and for each of their
    ancestors without a trigger, an exact and a wildcard trigger carrying the decision
    that already covered it (unbound matches triggers as DNS wildcards: an ancestor that
    is an empty non-terminal would otherwise let its other children escape ``*``)."""
    if not fwd.triggers:
        return ()
    have = {t.name: t.deny for t in fwd.triggers}
    out: dict[str, Trigger] = {}
    for zone in (_fqdn_zone(fwd), *reverse_zone_names(fwd)):
        bare = zone.rstrip(".")
        for name in (bare, "*." + bare):
            out[name] = Trigger(name, False, "the tenant's table")
        labels = bare.split(".")
        for i in range(1, len(labels)):
            ancestor = ".".join(labels[i:])
            for name in (ancestor, "*." + ancestor):
                if name in have or name in out:
                    continue
                deny = _covering(name, have)
                if deny is not None:
                    out[name] = Trigger(name, deny, "covers the table's zones")
    return tuple(sorted((t for n, t in out.items() if n not in have), key=lambda t: t.name))


def _fqdn_zone(fwd: Forwarding) -> str:
    return fwd.zone.rstrip(".").lower() + "."


@dataclass(frozen=True, slots=True)
class _Rule:
    """One RPZ owner: deny (NXDOMAIN), pass (forward), or answer with ``rdata``."""

    deny: bool
    note: str
    rdata: tuple[str, ...] = ()
    ttl: int = 0


def _wildcard_above(name: str, bases: dict[str, _Rule]) -> _Rule | None:
    """The table wildcard whose base is the longest proper suffix of ``name``'s owner
    (``*.s`` counts as below ``s``'s parent, not below ``s``)."""
    owner = name[2:] if name.startswith("*.") else name
    pos = owner.find(".")
    while pos != -1:
        hit = bases.get(owner[pos + 1:])
        if hit is not None:
            return hit
        pos = owner.find(".", pos + 1)
    return None


def _close(rules: dict[str, _Rule]) -> None:
    """Give every ancestor ``m`` of an owner, and every exact owner ``n``, the owners
    ``m``, ``*.m`` and ``*.n`` with what already covers them. unbound matches owners as
    DNS wildcards (RFC 4592: ``*.s`` applies only where ``s`` is the closest existing
    name, and every ancestor of an owner exists), while the policy and Envoy's table pick
    the longest suffix: closed this way, both pick the same owner."""
    needed: set[str] = set()
    for name in rules:
        if name == "*":
            continue
        owner = name[2:] if name.startswith("*.") else name
        if not name.startswith("*."):
            needed.add(f"*.{owner}")
        labels = owner.split(".")
        for i in range(1, len(labels)):
            ancestor = ".".join(labels[i:])
            needed.update((ancestor, f"*.{ancestor}"))
    added = {}
    for n in sorted(needed - set(rules)):
        cover = _covering(n, rules)
        if cover is not None:
            added[n] = cover
    rules.update(added)


def rpz_rules(fwd: Forwarding, table: tuple[RpzRecord, ...] | None = None
              ) -> dict[str, _Rule]:
    """The resolver's RPZ by owner, in writing order: the policy's triggers, the table's
    zones' passthru (``table_triggers``), then what the table adds (``table_rpz``):

    - a wildcard outside the zone answers its addresses at ``*.x``, and every name the
      policy lets pass below ``x`` answers them too (Envoy answers those from the table);
      a name the policy denies below it stays denied (the policy is enforced inside a
      wildcard, which Envoy cannot do);
    - an alias answers ``CNAME target``, which unbound follows through its forwarding
      without applying the RPZ to that first target: an alias whose target the policy
      denies answers NXDOMAIN (what unbound answers when an upstream's CNAME points at a
      denied name); later hops of the chain are checked by unbound itself;
    - then every owner is closed (``_close``)."""
    table = table_rpz(fwd) if table is None else table
    rules = {t.name: _Rule(t.deny, t.rule) for t in fwd.triggers}
    for t in table_triggers(fwd):
        rules.setdefault(t.name, _Rule(t.deny, t.rule))
    if not table and not rules:
        return rules
    bases = {r.owner[2:]: _Rule(False, r.source, r.rdata, r.ttl)
             for r in table if r.owner.startswith("*.") and r.rdata}
    for base, rule in bases.items():
        rules[f"*.{base}"] = rule
    for name, rule in list(rules.items()):
        if not rule.deny and not rule.rdata:
            above = _wildcard_above(name, bases)
            if above is not None:
                rules[name] = above
    for r in table:
        if r.owner.startswith("*.") and r.rdata:
            continue
        if not r.rdata:
            rules[r.owner] = _Rule(True, r.source)
            continue
        target = r.rdata[0].split()[1].rstrip(".")
        decision = _covering(target, rules)
        denied = decision is not None and decision.deny
        rules[r.owner] = (_Rule(True, f"{r.source}, denied by the policy") if denied
                          else _Rule(False, r.source, r.rdata, r.ttl))
    _close(rules)
    return rules


def rpz_zone(fwd: Forwarding, table: tuple[RpzRecord, ...] | None = None) -> str:
    """The policy as RPZ triggers: NXDOMAIN (``CNAME .``) or forward (``rpz-passthru``),
    with the table's wildcards and aliases (``rpz_rules``); ``table``: ``table_rpz(fwd)``
    when the caller has it."""
    lines = [
        "$TTL 30",
        "@ SOA localhost. nobody.invalid. 1 3600 600 86400 30",
        "@ NS localhost.",
    ]
    for name, rule in rpz_rules(fwd, table).items():
        if rule.rdata:
            lines += [f"{name} {rule.ttl} {rdata} ; {rule.note}" for rdata in rule.rdata]
        else:
            action = "." if rule.deny else "rpz-passthru."
            lines.append(f"{name} CNAME {action} ; {rule.note}")
    lines.append("")
    return "\n".join(lines)


def dnsdist_conf(fwd: Forwarding, *, listen: Upstream, ca_file: str) -> str:
    """dnsdist as the DoH client behind unbound (cleartext only on loopback)."""
    server = fwd.server
    if server is None:
        raise ValueError("dnsdist needs the tenant's server")
    address = f"[{server.host}]:{server.port}" if ":" in server.host else \
        f"{server.host}:{server.port}"
    return "\n".join([
        "-- DoH client for one tenant resolver: generated by dns-controlplane, do not edit",
        'setSecurityPollSuffix("")',
        f'setLocal("{listen.host}:{listen.port}")',
        "setServerPolicy(firstAvailable)",
        # With the backend down (wrong CA, unreachable) answer SERVFAIL at once: by default
        # dnsdist 1.7 drops the query and the client waits ~20 s (measured).
        "setServFailWhenNoServer(true)",
        f'newServer({{address="{address}", tls="openssl", subjectName="{fwd.tls_name}", '
        f'caStore="{ca_file}", dohPath="{fwd.doh_path}", validateCertificates=true, '
        f'checkName="{fwd.tls_name}."}})',
        "",
    ])


def gate_script(tenant: str, fwd: Forwarding, paths: ResolverPaths, template: str) -> str:
    """The policy gate module for this tenant's unbound: ``template`` (the text of
    ``resolvers/resources/resolver_gate.py.tmpl``, a stdlib-only module for unbound's
    embedded Python, read by the caller) with its settings filled in."""
    assert fwd.gate is not None
    source = template
    settings = {
        'TENANT = "__TENANT__"': f"TENANT = {tenant!r}",
        'SOCKET = "__SOCKET__"': f"SOCKET = {paths.gate_socket!r}",
        "TIMEOUT = 0.2": f"TIMEOUT = {fwd.gate.timeout_ms / 1000!r}",
        "GRACE = 0.25": f"GRACE = {GATE_GRACE_MS / 1000!r}",
        "FAILURE_OPEN = False": f"FAILURE_OPEN = {fwd.gate.failure_open!r}",
    }
    for placeholder, value in settings.items():
        if placeholder not in source:
            raise ValueError(f"resolver_gate.py lost its placeholder {placeholder!r}")
        source = source.replace(placeholder, value, 1)
    return source
