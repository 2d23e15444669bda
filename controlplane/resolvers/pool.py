"""The tenant resolvers: one unbound per forwarding tenant, started and kept in line.

The boundary half of ``translate/unbound.py``: it writes the config files,
starts the processes, applies changes and reads their statistics. The hub
calls ``apply`` with every tenant's ``Forwarding`` after each rebuild and puts
the returned addresses into the views, so Envoy only ever forwards to a
resolver that is up.

Changes, cheapest first (measured in docs/tenant-resolver.md):

- only the policy's triggers (or the table's RPZ records: wildcards and aliases,
  ``unbound_table.table_rpz``) changed: the RPZ file is rewritten and
  ``unbound-control auth_zone_reload`` applies it live; the cache stays, and a
  newly denied name is denied at once (RPZ applies before the cache);
- the table changed (``_reload_table``): the zone files whose text changed are rewritten
  and reloaded (``auth_zone_reload``: unbound reads the whole file), or, with
  ``table_updates`` ``ixfr`` (the default), the zone's removed and added lines go to the pool's
  loopback primary (``primary.py``) and unbound takes them by IXFR
  (``auth_zone_transfer``), asynchronously; a file and a reload only to resync;
- the server, transport or CA changed: make-before-break: a new resolver on a
  new port, Envoy moves to it with its next listener update (lossless, facts
  10), and the old one stops after ``grace_seconds``; the old server's cache
  is not worth keeping;
- a resolver that dies is restarted on the same port with the same files;
- with ``process`` lifetime on an explicit directory, a restarted control plane starts
  each tenant's resolver on the ports the previous one had, when they are free
  (``_remember``): the sidecars keep the addresses they have.

Lifetime (``persistent``; ``--resolver-lifetime``, docs/tenant-resolver.md):

- ``process`` (the default, and the only choice with a temporary directory): the
  resolvers die with the control plane (``setpriv --pdeathsig KILL``, even on SIGKILL)
  and ``stop_all`` stops them; the local run and the tests rely on that cleanup.
- ``persistent`` (needs an explicit ``--resolver-dir``): each resolver runs in its own
  session with no death signal, and ``stop_all`` leaves it running, so forwarded names
  keep resolving while no control plane runs. Each resolver directory holds
  ``state.json`` (``state.py``: tenant, generation, pids and command lines, ports, the
  server key), written atomically. The first ``apply`` of the next control plane on the
  same directory adopts them: a pid counts when ``/proc/PID/cmdline`` is still the one it
  was started with (it names the directory's config file) and unbound answers
  ``unbound-control status``; an adopted resolver keeps its ports, so the listener the
  hub pushes is the one the sidecars already have. ``apply`` then reconciles as above
  (same server key: kept, triggers reloaded live if they changed; another key: replaced
  after the grace period; tenants no longer forwarding: retired). Of several directories
  of one tenant the newest generation is the current one and older live ones retire
  after the grace period; a current one whose process died is restarted on its own
  ports; a directory with no readable state (a start cut short) is an orphan: any
  process naming its config file is killed and the directory removed. Adopted processes
  are not children: supervision polls their pid. One directory serves one control plane.

Ports: a resolver's ports (unbound's, its TLS port, the dnsdist DoH proxy's) are
chosen free, but another process may bind one before the child does. A child that
exits with "address already in use", or comes up on a port some other process
holds too, is stopped and the resolver starts again on new ports, up to
``port_attempts`` times; a restart that finds its old port taken moves to new ports
too (the hub then points Envoy there).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from controlplane.core.errors import PortTaken, ResolverError
from controlplane.core.settings import ResolverTableUpdates
from controlplane.dns.views import Forwarding, ResolverHop, Transport, Upstream
from controlplane.identity.certs import ServerTls, hop_sni, hop_tenant_prefix
from controlplane.identity.hop_issuer import TenantCerts
from controlplane.resolvers.primary import ZonePrimary, with_soa
from controlplane.resolvers.reports import ReportReader, Sink
from controlplane.resolvers.state import (
    STATE_FILE,
    ResolverState,
    digest,
    generation_of,
    read_state,
    write_state,
)
from controlplane.resolvers.terminator import DIRECTORY as TERMINATOR_DIR
from controlplane.resolvers.terminator import Terminator
from controlplane.runtime.process import (
    Process,
    find_tool,
    free_port,
    holds_port,
    pids_naming,
    port_holders,
)
from controlplane.runtime.spawner import SpoolSpawner
from controlplane.translate.table_texts import NameTexts, TableOutput, TableTexts
from controlplane.translate.terminator import TerminatorFiles, TerminatorTenant
from controlplane.translate.unbound import (
    RPZ_ZONE,
    ResolverPaths,
    dnsdist_conf,
    gate_script,
    rpz_zone,
    unbound_conf,
)
from controlplane.translate.unbound_table import RpzRecord, empty_zone, table_file

log = logging.getLogger("controlplane.resolvers.pool")

SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CONTROL_TIMEOUT = 5.0  # seconds for one command to unbound's control socket
SUN_PATH_MAX = 108  # sizeof(sockaddr_un.sun_path) on Linux, the terminating NUL included
UNBOUND_PYTHON = "/usr/lib/python3/dist-packages"  # python3-unbound's unboundmodule.py
RESOLVER_TLS_NAME = "tenant-resolver.dns-controlplane"  # the name the hop certificate carries

# The policy gate unbound runs (a stdlib-only module; translate/unbound.py fills it in).
GATE_TEMPLATE = Path(__file__).resolve().parent / "resources" / "resolver_gate.py.tmpl"


class ResolverDirectory(Protocol):
    """Where each forwarding tenant's resolver listens (what the hub needs)."""

    errors: dict[str, str]  # tenant -> why its resolver is not running

    @property
    def hop(self) -> ResolverHop | None:
        """How sidecars reach the resolvers over TLS; None: plain UDP."""

    def hop_for(self, tenant: str) -> ResolverHop | None:
        """``hop`` for one tenant's views (the mutual hop carries the tenant's SNI and
        client certificate)."""

    def prepare(self, forwards: Mapping[str, Forwarding]) -> None:
        """The heavy, pure part of ``apply`` (the tables' zone texts), called off the event
        loop first so that ``apply``, on the loop, finds them ready."""

    def apply(self, forwards: Mapping[str, Forwarding]) -> dict[str, Upstream]: ...


@dataclass
class TenantResolver:
    tenant: str
    forward: Forwarding | None  # None: adopted, until the first apply names its forwarding
    paths: ResolverPaths
    unbound: Process
    dnsdist: Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    server_key: str = ""  # the pool's _server_key of what it was started for
    triggers_key: str = ""  # _rpz_key of what its RPZ file holds (triggers, table RPZ)
    adopted: bool = False  # started by an earlier control plane
    table_texts: dict[str, str] = field(default_factory=dict)  # its zone files, by zone
    table_of: tuple[object, ...] | None = None  # the Forwarding.table they were built from
    local_data: tuple[str, ...] | None = None  # outside_data it holds; None: not known
    reports: ReportReader | None = None  # its dnstap reader, while the tenant logs queries
    # An adopted resolver's zone serials (list_auth_zones): its resyncs go above them.
    adopted_serials: dict[str, int] = field(default_factory=dict)

    @property
    def generation(self) -> int:
        return generation_of(self.paths.directory)

    @property
    def conf_path(self) -> str:
        return str(Path(self.paths.directory) / "unbound.conf")

    def alive(self) -> bool:
        return self.unbound.alive() and (self.dnsdist is None or self.dnsdist.alive())

    def stop(self) -> None:
        self.stop_reports()
        for proc in (self.unbound, self.dnsdist):
            if proc is not None:
                proc.stop(timeout=5)

    def stop_reports(self) -> None:
        if self.reports is not None:
            self.reports.stop()
            self.reports = None


@dataclass
class ResolverPool:
    """Local tenant resolvers: unbound processes on loopback, one per tenant."""

    workdir: Path
    default_ca_bundle: str = ""  # for TLS/HTTPS when the policy names none
    listen_host: str = "127.0.0.1"
    advertise_host: str = ""  # the address sidecars use to reach them; "" for listen_host
    access: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    hop_tls: ServerTls | None = None  # the resolvers serve DoT to the sidecars with it
    # --resolver-hop mtls: the terminator serves the hop with this (its CA signs the
    # tenants' client certificates); the resolvers listen on loopback only.
    hop_mtls: ServerTls | None = None
    hop_port: int = 10853  # the terminator's one port, for every tenant
    hop_certs: TenantCerts | None = None  # made from hop_mtls when not given
    gate_socket: str = ""  # the control plane's policy gate (policy_client.serve_gate)
    owns_workdir: bool = False  # remove it on stop_all (a temporary directory)
    persistent: bool = False  # outlive the control plane; adopted by the next (module doc)
    # Start the processes through the resolver host (runtime/spawner.py: another container
    # of the pod, so they outlive the control plane's container); persistent only.
    spawner: SpoolSpawner | None = None
    map_aaaa: bool = False  # DNS64 stand-ins for AAAA of IPv4-only names (ResolverAaaa)
    grace_seconds: float = 10.0
    # An adopted resolver no apply has named yet waits this long for its tenant before it
    # retires: a restarted control plane applies before its first full load.
    adoption_seconds: float = 120.0
    start_timeout: float = 10.0
    clock: Callable[[], float] = time.monotonic
    choose_port: Callable[[], int] = free_port  # a port free now; it may be taken by bind time
    port_attempts: int = 5  # starts on new ports when a chosen one was taken
    resolvers: dict[str, TenantResolver] = field(default_factory=dict)
    retiring: list[tuple[float, TenantResolver]] = field(default_factory=list)
    reloads: int = 0  # live trigger reloads (auth_zone_reload)
    table_reloads: int = 0  # live reloads of a table zone (auth_zone_reload)
    # How a change of a table reaches a running resolver: its files reloaded, or by IXFR
    # from ``primary`` (a loopback server of this process; primary.py) with the files
    # reloaded only to resync (a first change after adoption, a serial the history lost).
    table_updates: ResolverTableUpdates = ResolverTableUpdates.IXFR
    table_transfers: int = 0  # changes of a table zone sent by IXFR (auth_zone_transfer)
    primary: ZonePrimary | None = field(default=None, repr=False)
    errors: dict[str, str] = field(default_factory=dict)  # tenant -> why it has no resolver
    # Told of every answer of a resolver whose tenant logs queries (reports.py, dnstap);
    # None: nobody listens, and unbound keeps a bounded backlog.
    on_reply: Sink | None = None
    _generation: int = 0
    _adoption_done: bool = False
    # process lifetime on an explicit directory: the paths (ports) each tenant's resolver
    # had under the previous control plane, tried once by its first start (``_remember``).
    _previous: dict[str, ResolverPaths] = field(default_factory=dict, repr=False)
    # asks for every tenant's server key, and a 100k-name table takes a while to scan.
    # Each tenant's table files (zone texts, table RPZ records, local-data), made again by
    # the names that changed (``translate/table_texts.py``; ``prepare``).
    _tables: dict[str, TableTexts] = field(default_factory=dict, repr=False)
    # Each name's texts, shared by the tenants' tables (a wide tenant's names are every
    # other tenant's too): formatted once for all of them.
    _names: NameTexts = field(default_factory=NameTexts, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    terminator: Terminator | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.unbound_bin = find_tool("unbound")
        self.control_bin = find_tool("unbound-control")
        self.dnsdist_bin = find_tool("dnsdist")
        # The resolvers die with the control plane, even when it is SIGKILLed. The death
        # signal follows the thread that started them: start them all on one thread that
        # lives as long as the process (app.py's resolver thread, or the caller's).
        # Persistent resolvers run in their own session with no death signal instead.
        setpriv = find_tool("setpriv")
        self._prefix = [setpriv, "--pdeathsig", "KILL"] if setpriv and not self.persistent else []
        if self.spawner is not None and not self.persistent:
            raise ResolverError("a resolver host (--resolver-host-spool) needs "
                                "--resolver-lifetime persistent: its processes are not the "
                                "control plane's children")
        if self.persistent and self.owns_workdir:
            raise ResolverError("persistent tenant resolvers need a directory of their own "
                                "(--resolver-dir), not a temporary one")
        if self.unbound_bin is None or self.control_bin is None:
            raise ResolverError("unbound is not installed (Debian: apt-get install unbound); "
                                "tenant resolvers need it, or run with --tenant-resolvers none")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Absolute: unbound's -c path, and what a later control plane finds (adoption).
        self.workdir = self.workdir.resolve()
        if self.hop_mtls is not None:
            self._mutual_setup(self.hop_mtls)
        if self.table_updates is ResolverTableUpdates.IXFR and self.primary is None:
            self.primary = ZonePrimary()

    @property
    def hop(self) -> ResolverHop | None:
        tls = self.hop_tls or self.hop_mtls
        if tls is None:
            return None
        return ResolverHop(server_name=tls.server_name, ca_pem=tls.ca_pem)

    def hop_for(self, tenant: str) -> ResolverHop | None:
        if self.hop_mtls is None or self.hop_certs is None:
            return self.hop
        with self._lock:
            cert = self.hop_certs.get(tenant)
        return ResolverHop(server_name=self.hop_mtls.server_name, ca_pem=self.hop_mtls.ca_pem,
                           sni=hop_sni(tenant, self.hop_mtls.server_name),
                           client_cert_pem=cert.cert_pem, client_key_pem=cert.key_pem)

    # -- the mutual hop (--resolver-hop mtls; resolvers/terminator.py) ----------
    def _mutual_setup(self, tls: ServerTls) -> None:
        if tls.ca_key_file is None:
            raise ResolverError("the mutual resolver hop needs the hop CA's key (ca.key) to "
                                "sign client certificates")
        if self.hop_certs is None:
            self.hop_certs = TenantCerts(tls.ca_pem.encode(), tls.ca_key_file.read_bytes())
        directory = self.workdir / TERMINATOR_DIR
        files = TerminatorFiles(
            directory=str(directory), listen_host=self.advertise_host or self.listen_host,
            port=self.hop_port, ca_file=str((tls.ca_key_file.parent / "ca.crt").resolve()),
            cert_file=str(Path(tls.cert_file).resolve()),
            key_file=str(Path(tls.key_file).resolve()))
        self.terminator = Terminator(files, prefix=tuple(self._prefix),
                                     persistent=self.persistent, spawner=self.spawner)

    @property
    def _resolver_host(self) -> str:
        """Where unbound listens: loopback only behind the terminator."""
        return "127.0.0.1" if self.hop_mtls is not None else self.listen_host

    @property
    def _resolver_access(self) -> tuple[str, ...]:
        return ("127.0.0.0/8", "::1/128") if self.hop_mtls is not None else self.access

    def _sync_terminator(self, ports: Mapping[str, int]) -> None:
        """Each running resolver's chain in the terminator (new resolvers started first,
        a retired tenant's chain gone before its resolver stops)."""
        if self.terminator is None or self.hop_mtls is None:
            return
        name = self.hop_mtls.server_name
        self.terminator.sync({t: TerminatorTenant(sni=hop_sni(t, name),
                                                  uri_prefix=hop_tenant_prefix(t),
                                                  resolver_port=port)
                              for t, port in ports.items()})
        if self.hop_certs is not None:
            self.hop_certs.keep(ports)

    def renew_due(self) -> list[str]:
        """Tenants whose hop client certificate was re-issued now (half its life passed):
        their views need rendering again."""
        if self.hop_certs is None:
            return []
        with self._lock:
            return self.hop_certs.due()

    # -- what the hub calls ---------------------------------------------------
    def apply(self, forwards: Mapping[str, Forwarding]) -> dict[str, Upstream]:
        """Make the running resolvers match ``forwards``; their addresses by tenant."""
        with self._lock:
            return self._apply(forwards)

    def _apply(self, forwards: Mapping[str, Forwarding]) -> dict[str, Upstream]:
        if not self._adoption_done:
            self._adoption_done = True
            if self.persistent:
                self._adopt()
            else:
                self._remember()
        self._retire_due()
        for tenant in sorted(set(self.resolvers) - set(forwards)):
            gone = self.resolvers.pop(tenant)
            self._tables.pop(tenant, None)
            self._retire(gone, now=not gone.alive(),
                         after=self.adoption_seconds if gone.forward is None else None)
            log.info("tenant resolver for %s retired: the tenant no longer forwards", tenant,
                     extra={"tenant": tenant})
        try:
            return self._apply_current(forwards)
        finally:
            self._release_primaries()

    def _apply_current(self, forwards: Mapping[str, Forwarding]) -> dict[str, Upstream]:
        out: dict[str, Upstream] = {}
        ports: dict[str, int] = {}
        fresh = {t: f for t, f in forwards.items()
                 if t not in self.resolvers and not self._fits_retiring(t, f)}
        started = self._start_many(fresh) if len(fresh) > 1 else {}
        for tenant, fwd in sorted(forwards.items()):
            try:
                current = self.resolvers.get(tenant) or self._reclaim(tenant, fwd)
                if current is None:
                    current = started.pop(tenant, None) or self._start(tenant, fwd)
                elif current.server_key != self._server_key(tenant, fwd):
                    old = current
                    current = self._start(tenant, fwd)
                    if old.alive():  # it answers for its grace period: as its successor
                        self._align_retiring(old, fwd)
                    self._retire(old, now=not old.alive())
                elif not current.alive():  # on its own ports: the sidecars point there
                    current.stop()
                    current.forward = fwd
                    current = self._restart(tenant, current)
                else:
                    if current.triggers_key != self._rpz_key(tenant, fwd):
                        self._reload_triggers(current, fwd)
                    self._reload_table(current, fwd)
                current.forward = fwd
                self._sync_reports(current)
                self.resolvers[tenant] = current
                self.errors.pop(tenant, None)
                out[tenant] = Upstream(self.advertise_host or current.paths.listen.host,
                                       current.paths.tls_port or current.paths.listen.port)
                ports[tenant] = current.paths.listen.port
            except (ResolverError, OSError, TimeoutError, ValueError) as exc:
                self.errors[tenant] = str(exc)
                log.error("tenant resolver for %s: %s", tenant, exc, extra={"tenant": tenant})
        if self.terminator is not None:
            try:
                self._sync_terminator(ports)
            except (ResolverError, OSError) as exc:
                for tenant in ports:
                    self.errors[tenant] = f"hop terminator: {exc}"
                log.error("hop terminator: %s", exc)
                return {}
            entry = Upstream(self.terminator.files.listen_host, self.hop_port)
            out = {tenant: entry for tenant in out}
        return out

    def report_to(self, sink: Sink) -> None:
        """Tell ``sink`` of every answer of the resolvers whose tenant logs queries, from
        now on (the running ones included)."""
        with self._lock:
            self.on_reply = sink
            for res in self.resolvers.values():
                if res.forward is not None:
                    self._sync_reports(res)

    def supervise(self) -> list[str]:
        """Restart dead resolvers on their own port; the tenants that were restarted."""
        with self._lock:
            return self._supervise()

    def _supervise(self) -> list[str]:
        restarted = []
        self._retire_due()
        self._resync_asked()
        if self.terminator is not None:
            try:
                self.terminator.supervise()
            except (ResolverError, OSError) as exc:
                log.error("hop terminator: %s", exc)
        for tenant, res in sorted(self.resolvers.items()):
            if res.alive() or res.forward is None:  # None: apply has not named it yet
                continue
            log.warning("tenant resolver for %s exited; restarting it", tenant,
                        extra={"tenant": tenant, "log": res.unbound.log()[-500:]})
            res.stop()
            try:
                fresh = self._restart(tenant, res)
            except (ResolverError, OSError, TimeoutError) as exc:
                self.errors[tenant] = str(exc)
                continue
            self.resolvers[tenant] = fresh
            restarted.append(tenant)
        self._release_primaries()
        return restarted

    def _restart(self, tenant: str, res: TenantResolver) -> TenantResolver:
        """``res`` again on its own ports and files; on new ones when a port was taken."""
        assert res.forward is not None
        try:
            fresh = self._launch(tenant, res.forward, res.paths, restarts=res.restarts + 1)
        except PortTaken as exc:
            log.warning("%s; restarting it on new ports", exc, extra={"tenant": tenant})
        else:
            return fresh
        fresh = self._start(tenant, res.forward)
        fresh.restarts = res.restarts + 1
        self._save(fresh)
        shutil.rmtree(res.paths.directory, ignore_errors=True)
        return fresh

    def stats(self) -> dict[str, dict[str, float]]:
        """``unbound-control stats_noreset`` of every resolver, by tenant."""
        out = {}
        with self._lock:
            current = sorted(self.resolvers.items())
        for tenant, res in current:
            text = self._control(res, "stats_noreset", check=False)
            if text is not None:
                out[tenant] = parse_stats(text)
        return out

    def describe(self) -> list[dict[str, object]]:
        """Every running resolver, for the admin API."""
        with self._lock:
            current = sorted(self.resolvers.items())
        running: list[dict[str, object]] = [
                {"tenant": t, "listen": str(r.paths.listen), "pid": r.unbound.pid,
                 "doh_proxy_pid": r.dnsdist.pid if r.dnsdist else None,
                 "server": (str(r.forward.server) if r.forward and r.forward.server
                            else None),
                 "transport": r.forward.transport.value if r.forward else None,
                 "tls_server_name": (r.forward.tls_name or None) if r.forward else None,
                 "rules": len(r.forward.triggers) if r.forward else None,
                 "restarts": r.restarts, "adopted": r.adopted,
                 "directory": r.paths.directory, "alive": r.alive()}
                for t, r in current]
        return running + [{"tenant": t, "error": e} for t, e in sorted(self.errors.items())]

    def stop_all(self, *, detach: bool | None = None) -> None:
        """What the control plane does on exit: stop every resolver, or with ``detach``
        (the default when ``persistent``) leave them serving for the next one to adopt."""
        with self._lock:
            if self.persistent if detach is None else detach:
                for res in [*self.resolvers.values(), *(r for _, r in self.retiring)]:
                    res.stop_reports()  # unbound keeps a backlog for the next reader
                log.info("tenant resolvers left running for the next control plane: %s",
                         ", ".join(sorted(self.resolvers)) or "none")
                self.resolvers.clear()
                self.retiring.clear()
                if self.terminator is not None:
                    self.terminator.stop(detach=True)
                if self.primary is not None:  # their zones stay (files; expire 2^31-1 s)
                    self.primary.close()
                    self.primary = None
                return
            if self.terminator is not None:  # before the resolvers it fronts
                self.terminator.stop()
            self._stop_all()

    def _stop_all(self) -> None:
        for res in list(self.resolvers.values()):
            res.stop()
        for _, res in self.retiring:
            res.stop()
        self.resolvers.clear()
        self.retiring.clear()
        if self.primary is not None:
            self.primary.close()
            self.primary = None
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- processes ------------------------------------------------------------
    def _start(self, tenant: str, fwd: Forwarding) -> TenantResolver:
        """A new resolver on new ports; new ports again when another process took one."""
        for attempt in range(1, self.port_attempts + 1):
            directory, paths = self._prepare(tenant, fwd)
            try:
                return self._launch(tenant, fwd, paths)
            except PortTaken as exc:
                shutil.rmtree(directory, ignore_errors=True)
                if attempt == self.port_attempts:
                    raise ResolverError(f"{exc} ({attempt} attempts on new ports)") from exc
                log.warning("%s; trying new ports", exc, extra={"tenant": tenant})
        raise ResolverError("port_attempts must be at least 1")

    def _prepare(self, tenant: str, fwd: Forwarding) -> tuple[Path, ResolverPaths]:
        """A new directory and new ports for one start of ``tenant``'s resolver; the first
        start of a tenant tries the ports its resolver had under the previous control
        plane (``_remember``), so the addresses sent to the sidecars stay the same."""
        previous = self._previous.pop(tenant, None)

        def port(old: int) -> int:
            return old if previous is not None and old else self.choose_port()

        self._generation += 1
        slug = hashlib.sha256(tenant.encode()).hexdigest()[:8]
        directory = self.workdir / f"{tenant[:40]}-{slug}-{self._generation}"
        directory.mkdir(parents=True, exist_ok=True)
        ca_file = ""
        if fwd.encrypted:
            if fwd.ca_bundle:
                ca_file = str(directory / "ca.pem")
                Path(ca_file).write_text(fwd.ca_bundle + "\n")
            else:
                ca_file = self.default_ca_bundle or SYSTEM_CA_BUNDLE
        doh_proxy = None
        if fwd.transport is Transport.HTTPS:
            if self.dnsdist_bin is None:
                raise ResolverError("DNS over HTTPS needs dnsdist (Debian: apt-get install "
                                    "dnsdist); nothing is forwarded for this tenant")
            doh_proxy = Upstream("127.0.0.1", port(
                previous.doh_proxy.port if previous and previous.doh_proxy else 0))
        paths = ResolverPaths(
            directory=str(directory),
            listen=Upstream(self._resolver_host, port(previous.listen.port if previous else 0)),
            control_socket=str(directory / "control.sock"),
            rpz_file=str(directory / "policy.rpz"), ca_file=ca_file, doh_proxy=doh_proxy,
            access=self._resolver_access,
            gate_socket=self.gate_socket if fwd.gate else "",
            gate_script=str(directory / "gate.py") if fwd.gate else "",
            tls_port=port(previous.tls_port if previous else 0) if self.hop_tls else 0,
            tls_cert=str(self.hop_tls.cert_file) if self.hop_tls else "",
            tls_key=str(self.hop_tls.key_file) if self.hop_tls else "",
            dnstap_socket=_socket_path(directory / "tap.sock"), map_aaaa=self.map_aaaa,
            primary_port=self._bind_primary(previous.primary_port if previous else 0))
        return directory, paths

    def _start_many(self, forwards: Mapping[str, Forwarding]) -> dict[str, TenantResolver]:
        """First starts of several tenants at once: every process spawned, then each one
        waited for. One after another they cost a control plane's first apply (and so its
        readiness) 0.1-0.2 s each on a loaded machine, and every DnsPolicy tenant has a
        resolver. A tenant whose start fails here is left out, for ``_start`` (new ports,
        or the error) to try again on its own."""
        spawned: list[TenantResolver] = []
        for tenant, fwd in sorted(forwards.items()):
            try:
                directory, paths = self._prepare(tenant, fwd)
            except (ResolverError, OSError, ValueError):
                continue  # ``_start`` meets it again and reports it
            try:
                spawned.append(self._spawn(tenant, fwd, paths))
            except (ResolverError, OSError, ValueError) as exc:
                shutil.rmtree(directory, ignore_errors=True)
                log.warning("tenant resolver for %s: %s; starting it again on its own",
                            tenant, exc, extra={"tenant": tenant})
        out: dict[str, TenantResolver] = {}
        for res in spawned:
            try:
                out[res.tenant] = self._await_up(res)
            except (ResolverError, OSError, TimeoutError) as exc:
                shutil.rmtree(res.paths.directory, ignore_errors=True)
                log.warning("%s; starting it again on its own", exc,
                            extra={"tenant": res.tenant})
        return out

    def _launch(self, tenant: str, fwd: Forwarding, paths: ResolverPaths, *,
                restarts: int = 0) -> TenantResolver:
        return self._await_up(self._spawn(tenant, fwd, paths, restarts=restarts))

    def _spawn(self, tenant: str, fwd: Forwarding, paths: ResolverPaths, *,
               restarts: int = 0) -> TenantResolver:
        """Write the resolver's files and start its processes (not waited for)."""
        directory = Path(paths.directory)
        Path(paths.rpz_file).write_text(rpz_zone(fwd, self._table_rpz(tenant, fwd)))
        texts = self._texts(tenant, fwd)
        for zone, text in texts.items():
            if self._primary_zone(paths, fwd, zone):
                assert self.primary is not None
                text = with_soa(text, self.primary.load(paths.primary_port, zone, text))
            Path(table_file(paths.directory, zone)).write_text(text)
        env = None
        if fwd.gate is not None:
            if not paths.gate_socket:
                raise ResolverError("a policy server needs the control plane's policy gate")
            if not Path(UNBOUND_PYTHON, "unboundmodule.py").exists():
                raise ResolverError("a policy server needs unbound's python module (Debian: "
                                    "apt-get install python3-unbound)")
            Path(paths.gate_script).write_text(
                gate_script(tenant, fwd, paths, GATE_TEMPLATE.read_text()))
            # unbound's embedded Python does not look in Debian's dist-packages by itself.
            env = {**os.environ, "PYTHONPATH": UNBOUND_PYTHON}
        conf = directory / "unbound.conf"
        conf.write_text(unbound_conf(tenant, fwd, paths))
        dnsdist = None
        if paths.doh_proxy is not None:
            assert self.dnsdist_bin is not None
            dd_conf = directory / "dnsdist.conf"
            dd_conf.write_text(dnsdist_conf(fwd, listen=paths.doh_proxy, ca_file=paths.ca_file))
            dnsdist = Process(f"dnsdist-{tenant}",
                              [*self._prefix, self.dnsdist_bin, "--supervised",
                               "--disable-syslog", "-C", str(dd_conf)],
                              directory / "dnsdist.log", new_session=self.persistent,
                              spawner=self.spawner).start()
        reports = self._reader(tenant, fwd, paths)  # listening before unbound connects
        assert self.unbound_bin is not None
        try:
            unbound = Process(f"unbound-{tenant}",
                              [*self._prefix, self.unbound_bin, "-d", "-c", str(conf)],
                              directory / "unbound.log", env=env,
                              new_session=self.persistent, spawner=self.spawner).start()
        except OSError:
            if reports is not None:
                reports.stop()
            if dnsdist is not None:
                dnsdist.stop(timeout=5)
            raise
        res = TenantResolver(tenant, fwd, paths, unbound, dnsdist, started_at=self.clock(),
                             restarts=restarts, server_key=self._server_key(tenant, fwd),
                             triggers_key=self._rpz_key(tenant, fwd), table_texts=texts,
                             table_of=fwd.table, local_data=self._made(tenant, fwd).outside,
                             reports=reports)
        return res

    def _await_up(self, res: TenantResolver) -> TenantResolver:
        """Wait until a spawned resolver answers; stopped, and PortTaken or ResolverError
        raised, when it died, timed out or shares a port."""
        tenant, paths, fwd = res.tenant, res.paths, res.forward
        assert fwd is not None
        deadline = self.clock() + self.start_timeout
        while not self._up(res):
            dead = next((p for p in (res.unbound, res.dnsdist) if p and not p.alive()), None)
            if dead is not None or self.clock() > deadline:
                res.stop()
                if dead is not None and "address already in use" in dead.run_log().lower():
                    raise PortTaken(f"tenant resolver for {tenant}: {dead.name} could not "
                                    f"bind its port: {_last_lines(dead.run_log())}")
                why = (f"{dead.name} exited: {dead.log()[-600:]}" if dead is not None else
                       f"not up after {self.start_timeout:.0f} s: {res.unbound.log()[-600:]}")
                raise ResolverError(f"tenant resolver for {tenant}: {why}")
            time.sleep(0.01)
        shared = self._shared_port(res)
        if shared:
            res.stop()
            raise PortTaken(f"tenant resolver for {tenant}: {shared}")
        self._save(res)
        self._transfer(res, [z for z in res.table_texts if self._primary_zone(paths, fwd, z)])
        log.info("tenant resolver for %s listening on %s (%s to %s)", tenant, paths.listen,
                 fwd.transport.value, fwd.server or "no server: table only",
                 extra={"tenant": tenant})
        return res

    def _up(self, res: TenantResolver) -> bool:
        """unbound answers unbound-control, and dnsdist (DoH) has bound its port."""
        proxy = res.paths.doh_proxy
        if (res.dnsdist is not None and proxy is not None
                and not holds_port(res.dnsdist.pid, proxy.port, udp=True)):
            return False
        return self._control(res, "status", check=False) is not None

    @staticmethod
    def _shared_port(res: TenantResolver) -> str:
        """Which of its ports another process holds too (a socket bound with SO_REUSEADDR
        lets a second one bind); "" when each is the resolver's alone."""
        own = [(res.unbound, res.paths.listen.port, udp) for udp in (True, False)]
        if res.paths.tls_port:
            own.append((res.unbound, res.paths.tls_port, False))
        if res.dnsdist is not None and res.paths.doh_proxy is not None:
            own += [(res.dnsdist, res.paths.doh_proxy.port, udp) for udp in (True, False)]
        for proc, port, udp in own:
            others = port_holders(port, udp=udp, besides=proc.pid)
            if others:
                return f"port {port}/{'udp' if udp else 'tcp'} is held by {', '.join(others)} too"
        return ""

    def _reader(self, tenant: str, fwd: Forwarding, paths: ResolverPaths
                ) -> ReportReader | None:
        """A started reader of the resolver's query reports when its tenant logs queries."""
        if not (fwd.log_queries and paths.dnstap_socket and self.on_reply is not None):
            return None
        try:
            return ReportReader(tenant, paths.dnstap_socket, self.on_reply,
                                since=time.time()).start()
        except OSError as exc:  # reports are lost, answers are not: the resolver still runs
            log.error("query reports of %s's resolver: cannot listen on %s: %s", tenant,
                      paths.dnstap_socket, exc, extra={"tenant": tenant})
            return None

    def _sync_reports(self, res: TenantResolver) -> None:
        """Start or stop ``res``'s reader as its tenant starts or stops logging queries."""
        assert res.forward is not None
        want = res.forward.log_queries and self.on_reply is not None
        if want and res.reports is None:
            res.reports = self._reader(res.tenant, res.forward, res.paths)
        elif not want and res.reports is not None:
            res.stop_reports()

    # -- the table zones' primary (table_updates ixfr; primary.py) ------------------
    def _bind_primary(self, port: int) -> int:
        """A port of the primary for a new resolver (``port`` first, when given); 0 without
        a primary."""
        if self.primary is None:
            return 0
        if port:
            with contextlib.suppress(OSError):
                return self.primary.bind(port)
        return self.primary.bind(0)

    @staticmethod
    def _primary_zone(paths: ResolverPaths, fwd: Forwarding, zone: str) -> bool:
        """Whether the resolver takes ``zone`` from the primary: the cluster zone and the
        reverse zones, not the alias zones (``translate/unbound.py``)."""
        if not paths.primary_port:
            return False
        return zone.endswith(".arpa.") or zone == fwd.zone.rstrip(".").lower() + "."

    def _transfer(self, res: TenantResolver, zones: list[str]) -> None:
        """Have unbound ask the primary for ``zones`` now (SOA, then IXFR from its serial),
        from the primary's triggers thread (``ZonePrimary.later``): ``apply`` does not wait
        for unbound's answer. A trigger lost (unbound down) is caught by the SOA refresh, a
        restart (files written whole) or the supervision."""
        if self.primary is None or not zones:
            return

        def send() -> None:
            for zone in zones:
                if self._control(res, f"auth_zone_transfer {zone}", check=False) is None:
                    log.info("tenant resolver for %s: no answer to auth_zone_transfer %s",
                             res.tenant, zone, extra={"tenant": res.tenant})
        self.primary.later(send)

    def _adopt_primary(self, res: TenantResolver) -> None:
        """An adopted resolver's zones name the previous control plane's primary port: bind
        it again. Its serials are not known: its first apply resyncs every zone (its
        ``table_texts`` are empty), above the serials it has (``list_auth_zones``). A port
        that cannot be bound, or a primary in one control plane and not the other, is a
        server-key change: a new resolver replaces it."""
        port = res.paths.primary_port
        if not port or self.primary is None:
            return
        try:
            self.primary.bind(port)
        except OSError as exc:
            log.warning("tenant resolver for %s: its zones' primary port %d cannot be bound "
                        "(%s): it will be replaced", res.tenant, port, exc,
                        extra={"tenant": res.tenant})
            res.server_key = ""
            return
        text = self._control(res, "list_auth_zones", check=False) or ""
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[1] == "serial" and fields[2].isdigit():
                res.adopted_serials[fields[0].lower()] = int(fields[2])

    def _resync_asked(self) -> None:
        """The zones a resolver asked from a serial the primary's history lacks: written
        whole with a new serial and reloaded (on the pool's thread)."""
        if self.primary is None:
            return
        asked = self.primary.take_resyncs()
        if not asked:
            return
        by_port = {r.paths.primary_port: r for r in
                   [*self.resolvers.values(), *(r for _, r in self.retiring)]
                   if r.paths.primary_port}
        for (port, zone), serial in sorted(asked.items()):
            res = by_port.get(port)
            text = res.table_texts.get(zone) if res is not None else None
            if res is None or text is None or not res.alive():
                continue
            log.info("tenant resolver for %s asked %s from serial %d, which the primary no "
                     "longer holds: resynced by its file", res.tenant, zone, serial,
                     extra={"tenant": res.tenant})
            try:
                self._load_zone(res, zone, text, at_least=serial + 1)
                self.table_reloads += 1
            except (ResolverError, OSError) as exc:
                log.warning("tenant resolver for %s: resync of %s failed: %s", res.tenant,
                            zone, exc, extra={"tenant": res.tenant})

    def _release_primaries(self) -> None:
        """Stop serving the ports of resolvers no longer kept (retired, or started again
        on new ports)."""
        if self.primary is None:
            return
        kept = {r.paths.primary_port for r in
                [*self.resolvers.values(), *(r for _, r in self.retiring)]}
        for port in self.primary.ports():
            if port not in kept:
                self.primary.release(port)

    def _reload_triggers(self, res: TenantResolver, fwd: Forwarding) -> None:
        tmp = Path(res.paths.rpz_file + ".new")
        tmp.write_text(rpz_zone(fwd, self._table_rpz(res.tenant, fwd)))
        tmp.replace(res.paths.rpz_file)
        self._control(res, f"auth_zone_reload {RPZ_ZONE}")
        res.forward = fwd if res.forward is None else replace(res.forward, triggers=fwd.triggers)
        res.triggers_key = self._rpz_key(res.tenant, fwd)
        self._save(res)
        self.reloads += 1

    def _reload_table(self, res: TenantResolver, fwd: Forwarding) -> None:
        """Rewrite the zone files whose text changed and reload each live (same process,
        cache kept); nothing when the table is the very tuple last written, at the same TTL
        (an empty table is always the one ``()``: its TTL alone changes the zones' heads)."""
        same_ttl = res.forward is not None and res.forward.table_ttl == fwd.table_ttl
        if res.table_of is fwd.table and same_ttl:
            return
        texts = self._texts(res.tenant, fwd)
        tables = self._tables.get(res.tenant)
        changes = (tables.changes if tables is not None and res.table_of is not None
                   and same_ttl and tables.changes_from is res.table_of else None)
        sent = []
        for zone, text in texts.items():
            if res.table_texts.get(zone) == text:
                continue
            step = changes.get(zone) if changes is not None else None
            if (step is not None and zone in res.table_texts and self.primary is not None
                    and self._primary_zone(res.paths, fwd, zone)
                    and self.primary.change(res.paths.primary_port, zone, *step) is not None):
                sent.append(zone)
                continue
            self._load_zone(res, zone, text, fwd=fwd,
                            at_least=res.adopted_serials.pop(zone, -1) + 1)
            self.table_reloads += 1
        self._transfer(res, sent)
        self.table_transfers += len(sent)
        self._reload_local_data(res, self._made(res.tenant, fwd).outside)
        res.table_texts, res.table_of = texts, fwd.table
        if res.forward is not None:
            res.forward = replace(res.forward, table=fwd.table, table_ttl=fwd.table_ttl)

    def _load_zone(self, res: TenantResolver, zone: str, text: str, *,
                   fwd: Forwarding | None = None, at_least: int = 0) -> None:
        """Replace one zone file whole (a rename) and have unbound reload it live. A zone
        its primary serves gets a new serial with no history before it (a resync: unbound
        takes the file's serial, whatever its own was), at least ``at_least``."""
        fwd = fwd or res.forward
        if (self.primary is not None and fwd is not None
                and self._primary_zone(res.paths, fwd, zone)):
            text = with_soa(text, self.primary.resync(res.paths.primary_port, zone, text,
                                                      at_least=at_least))
        path = table_file(res.paths.directory, zone)
        tmp = Path(path + ".new")
        tmp.write_text(text)
        tmp.replace(path)
        self._control(res, f"auth_zone_reload {zone}")

    def _align_retiring(self, res: TenantResolver, fwd: Forwarding) -> None:
        """A replaced resolver keeps answering the connections opened to it for its grace
        period (a pod's front keeps its hop connection): give it the new table and the new
        triggers, live, so a name revoked or denied by this change is not answered there
        meanwhile. Zones it has that the new table lacks become empty (NXDOMAIN). Its server
        and transport stay (that is what the grace period is for)."""
        try:
            texts = self._texts(res.tenant, fwd)
            for zone, old_text in res.table_texts.items():
                text = texts.get(zone) or empty_zone(zone, fwd)
                if text != old_text:
                    self._load_zone(res, zone, text, fwd=fwd)
            self._reload_local_data(res, self._made(res.tenant, fwd).outside)
            if res.triggers_key != self._rpz_key(res.tenant, fwd):
                self._reload_triggers(res, fwd)
        except (ResolverError, OSError) as exc:
            log.warning("tenant resolver for %s: the retiring one keeps its old table: %s",
                        res.tenant, exc, extra={"tenant": res.tenant})

    def _reload_local_data(self, res: TenantResolver, data: tuple[str, ...]) -> None:
        """The names outside the zone, changed live: the names whose records changed are
        removed, then their new records added (``local_datas_remove``, ``local_datas``).
        An adopted resolver's records are not known: every name is written again."""
        if res.local_data == data:
            return
        def by_name(lines: tuple[str, ...]) -> dict[str, set[str]]:
            out: dict[str, set[str]] = {}
            for line in lines:
                out.setdefault(line.split(" ", 1)[0], set()).add(line)
            return out
        old, new = by_name(res.local_data or ()), by_name(data)
        changed = sorted(n for n in set(old) | set(new)
                         if res.local_data is None or old.get(n) != new.get(n))
        if changed:
            self._control(res, "local_datas_remove", stdin="".join(f"{n}\n" for n in changed))
        lines = [line for n in changed for line in sorted(new.get(n, ()))]
        if lines:
            self._control(res, "local_datas", stdin="".join(f"{line}\n" for line in lines))
        res.local_data = data
        self.table_reloads += 1

    def _control(self, res: TenantResolver, command: str, *, check: bool = True,
                 stdin: str | None = None) -> str | None:
        if stdin is None and len(os.fsencode(res.paths.control_socket)) < SUN_PATH_MAX:
            return self._control_socket(res, command, check=check)
        # A longer path does not fit a sockaddr_un: unbound binds it cut to 107 bytes and
        # unbound-control cuts it the same way, so the program still reaches it.
        assert self.control_bin is not None
        try:
            done = subprocess.run([self.control_bin, "-c", res.conf_path, *command.split()],
                                  capture_output=True, text=True, timeout=5, check=False,
                                  input=stdin)
        except subprocess.TimeoutExpired as exc:
            if check:
                raise ResolverError(f"unbound-control {command} timed out") from exc
            return None
        if done.returncode != 0:
            if check:
                raise ResolverError(f"unbound-control {command}: "
                                    f"{(done.stderr or done.stdout).strip()}")
            return None
        return done.stdout

    @staticmethod
    def _control_socket(res: TenantResolver, command: str, *, check: bool) -> str | None:
        """``command`` over unbound's control socket, as ``unbound-control`` sends it
        (``control-use-cert: no``: plain text, "UBCT1 <command>", the answer until the
        socket closes, an error's first line starting with "error"), without starting
        that program: 0.2 ms instead of ~6 ms a call (RESULTS.md section 21)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(CONTROL_TIMEOUT)
                sock.connect(res.paths.control_socket)
                sock.sendall(f"UBCT1 {command}\n".encode())
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:  # not listening (yet), gone, or timed out
            if check:
                raise ResolverError(f"unbound-control {command}: {exc}") from exc
            return None
        text = b"".join(chunks).decode(errors="replace")
        if text.startswith("error"):
            if check:
                raise ResolverError(f"unbound-control {command}: {text.strip()}")
            return None
        return text

    def _server_key(self, tenant: str, fwd: Forwarding) -> str:
        """What needs a new process when it changes: everything but the triggers, and the
        pool's own settings the config files hold (a new control plane may differ)."""
        hop = (str(self.hop_tls.cert_file), str(self.hop_tls.key_file)) if self.hop_tls else ()
        default_ca = self.default_ca_bundle if fwd.encrypted and not fwd.ca_bundle else ""
        return digest(fwd.server, fwd.transport, fwd.tls_name, fwd.ca_bundle, fwd.doh_path,
                      fwd.zone, tuple(self._texts(tenant, fwd)), fwd.gate,
                      self.gate_socket if fwd.gate else "",
                      self._resolver_host, self._resolver_access, hop, default_ca,
                      *(("ixfr",) if self.primary is not None else ()))

    def prepare(self, forwards: Mapping[str, Forwarding]) -> None:
        """Make the files of every table that changed, by the names that changed
        (``TableTexts``; a whole table at a tenant's first one: 0.11 s at 10,000 names,
        1 s at 100,000), before ``apply`` (the hub calls both on the resolvers' thread)."""
        for tenant, fwd in forwards.items():
            with self._lock:
                self._made(tenant, fwd)

    def _made(self, tenant: str, fwd: Forwarding) -> TableOutput:
        tables = self._tables.get(tenant)
        if tables is None:
            tables = self._tables[tenant] = TableTexts(shared=self._names)
        return tables.update(fwd)

    def _texts(self, tenant: str, fwd: Forwarding) -> dict[str, str]:
        """``table_zones(fwd)`` (its keys are the zones the resolver's config names)."""
        return self._made(tenant, fwd).zones

    def _table_rpz(self, tenant: str, fwd: Forwarding) -> tuple[RpzRecord, ...]:
        """``table_rpz(fwd)``: the table's wildcards and aliases in the RPZ."""
        return self._made(tenant, fwd).rpz

    def _rpz_key(self, tenant: str, fwd: Forwarding) -> str:
        """What the RPZ file holds: the policy's triggers and the table's RPZ records."""
        return digest(fwd.triggers, self._table_rpz(tenant, fwd))

    def _save(self, res: TenantResolver) -> None:
        """The resolver's state file (``state.py``), for a later control plane."""
        fwd = res.forward
        write_state(ResolverState(
            tenant=res.tenant, generation=res.generation, server_key=res.server_key,
            triggers_key=res.triggers_key, paths=res.paths, unbound_pid=res.unbound.pid,
            unbound_argv=tuple(res.unbound.argv),
            dnsdist_pid=res.dnsdist.pid if res.dnsdist else 0,
            dnsdist_argv=tuple(res.dnsdist.argv) if res.dnsdist else (),
            restarts=res.restarts, server=str(fwd.server) if fwd and fwd.server else "",
            transport=fwd.transport.value if fwd else ""))

    # -- the previous ports (process lifetime) --------------------------------
    def _remember(self) -> None:
        """Before the first start on an explicit directory (process lifetime): the ports
        each tenant's newest resolver had under the previous control plane, whose resolvers
        died with it. A restarted control plane starts them on those ports again when they
        are free (else on new ones, ``_start``), so the listeners and hop clusters it sends
        are the ones the sidecars already have."""
        if self.owns_workdir:
            return
        newest: dict[str, ResolverState] = {}
        for directory in sorted(p for p in self.workdir.iterdir() if p.is_dir()):
            state = read_state(directory)
            if state is None:
                continue
            self._generation = max(self._generation, state.generation)  # no name reused
            if self._from_state(state).alive():  # not ours to take (a persistent one)
                continue
            if (state.tenant not in newest
                    or state.generation > newest[state.tenant].generation):
                newest[state.tenant] = state
            shutil.rmtree(directory, ignore_errors=True)  # its process died with its owner
        self._previous = {t: s.paths for t, s in newest.items()}

    # -- adoption (persistent resolvers) -------------------------------------
    def _adopt(self) -> None:
        """Take over the resolvers an earlier control plane left in ``workdir``."""
        found: dict[str, list[TenantResolver]] = {}
        for directory in sorted(p for p in self.workdir.iterdir() if p.is_dir()):
            if directory.name == TERMINATOR_DIR:  # the terminator adopts itself (sync)
                continue
            state = read_state(directory)
            if state is None:
                if any((directory / name).exists()
                       for name in ("unbound.conf", "dnsdist.conf", STATE_FILE)):
                    self._remove_orphan(directory, "it has no readable state file")
                continue
            self._generation = max(self._generation, state.generation)
            found.setdefault(state.tenant, []).append(self._from_state(state))
        for tenant, candidates in sorted(found.items()):
            *older, newest = sorted(candidates, key=lambda r: r.generation)
            for res in older:  # a replacement the earlier control plane had not retired
                self._retire(res, now=not res.alive())
            if newest.alive() and self._up(newest):
                log.info("tenant resolver for %s adopted: pid %d on %s", tenant,
                         newest.unbound.pid, newest.paths.listen, extra={"tenant": tenant})
                self._adopt_primary(newest)
            else:  # apply restarts it on its own ports, or retires it
                log.warning("tenant resolver for %s found dead in %s", tenant,
                            newest.paths.directory, extra={"tenant": tenant})
                newest.stop()
            self.resolvers[tenant] = newest

    def _from_state(self, state: ResolverState) -> TenantResolver:
        directory = Path(state.paths.directory)
        unbound = Process.adopt(f"unbound-{state.tenant}", list(state.unbound_argv),
                                directory / "unbound.log", pid=state.unbound_pid)
        dnsdist = (Process.adopt(f"dnsdist-{state.tenant}", list(state.dnsdist_argv),
                                 directory / "dnsdist.log", pid=state.dnsdist_pid)
                   if state.dnsdist_pid else None)
        return TenantResolver(state.tenant, None, state.paths, unbound, dnsdist,
                              started_at=self.clock(), restarts=state.restarts,
                              server_key=state.server_key, triggers_key=state.triggers_key,
                              adopted=True)

    @staticmethod
    def _remove_orphan(directory: Path, why: str) -> None:
        for name in ("unbound.conf", "dnsdist.conf"):
            for pid in pids_naming(str(directory / name)):
                log.warning("killing pid %d of orphaned resolver directory %s", pid, directory)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        log.warning("removing resolver directory %s: %s", directory, why)
        shutil.rmtree(directory, ignore_errors=True)

    def _retire(self, res: TenantResolver, *, now: bool = False,
                after: float | None = None) -> None:
        """Stop ``res`` now, or after ``after`` seconds (None: the grace period)."""
        if now:
            res.stop()
            shutil.rmtree(res.paths.directory, ignore_errors=True)
        else:
            wait = self.grace_seconds if after is None else after
            self.retiring.append((self.clock() + wait, res))

    def _fits_retiring(self, tenant: str, fwd: Forwarding) -> bool:
        """Whether ``_reclaim`` would take a retiring resolver back for ``tenant``."""
        key = self._server_key(tenant, fwd)
        return any(r.tenant == tenant and r.server_key == key and r.alive()
                   for _, r in self.retiring)

    def _reclaim(self, tenant: str, fwd: Forwarding) -> TenantResolver | None:
        """A retiring resolver of ``tenant`` that still fits ``fwd``, taken back (its
        tenant came back, or an adopted one was named at last): no new port."""
        key = self._server_key(tenant, fwd)
        fits = [(due, res) for due, res in self.retiring
                if res.tenant == tenant and res.server_key == key and res.alive()]
        if not fits:
            return None
        entry = max(fits, key=lambda item: item[1].generation)
        self.retiring.remove(entry)
        log.info("tenant resolver for %s taken back from retirement (pid %d on %s)", tenant,
                 entry[1].unbound.pid, entry[1].paths.listen, extra={"tenant": tenant})
        return entry[1]

    def _retire_due(self) -> None:
        now = self.clock()
        keep = []
        for due, res in self.retiring:
            if due <= now:
                res.stop()
                shutil.rmtree(res.paths.directory, ignore_errors=True)
            else:
                keep.append((due, res))
        self.retiring = keep


def _socket_path(path: Path) -> str:
    """``path`` when a unix socket may live there (107 bytes on Linux; shorter than the
    control socket's name beside it); "" otherwise (the resolver reports nothing, and the
    log says so)."""
    if len(str(path).encode()) <= 107:
        return str(path)
    log.warning("query reports off for %s: its path is too long for a unix socket", path)
    return ""


def _last_lines(text: str, count: int = 2) -> str:
    return " / ".join(line.strip() for line in text.strip().splitlines()[-count:])


def parse_stats(text: str) -> dict[str, float]:
    """``key=value`` lines of ``unbound-control stats_noreset``."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        try:
            out[key.strip()] = float(value)
        except ValueError:
            continue
    return out
