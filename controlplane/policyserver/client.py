"""External policy servers: the gRPC client, the decider that feeds the decision cache,
and the gate the tenant resolvers ask for forwarded names.

The pure half is ``policy_decisions.py``. Here:

- ``PolicyDecider`` keeps one channel per policy server, asks
  ``envoy.service.auth.v3.Authorization/Check`` with a timeout, a bounded number of calls
  in flight and one call per (tenant, name) at a time (single flight), stores decisions
  with their lifetimes, re-asks table names before their decisions expire, and applies
  the policy's failure mode when the server cannot decide. An outage is logged once when
  it starts and once when it ends, never per query.
- The hub tells it, after each rebuild, which table names each tenant's view depends on
  (``sync``), and reads the decisions back (``table_decisions``); when a table name's
  decision changes it pokes a rebuild (``on_change``).
- ``serve_gate`` answers the tenant resolvers (the unbound python module rendered by
  ``translate/unbound.py``) on a unix socket, one line per question:
  ``<tenant> <name> <type>`` -> ``allow|deny <ttl seconds>``; it always answers within
  the policy's timeout (the failure mode decides what a late or missing answer means).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from controlplane.core.errors import (
    BadAddress,
    BadDecision,
    BadUpstream,
    InvalidValue,
    MissingService,
    NoTlsName,
)
from controlplane.core.inventory import Inventory
from controlplane.core.model import DnsPolicy, FailureMode
from controlplane.core.names import normalise, parse_ip, split_host_port
from controlplane.dns.views import TenantView, resolve_upstream
from controlplane.policy.decisions import (
    TABLE_TYPE,
    DecisionCache,
    ExternalDecision,
    Question,
    check_request,
    decision_from_response,
    failure_mode,
    typed_key,
)

log = logging.getLogger("controlplane.policy_server")

DEFAULT_PORT = 9191  # OPA's Envoy plugin listens here
FAILURE_TTL = 1.0  # how long a failure-mode answer is kept, so an outage costs one timeout a second
PROBE_INTERVAL = 1.0  # during an outage, one Check a second tells when the server is back
REFRESH_AHEAD = 0.2  # re-ask a table name when less than this share of its lifetime is left
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Target:
    """Where a tenant's policy server is and how to reach it."""

    address: str  # gRPC target, e.g. "127.0.0.1:9191" or "dns:///policy.example:9191"
    tls_name: str  # "" for plaintext
    ca_bundle: str  # PEM, or "" for the control plane's default / the system's
    timeout: float
    default_ttl: float
    mode: FailureMode
    client_cert: str = ""  # PEM chain presented to the server (mutual TLS), when configured
    client_key: str = ""


def target_for(policy: DnsPolicy, inventory: Inventory, *, zone: str,
               default_ca: str = "", client_cert: str = "", client_key: str = ""
               ) -> Target:
    """The gRPC target of a policy's server.

    The address is an IP, a Service name (resolved to its cluster IP, like
    ``server.address``), a ServiceEntry host with an address, or a DNS name that gRPC
    resolves itself. Raises ``BadAddress``, ``MissingService`` (a Service name whose
    Service does not exist yet) or ``NoTlsName`` when there is none.
    """
    ps = policy.policy_server
    assert ps is not None
    try:
        host, port = split_host_port(ps.address, DEFAULT_PORT)
    except BadAddress as exc:
        raise BadAddress(f"policy.server.address {ps.address!r}: {exc}") from exc
    try:
        resolved = resolve_upstream(ps.address, inventory, zone=zone, default_port=DEFAULT_PORT)
        address = f"[{resolved.host}]:{resolved.port}" if ":" in resolved.host else \
            f"{resolved.host}:{resolved.port}"
    except MissingService:
        raise  # a Service name whose Service does not exist (yet)
    except BadUpstream:  # not a Service name: a ServiceEntry host, or a name gRPC resolves
        entry_ip = _service_entry_address(inventory, normalise(host))
        address = f"{entry_ip}:{port}" if entry_ip else f"dns:///{host}:{port}"
    tls_name = ps.server_name or (host if ps.tls and parse_ip(host) is None else "")
    if ps.tls and not tls_name:
        raise NoTlsName(f"policy.server.address {ps.address!r} is an IP address: serverName "
                        "must name the certificate to verify")
    return Target(address=address, tls_name=tls_name, ca_bundle=ps.ca_bundle or default_ca,
                  timeout=ps.timeout_ms / 1000, default_ttl=float(ps.decision_ttl_seconds),
                  mode=failure_mode(policy), client_cert=client_cert if ps.tls else "",
                  client_key=client_key if ps.tls else "")


def _service_entry_address(inventory: Inventory, host: str) -> str:
    for entry in inventory.service_entries.values():
        if host in (h.lower() for h in entry.hosts):
            if entry.addresses:
                return entry.addresses[0]
            for ep in entry.endpoints:
                if parse_ip(ep.address) is not None:
                    return ep.address
    return ""


@dataclass
class Outage:
    since: float
    error: str
    probed: float = 0.0  # when the prefetch last tried the server during the outage


@dataclass
class PolicyDecider:
    """Decisions of every tenant's policy server; see the module docstring."""

    on_change: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.monotonic
    default_ca: str = ""  # PEM for TLS when a policy gives no caBundle ("" : the system's)
    client_cert: str = ""  # mutual TLS to every policy server, when configured
    client_key: str = ""
    max_in_flight: int = 32
    cache: DecisionCache = field(default_factory=DecisionCache)
    targets: dict[str, Target] = field(default_factory=dict)
    target_errors: dict[str, str] = field(default_factory=dict)
    outages: dict[str, Outage] = field(default_factory=dict)
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (tenant, result)
    checks: int = 0  # Check calls made
    latency_counts: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    latency_count: int = 0
    latency_sum: float = 0.0
    # table names whose server decision expired unreplaced (the failure mode decides them)
    expired: dict[str, int] = field(default_factory=dict)
    # when the call that last set a tenant's reachability started: an older call that ends
    # later (a slow Check failing at its deadline) does not overrule it
    _reach_started: dict[str, float] = field(default_factory=dict)
    _wanted: dict[str, frozenset[str]] = field(default_factory=dict)
    # what is known of every pod of a tenant: (selected namespaces, the selector's labels)
    _askers: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = field(
        default_factory=dict)
    _channels: dict[Target, grpc.aio.Channel] = field(default_factory=dict)
    _in_flight: dict[tuple[str, str, str], asyncio.Future[ExternalDecision]] = field(
        default_factory=dict)
    _wake: asyncio.Event | None = None
    # Live questions (a query is waiting) and the bulk prefetch of table names get their own
    # call slots, so a query never queues behind thousands of table names.
    _live: asyncio.Semaphore | None = None
    _bulk: asyncio.Semaphore | None = None

    # -- what the hub calls (synchronously, on the event loop) ------------------
    def sync(self, views: Mapping[str, TenantView], policies: Mapping[str, DnsPolicy],
             inventory: Inventory, *, zone: str) -> None:
        """Targets and wanted table names after a rebuild."""
        for tenant in list(self.targets):
            if tenant not in policies or policies[tenant].policy_server is None:
                self.targets.pop(tenant)
                self._askers.pop(tenant, None)
                self.cache.drop_tenant(tenant)
        self.target_errors.clear()
        for tenant, policy in policies.items():
            if policy.policy_server is None:
                continue
            try:
                target = target_for(policy, inventory, zone=zone, default_ca=self.default_ca,
                                    client_cert=self.client_cert, client_key=self.client_key)
            except InvalidValue as exc:
                self.target_errors[tenant] = str(exc)
                self.targets.pop(tenant, None)
                continue
            asker = (tuple(sorted(ns for ns, obj in inventory.namespaces.items()
                                  if policy.namespace_selector.matches(dict(obj.labels)))),
                     tuple(policy.selector.match_labels) if policy.selector else ())
            if self.targets.get(tenant) != target or self._askers.get(tenant) != asker:
                self.cache.drop_tenant(tenant)  # new server, settings or askers: ask again
            self.targets[tenant] = target
            self._askers[tenant] = asker
        self._wanted = {t: frozenset(views[t].asked) for t in self.targets if t in views}
        if self._wake is not None:
            self._wake.set()

    def table_decisions(self, tenant: str) -> dict[str, ExternalDecision]:
        """The decisions that still live, by name: an expired one is never used (the
        failure mode decides until the server answers again)."""
        now = self.clock()
        return {name: d for name, d in self.cache.tenant(tenant) if d.expires_at > now}

    def reachable(self, tenant: str) -> tuple[bool, str]:
        if tenant in self.target_errors:
            return False, self.target_errors[tenant]
        outage = self.outages.get(tenant)
        if outage is None:
            return True, ""
        n = self.expired.get(tenant, 0)
        if not n:
            return False, outage.error
        return False, (f"{outage.error}; {n} table name{'s' if n != 1 else ''} past their "
                       "lifetime, decided by the failure mode")

    # -- deciding ---------------------------------------------------------------
    async def decide(self, q: Question) -> ExternalDecision:
        """A decision within the tenant's timeout: cached, asked, or the failure mode's."""
        now = self.clock()
        cached = (self.cache.get(q.tenant, typed_key(q.name, q.qtype), now)
                  or self.cache.get(q.tenant, q.name, now))
        if cached is not None:
            self.counts[(q.tenant, "cache")] += 1
            return cached
        target = self.targets.get(q.tenant)
        if target is None:
            why = self.target_errors.get(q.tenant, "no policy server for this tenant")
            return self._failure(q.tenant, FailureMode.CLOSED, why, now)
        flight = self._flight(q, target, live=True)
        try:
            return await asyncio.wait_for(asyncio.shield(flight), target.timeout)
        except TimeoutError:
            # This query cannot wait longer; the call goes on and its answer is stored. Only
            # a failed or garbage call marks the server unreachable (a slow one fails at its
            # own deadline), not a wait for a free slot.
            self.counts[(q.tenant, "timeout")] += 1
            return self._fallback(target.mode, f"no answer within "
                                  f"{target.timeout * 1000:.0f} ms", self.clock())

    def _flight(self, q: Question, target: Target, *, live: bool
                ) -> asyncio.Future[ExternalDecision]:
        """The one call in flight for (tenant, name), started if there is none."""
        key = (q.tenant, q.name, q.qtype)
        flight = self._in_flight.get(key)
        if flight is None:
            q = self._who(q)
            flight = asyncio.ensure_future(self._ask(q, target, live=live))
            self._in_flight[key] = flight
            flight.add_done_callback(self._landed(key))
        return flight

    def _who(self, q: Question) -> Question:
        """The question with what is known of the tenant's pods (the same for all)."""
        namespaces, labels = self._askers.get(q.tenant, ((), ()))
        return replace(q, namespaces=namespaces, labels=labels,
                       namespace=namespaces[0] if len(namespaces) == 1 else "")

    def _landed(self, key: tuple[str, str, str]
                ) -> Callable[[asyncio.Future[ExternalDecision]], None]:
        def done(_: asyncio.Future[ExternalDecision]) -> None:
            self._in_flight.pop(key, None)
        return done

    async def _ask(self, q: Question, target: Target, *, live: bool) -> ExternalDecision:
        if self._live is None or self._bulk is None:
            self._live = asyncio.Semaphore(max(1, self.max_in_flight // 2))
            self._bulk = asyncio.Semaphore(max(1, self.max_in_flight // 2))
        async with self._live if live else self._bulk:
            started = self.clock()
            try:
                stub = external_auth_pb2_grpc.AuthorizationStub(self._channel(target))
                resp: external_auth_pb2.CheckResponse = await stub.Check(
                    check_request(q), timeout=max(target.timeout * 4, 1.0))
            except grpc.aio.AioRpcError as exc:
                return self._failure(q.tenant, target.mode,
                                     f"{exc.code().name}: {exc.details() or ''}".strip(),
                                     self.clock(), started=started)
            finally:
                self.checks += 1
                self._observe(self.clock() - started)
        now = self.clock()
        try:
            got = decision_from_response(resp, now=now, default_ttl=target.default_ttl)
        except BadDecision as exc:
            return self._failure(q.tenant, target.mode, str(exc), now, started=started)
        self._recovered(q.tenant, started=started)
        self.counts[(q.tenant, "allow" if got.allow else "deny")] += 1
        if got.per_type and q.qtype != TABLE_TYPE:  # this type only
            self.cache.put(q.tenant, typed_key(q.name, q.qtype), got)
            return got
        changed = self.cache.put(q.tenant, q.name, got)
        if changed and q.name in self._wanted.get(q.tenant, ()):
            self.on_change()
        return got

    @staticmethod
    def _fallback(mode: FailureMode, why: str, now: float) -> ExternalDecision:
        return ExternalDecision(allow=mode is FailureMode.OPEN, expires_at=now + FAILURE_TTL,
                                decided_at=now, source=f"failure mode {mode.value}: {why}")

    def _latest(self, tenant: str, started: float | None) -> bool:
        """Whether a call that started at ``started`` (None: no call) is the latest to
        end so far by start time, so its outcome sets the tenant's reachability."""
        if started is None:
            return True
        if started < self._reach_started.get(tenant, float("-inf")):
            return False
        self._reach_started[tenant] = started
        return True

    def _failure(self, tenant: str, mode: FailureMode, why: str, now: float, *,
                 started: float | None = None) -> ExternalDecision:
        self.counts[(tenant, "error")] += 1
        if not self._latest(tenant, started):
            return self._fallback(mode, why, now)  # a later call has answered since
        outage = self.outages.get(tenant)
        if outage is None:
            self.outages[tenant] = Outage(now, why)
            log.warning("policy server of %s cannot decide (%s): failure mode %s until it "
                        "answers again", tenant, why, mode.value, extra={"tenant": tenant})
            self.on_change()  # status (PolicyServerReachable) and views
        else:
            # The reason shown is the latest call's (a server stopped, then one answering
            # garbage: the garbage), still one log line and one rebuild per outage.
            outage.error = why
        return self._fallback(mode, why, now)

    def _recovered(self, tenant: str, *, started: float | None = None) -> None:
        if not self._latest(tenant, started):
            return
        outage = self.outages.pop(tenant, None)
        if outage is not None:
            log.warning("policy server of %s answers again after %.1f s", tenant,
                        self.clock() - outage.since, extra={"tenant": tenant})
            self.on_change()

    def _observe(self, seconds: float) -> None:
        self.latency_count += 1
        self.latency_sum += seconds
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_counts[i] += 1

    def _channel(self, target: Target) -> grpc.aio.Channel:
        channel = self._channels.get(target)
        if channel is None:
            if target.tls_name:
                creds = grpc.ssl_channel_credentials(
                    root_certificates=target.ca_bundle.encode() if target.ca_bundle else None,
                    private_key=target.client_key.encode() if target.client_key else None,
                    certificate_chain=(target.client_cert.encode() if target.client_cert
                                       else None))
                channel = grpc.aio.secure_channel(
                    target.address, creds,
                    options=[("grpc.ssl_target_name_override", target.tls_name)])
            else:
                channel = grpc.aio.insecure_channel(target.address)
            self._channels[target] = channel
        return channel

    # -- table names: asked ahead of need ---------------------------------------
    async def run(self, stop: asyncio.Event, *, interval: float = 0.5) -> None:
        """Ask for every wanted table name without a live decision, and again shortly
        before each decision expires; at most ``max_in_flight`` calls at a time."""
        self._wake = asyncio.Event()
        while not stop.is_set():
            self._wake.clear()
            next_expiry = self._watch_expiry()
            flights = [self._flight(q, self.targets[q.tenant], live=False)
                       for q in self._due()]
            if flights:
                await asyncio.gather(*flights)  # a refresh asks even while the old lives
                continue
            # wake at the next expiry too: an expired name leaves the views at once
            wait = min(interval, max(0.01, next_expiry - self.clock()))
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
        for channel in self._channels.values():
            await channel.close()

    def _watch_expiry(self) -> float:
        """Count the wanted table names whose server decision expired unreplaced; when a
        count changes the views are rebuilt (such a name falls to the failure mode).
        Returns when the next live decision of a wanted name expires (inf: none)."""
        now = self.clock()
        changed = False
        next_expiry = float("inf")
        for tenant, names in self._wanted.items():
            n = 0
            for name in names:
                d = self.cache.last(tenant, name)
                if d is None:
                    continue
                if d.expires_at <= now:
                    n += 1
                elif d.expires_at < next_expiry:
                    next_expiry = d.expires_at
            if n != self.expired.get(tenant, 0):
                self.expired[tenant] = n
                changed = True
        for tenant in [t for t in self.expired if t not in self._wanted]:
            del self.expired[tenant]
        if changed:
            self.on_change()
        return next_expiry

    def _probe(self, tenant: str, names: frozenset[str]) -> Question | None:
        """During an outage: one question to see whether the server answers again, even
        when no decision is due (a wanted table name, else the last name decided)."""
        candidates = sorted(names) or [name for name, _ in self.cache.tenant(tenant)][-1:]
        for name in candidates:
            if (tenant, name, TABLE_TYPE) not in self._in_flight:
                return Question(tenant=tenant, name=name)
        return None

    def _due(self) -> Iterable[Question]:
        now = self.clock()
        for tenant in {*self._wanted, *self.outages}:
            names = self._wanted.get(tenant, frozenset())
            target = self.targets.get(tenant)
            if target is None:
                continue
            outage = self.outages.get(tenant)
            if outage is not None:  # one probe a second until the server answers again
                if now - outage.probed < PROBE_INTERVAL:
                    continue
                outage.probed = now
                probe = self._probe(tenant, names)
                if probe is not None:
                    yield probe
                continue
            for name in sorted(names):
                d = self.cache.last(tenant, name)
                if d is not None and d.from_server:
                    # re-ask when 10-30% of the lifetime is left, spread by name: decisions
                    # made together do not all come due together
                    share = REFRESH_AHEAD * (0.5 + (zlib.crc32(name.encode()) % 1000) / 1000)
                    if d.expires_at - now > (d.expires_at - d.decided_at) * share:
                        continue
                if (tenant, name, TABLE_TYPE) in self._in_flight:
                    continue
                yield Question(tenant=tenant, name=name)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


async def serve_gate(decider: PolicyDecider, path: Path) -> asyncio.AbstractServer:
    """The unix socket the tenant resolvers ask: ``tenant name type`` -> ``allow|deny ttl``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                parts = line.decode(errors="replace").split()
                if len(parts) != 3:
                    writer.write(b"deny 1\n")
                    continue
                tenant, name, qtype = parts
                d = await decider.decide(Question(tenant=tenant, name=name.rstrip(".").lower(),
                                                  qtype=qtype.upper()))
                ttl = max(0.0, d.expires_at - decider.clock())
                writer.write(f"{'allow' if d.allow else 'deny'} {ttl:.1f}\n".encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return await asyncio.start_unix_server(handle, path=str(path))


def policy_server_json(decider: PolicyDecider, policy: DnsPolicy | None,
                       tenant: str) -> dict[str, object] | None:
    """What a tenant's policy server decided (``GET /api/v1/views/{tenant}/dns-table``)."""
    if policy is None or policy.policy_server is None:
        return None
    reachable, why = decider.reachable(tenant)
    now = decider.clock()
    target = decider.targets.get(tenant)
    return {
        "address": policy.policy_server.address,
        "target": target.address if target else None,
        "tls": bool(target and target.tls_name),
        "failure_mode": failure_mode(policy).value,
        "timeout_ms": policy.policy_server.timeout_ms,
        "reachable": reachable,
        "reason": why or None,
        "decisions": [{"name": name, **d.as_json(now)}
                      for name, d in sorted(decider.cache.tenant(tenant))],
    }


def decision_json(decider: PolicyDecider, tenant: str, name: str) -> dict[str, object] | None:
    """The policy server's cached decision about one name (``/api/v1/explain``)."""
    d = decider.cache.last(tenant, name.rstrip(".").lower())
    return d.as_json(decider.clock()) if d is not None else None
