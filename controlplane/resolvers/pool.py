"""The tenant resolvers: one unbound per forwarding tenant, started and kept in line.

The boundary half of ``translate/unbound.py``: it writes the config files,
starts the processes, applies changes and reads their statistics. The hub
calls ``apply`` with every tenant's ``Forwarding`` after each rebuild and puts
the returned addresses into the views, so Envoy only ever forwards to a
resolver that is up.

Changes, cheapest first (measured in docs/tenant-resolver.md):

- only the policy's triggers changed: the RPZ file is rewritten and
  ``unbound-control auth_zone_reload`` applies it live; the cache stays, and a
  newly denied name is denied at once (RPZ applies before the cache);
- the server, transport or CA changed: make-before-break: a new resolver on a
  new port, Envoy moves to it with its next listener update (lossless, facts
  10), and the old one stops after ``grace_seconds``; the old server's cache
  is not worth keeping;
- a resolver that dies is restarted on the same port with the same files.

Ports: a resolver's ports (unbound's, its TLS port, the dnsdist DoH proxy's) are
chosen free, but another process may bind one before the child does. A child that
exits with "address already in use", or comes up on a port some other process
holds too, is stopped and the resolver starts again on new ports, up to
``port_attempts`` times; a restart that finds its old port taken moves to new ports
too (the hub then points Envoy there).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from controlplane.core.errors import PortTaken, ResolverError
from controlplane.dns.views import Forwarding, ResolverHop, Transport, Upstream
from controlplane.identity.certs import ServerTls
from controlplane.runtime.process import Process, find_tool, free_port, holds_port, port_holders
from controlplane.translate.unbound import (
    RPZ_ZONE,
    ResolverPaths,
    dnsdist_conf,
    gate_script,
    rpz_zone,
    unbound_conf,
)

log = logging.getLogger("controlplane.resolvers.pool")

SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
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

    def apply(self, forwards: Mapping[str, Forwarding]) -> dict[str, Upstream]: ...


@dataclass
class TenantResolver:
    tenant: str
    forward: Forwarding
    paths: ResolverPaths
    unbound: Process
    dnsdist: Process | None = None
    started_at: float = 0.0
    restarts: int = 0

    @property
    def conf_path(self) -> str:
        return str(Path(self.paths.directory) / "unbound.conf")

    def alive(self) -> bool:
        return self.unbound.alive() and (self.dnsdist is None or self.dnsdist.alive())

    def stop(self) -> None:
        for proc in (self.unbound, self.dnsdist):
            if proc is not None:
                proc.stop(timeout=5)


def _server_key(fwd: Forwarding) -> tuple[object, ...]:
    """What needs a new process when it changes (everything but the triggers)."""
    return (fwd.server, fwd.transport, fwd.tls_name, fwd.ca_bundle, fwd.doh_path, fwd.zone,
            fwd.gate)


@dataclass
class ResolverPool:
    """Local tenant resolvers: unbound processes on loopback, one per tenant."""

    workdir: Path
    default_ca_bundle: str = ""  # for TLS/HTTPS when the policy names none
    listen_host: str = "127.0.0.1"
    advertise_host: str = ""  # the address sidecars use to reach them; "" for listen_host
    access: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    hop_tls: ServerTls | None = None  # the resolvers serve DoT to the sidecars with it
    gate_socket: str = ""  # the control plane's policy gate (policy_client.serve_gate)
    owns_workdir: bool = False  # remove it on stop_all (a temporary directory)
    grace_seconds: float = 10.0
    start_timeout: float = 10.0
    clock: Callable[[], float] = time.monotonic
    choose_port: Callable[[], int] = free_port  # a port free now; it may be taken by bind time
    port_attempts: int = 5  # starts on new ports when a chosen one was taken
    resolvers: dict[str, TenantResolver] = field(default_factory=dict)
    retiring: list[tuple[float, TenantResolver]] = field(default_factory=list)
    reloads: int = 0  # live trigger reloads (auth_zone_reload)
    errors: dict[str, str] = field(default_factory=dict)  # tenant -> why it has no resolver
    _generation: int = 0
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __post_init__(self) -> None:
        self.unbound_bin = find_tool("unbound")
        self.control_bin = find_tool("unbound-control")
        self.dnsdist_bin = find_tool("dnsdist")
        # The resolvers die with the control plane, even when it is SIGKILLed. The death
        # signal follows the thread that started them: start them on the event loop's thread.
        setpriv = find_tool("setpriv")
        self._prefix = [setpriv, "--pdeathsig", "KILL"] if setpriv else []
        if self.unbound_bin is None or self.control_bin is None:
            raise ResolverError("unbound is not installed (Debian: apt-get install unbound); "
                                "tenant resolvers need it, or run with --tenant-resolvers none")
        self.workdir.mkdir(parents=True, exist_ok=True)

    @property
    def hop(self) -> ResolverHop | None:
        if self.hop_tls is None:
            return None
        return ResolverHop(server_name=self.hop_tls.server_name, ca_pem=self.hop_tls.ca_pem)

    # -- what the hub calls ---------------------------------------------------
    def apply(self, forwards: Mapping[str, Forwarding]) -> dict[str, Upstream]:
        """Make the running resolvers match ``forwards``; their addresses by tenant."""
        with self._lock:
            return self._apply(forwards)

    def _apply(self, forwards: Mapping[str, Forwarding]) -> dict[str, Upstream]:
        self._retire_due()
        for tenant in sorted(set(self.resolvers) - set(forwards)):
            self._retire(self.resolvers.pop(tenant))
            log.info("tenant resolver for %s retired: the tenant no longer forwards", tenant,
                     extra={"tenant": tenant})
        out: dict[str, Upstream] = {}
        for tenant, fwd in sorted(forwards.items()):
            try:
                current = self.resolvers.get(tenant)
                if current is None or not current.alive():
                    if current is not None:
                        self._retire(current, now=True)
                    current = self._start(tenant, fwd)
                elif _server_key(current.forward) != _server_key(fwd):
                    old = current
                    current = self._start(tenant, fwd)
                    self._retire(old)
                elif current.forward.triggers != fwd.triggers:
                    self._reload_triggers(current, fwd)
                self.resolvers[tenant] = current
                self.errors.pop(tenant, None)
                out[tenant] = Upstream(self.advertise_host or current.paths.listen.host,
                                       current.paths.tls_port or current.paths.listen.port)
            except (ResolverError, OSError, TimeoutError, ValueError) as exc:
                self.errors[tenant] = str(exc)
                log.error("tenant resolver for %s: %s", tenant, exc, extra={"tenant": tenant})
        return out

    def supervise(self) -> list[str]:
        """Restart dead resolvers on their own port; the tenants that were restarted."""
        with self._lock:
            return self._supervise()

    def _supervise(self) -> list[str]:
        restarted = []
        self._retire_due()
        for tenant, res in sorted(self.resolvers.items()):
            if res.alive():
                continue
            log.warning("tenant resolver for %s exited; restarting it", tenant,
                        extra={"tenant": tenant, "log": res.unbound.log()[-500:]})
            res.stop()
            try:
                fresh = self._restart(tenant, res)
            except (ResolverError, OSError, TimeoutError) as exc:
                self.errors[tenant] = str(exc)
                continue
            fresh.restarts = res.restarts + 1
            self.resolvers[tenant] = fresh
            restarted.append(tenant)
        return restarted

    def _restart(self, tenant: str, res: TenantResolver) -> TenantResolver:
        """``res`` again on its own ports and files; on new ones when a port was taken."""
        try:
            return self._launch(tenant, res.forward, res.paths)
        except PortTaken as exc:
            log.warning("%s; restarting it on new ports", exc, extra={"tenant": tenant})
        fresh = self._start(tenant, res.forward)
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
                 "server": str(r.forward.server), "transport": r.forward.transport.value,
                 "tls_server_name": r.forward.tls_name or None,
                 "rules": len(r.forward.triggers), "restarts": r.restarts,
                 "directory": r.paths.directory, "alive": r.alive()}
                for t, r in current]
        return running + [{"tenant": t, "error": e} for t, e in sorted(self.errors.items())]

    def stop_all(self) -> None:
        with self._lock:
            self._stop_all()

    def _stop_all(self) -> None:
        for res in list(self.resolvers.values()):
            res.stop()
        for _, res in self.retiring:
            res.stop()
        self.resolvers.clear()
        self.retiring.clear()
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
        """A new directory and new ports for one start of ``tenant``'s resolver."""
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
            doh_proxy = Upstream("127.0.0.1", self.choose_port())
        paths = ResolverPaths(
            directory=str(directory), listen=Upstream(self.listen_host, self.choose_port()),
            control_socket=str(directory / "control.sock"),
            rpz_file=str(directory / "policy.rpz"), ca_file=ca_file, doh_proxy=doh_proxy,
            access=self.access,
            gate_socket=self.gate_socket if fwd.gate else "",
            gate_script=str(directory / "gate.py") if fwd.gate else "",
            tls_port=self.choose_port() if self.hop_tls else 0,
            tls_cert=str(self.hop_tls.cert_file) if self.hop_tls else "",
            tls_key=str(self.hop_tls.key_file) if self.hop_tls else "")
        return directory, paths

    def _launch(self, tenant: str, fwd: Forwarding, paths: ResolverPaths) -> TenantResolver:
        directory = Path(paths.directory)
        Path(paths.rpz_file).write_text(rpz_zone(fwd))
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
                              directory / "dnsdist.log").start()
        assert self.unbound_bin is not None
        unbound = Process(f"unbound-{tenant}",
                          [*self._prefix, self.unbound_bin, "-d", "-c", str(conf)],
                          directory / "unbound.log", env=env).start()
        res = TenantResolver(tenant, fwd, paths, unbound, dnsdist, started_at=self.clock())

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
        log.info("tenant resolver for %s listening on %s (%s to %s)", tenant, paths.listen,
                 fwd.transport.value, fwd.server, extra={"tenant": tenant})
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

    def _reload_triggers(self, res: TenantResolver, fwd: Forwarding) -> None:
        tmp = Path(res.paths.rpz_file + ".new")
        tmp.write_text(rpz_zone(fwd))
        tmp.replace(res.paths.rpz_file)
        self._control(res, f"auth_zone_reload {RPZ_ZONE}")
        res.forward = replace(res.forward, triggers=fwd.triggers)
        self.reloads += 1

    def _control(self, res: TenantResolver, command: str, *, check: bool = True) -> str | None:
        assert self.control_bin is not None
        try:
            done = subprocess.run([self.control_bin, "-c", res.conf_path, *command.split()],
                                  capture_output=True, text=True, timeout=5, check=False)
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

    def _retire(self, res: TenantResolver, *, now: bool = False) -> None:
        if now:
            res.stop()
        else:
            self.retiring.append((self.clock() + self.grace_seconds, res))

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
