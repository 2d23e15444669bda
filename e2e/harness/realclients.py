"""Resolve names with the resolvers applications use, not with ``dig``.

``dig`` shows what the DNS server answers; an application sees what its C
library makes of that answer, after the search list, ``ndots`` and the A/AAAA
pair. musl (Alpine, busybox) and glibc differ exactly where Envoy's DNS filter
is unusual (facts 6 and 20 in ``envoy-dns-filter-facts.md``), so the tests
here resolve with both:

- ``e2e/harness/clients/getaddrinfo.c`` built with ``musl-gcc -static`` and with
  ``gcc`` (glibc, through ``/etc/nsswitch.conf`` ``hosts: files dns``);
- ``getent ahosts`` as a second glibc path.

Each runs in a private mount namespace whose ``/etc/resolv.conf`` is a pod's
(``unshare -m`` + ``mount --bind``), so the machine's resolver is untouched.
resolv.conf has no port: the DNS server under test must listen on port 53 of
a loopback address of its own (``reserve_loopback_dns_address``).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import socket
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from controlplane._kit.localrun import Dnsmasq, Process, find_tool, wait_for
from tests.tools import skip

SOURCE = Path(__file__).resolve().parent / "clients" / "getaddrinfo.c"
NSCD_SOCKET = "/var/run/nscd/socket"
DEFAULT_SEARCH_ZONE = "cluster.local"


@dataclass(frozen=True)
class Resolution:
    """What one resolver made of one name."""

    name: str
    ok: bool
    addresses: tuple[str, ...] = ()
    error: str = ""

    @property
    def ipv4(self) -> tuple[str, ...]:
        return tuple(a for a in self.addresses if ":" not in a)

    @property
    def ipv6(self) -> tuple[str, ...]:
        return tuple(a for a in self.addresses if ":" in a)

    def line(self) -> str:
        """The client's own output format: ``NAME ok ADDR...`` or ``NAME fail ERROR``."""
        if self.ok:
            return " ".join([self.name, "ok", *self.addresses])
        return f"{self.name} fail {self.error}"


@dataclass(frozen=True)
class Clients:
    """The two builds of ``getaddrinfo.c``."""

    musl: Path
    glibc: Path

    def items(self) -> list[tuple[str, Path]]:
        return [("musl", self.musl), ("glibc", self.glibc)]


def require_real_client_tools() -> None:
    """musl-gcc, gcc, unshare, mount, getent and root (for the mount namespace and port 53)."""
    hints = {"musl-gcc": "apt-get install musl-tools", "gcc": "apt-get install gcc",
             "unshare": "apt-get install util-linux", "mount": "apt-get install mount",
             "getent": "apt-get install libc-bin"}
    missing = [f"{tool} ({hint})" for tool, hint in hints.items() if shutil.which(tool) is None]
    if missing:
        skip("real resolver clients need " + ", ".join(missing))
    if os.geteuid() != 0:
        skip("real resolver clients need root: a private mount namespace for "
                 "/etc/resolv.conf and a DNS server on port 53")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           capture_output=True, text=True, timeout=10, check=False)
    if probe.returncode != 0:
        skip(f"unshare --mount does not work here: {probe.stderr.strip()}")
    if not Path("/etc/resolv.conf").exists():
        skip("/etc/resolv.conf does not exist, so there is nothing to bind-mount over")


def _digest(source: Path) -> str:
    return hashlib.sha256(source.read_bytes()).hexdigest()[:16]


def _compile(argv: list[str], target: Path) -> Path:
    if target.exists():
        return target
    partial = target.with_name(target.name + f".{os.getpid()}.tmp")
    result = subprocess.run([*argv, "-o", str(partial)], capture_output=True, text=True,
                            timeout=120, check=False)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stderr}")
    partial.replace(target)  # atomic: a concurrent build of the same source is harmless
    return target


def build_clients(cache_dir: Path, source: Path = SOURCE) -> Clients:
    """Build the musl (static) and glibc clients into ``cache_dir``.

    Binaries are named after the source's hash, so they are rebuilt only when
    ``getaddrinfo.c`` changes.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = _digest(source)
    musl = _compile(["musl-gcc", "-static", "-O2", str(source)],
                    cache_dir / f"getaddrinfo-musl-{digest}")
    glibc = _compile(["gcc", "-O2", str(source)], cache_dir / f"getaddrinfo-glibc-{digest}")
    return Clients(musl=musl, glibc=glibc)


def render_resolv_conf(*, nameserver: str, namespace: str, zone: str = DEFAULT_SEARCH_ZONE,
                       options: Sequence[str] = ("ndots:5",),
                       search: Sequence[str] | None = None) -> str:
    """A pod's resolv.conf, as the kubelet writes it for ``dnsPolicy: ClusterFirst``."""
    domains = list(search) if search is not None else [
        f"{namespace}.svc.{zone}", f"svc.{zone}", zone]
    lines = [f"nameserver {nameserver}"]
    if domains:
        lines.append("search " + " ".join(domains))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def write_pod_resolv_conf(path: Path, *, nameserver: str, namespace: str,
                          zone: str = DEFAULT_SEARCH_ZONE,
                          options: Sequence[str] = ("ndots:5",),
                          search: Sequence[str] | None = None) -> Path:
    """Write ``render_resolv_conf(...)`` to ``path`` and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_resolv_conf(nameserver=nameserver, namespace=namespace, zone=zone,
                                       options=options, search=search))
    return path


@dataclass
class LoopbackDnsAddress:
    """A reserved ``127.0.0.X:port``; hold it until the DNS server under test is stopped.

    The reservation is a bound (not listening) TCP socket: Envoy's DNS
    listener is UDP only, and another test session probing the same address
    fails its TCP bind and moves on, instead of sharing the UDP port with
    SO_REUSEPORT (which Envoy sets) and splitting the queries.
    """

    host: str
    port: int
    _guard: socket.socket | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        if self._guard is not None:
            self._guard.close()
            self._guard = None

    def __enter__(self) -> LoopbackDnsAddress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reserve_loopback_dns_address(*, port: int = 53, first: int = 2, last: int = 254,
                                 rng: random.Random | None = None) -> LoopbackDnsAddress:
    """An address ``127.0.0.X`` (``first <= X <= last``) whose ``port`` is free for TCP and UDP.

    Linux answers on all of 127/8 without configuration; binding port 53 needs
    root. Addresses are tried in random order so parallel sessions rarely meet.
    """
    candidates = list(range(first, last + 1))
    (rng or random.Random()).shuffle(candidates)
    errors: list[str] = []
    for x in candidates:
        host = f"127.0.0.{x}"
        guard = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            guard.bind((host, port))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind((host, port))
        except OSError as exc:
            guard.close()
            if len(errors) < 3:
                errors.append(f"{host}:{port}: {exc}")
            continue
        return LoopbackDnsAddress(host, port, guard)
    raise RuntimeError(f"no free 127.0.0.X:{port} for X in {first}..{last}: {errors}")


def pod_argv(resolv_conf: Path, argv: Sequence[str]) -> list[str]:
    """``argv`` run in a private mount namespace whose /etc/resolv.conf is ``resolv_conf``.

    /etc/hosts and /etc/nsswitch.conf stay the machine's (``hosts: files dns``
    for glibc). If nscd runs, its socket is hidden so glibc asks DNS itself.
    """
    script = ('mount --bind "$0" /etc/resolv.conf || exit 97; '
              f'if [ -S {NSCD_SOCKET} ]; then mount --bind /dev/null {NSCD_SOCKET} || exit 98; fi; '
              'exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
            str(resolv_conf), *argv]


def _run_in_pod(resolv_conf: Path, argv: Sequence[str], timeout: float
                ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(pod_argv(resolv_conf, argv), capture_output=True, text=True,
                            timeout=timeout, check=False)
    if result.returncode in (97, 98):
        raise RuntimeError(f"could not set up the pod's mount namespace: {result.stderr}")
    return result


def parse_client_output(text: str) -> list[Resolution]:
    """Parse ``NAME ok ADDR...`` / ``NAME fail ERROR`` lines."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        name, _, rest = line.partition(" ")
        status, _, detail = rest.partition(" ")
        if status == "ok":
            out.append(Resolution(name, True, tuple(detail.split())))
        elif status == "fail":
            out.append(Resolution(name, False, (), detail.strip()))
        else:
            raise ValueError(f"unexpected client output line: {line!r}")
    return out


def _family_flag(family: int | None) -> list[str]:
    if family in (None, 0):
        return []
    if family not in (4, 6):
        raise ValueError(f"family must be None, 4 or 6, not {family!r}")
    return [f"-{family}"]


def run_client(client: Path, resolv_conf: Path, names: Iterable[str], *,
               family: int | None = None, timeout: float = 30.0) -> list[Resolution]:
    """Resolve ``names`` with a ``getaddrinfo`` build inside a pod-like namespace.

    ``family``: None for AF_UNSPEC, 4 for AF_INET, 6 for AF_INET6.
    """
    names = list(names)
    result = _run_in_pod(resolv_conf, [str(client), *_family_flag(family), "--", *names],
                         timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{client.name} exited {result.returncode}: {result.stderr}")
    parsed = parse_client_output(result.stdout)
    if [r.name for r in parsed] != names:
        raise RuntimeError(f"{client.name}: expected lines for {names}, got:\n{result.stdout}")
    return parsed


_GETENT_DATABASES = {None: "ahosts", 0: "ahosts", 4: "ahostsv4", 6: "ahostsv6"}
_GETENT_MARK = "=== getent "


def run_getent(resolv_conf: Path, names: Iterable[str], *, family: int | None = None,
               timeout: float = 30.0) -> list[Resolution]:
    """Resolve ``names`` with ``getent ahosts`` (glibc's getaddrinfo through NSS).

    getent prints no error text, only an exit status (2: not found), so a
    failure's ``error`` is ``getent exit N``.
    """
    names = list(names)
    if family not in _GETENT_DATABASES:
        raise ValueError(f"family must be None, 4 or 6, not {family!r}")
    database = _GETENT_DATABASES[family]
    script = (f'for n; do echo "{_GETENT_MARK}$n"; getent {database} "$n"; '
              f'echo "{_GETENT_MARK}exit $?"; done')
    result = _run_in_pod(resolv_conf, ["sh", "-c", script, "getent-loop", *names], timeout)
    out: list[Resolution] = []
    current: str | None = None
    addresses: list[str] = []
    for line in result.stdout.splitlines():
        if line.startswith(_GETENT_MARK):
            marker = line[len(_GETENT_MARK):]
            if current is None:
                current, addresses = marker, []
                continue
            code = int(marker.split()[1])
            unique = tuple(sorted(set(addresses)))
            out.append(Resolution(current, True, unique) if code == 0 and unique
                       else Resolution(current, False, (), f"getent exit {code}"))
            current = None
        elif current is not None and line.strip():
            addresses.append(line.split()[0])
    if [r.name for r in out] != names:
        raise RuntimeError(f"getent: expected results for {names}, got:\n{result.stdout}"
                           f"\n{result.stderr}")
    return out


def resolve_all(clients: Clients, resolv_conf: Path, names: Iterable[str], *,
                family: int | None = None, timeout: float = 30.0
                ) -> dict[str, dict[str, Resolution]]:
    """``{resolver: {name: Resolution}}`` for musl, glibc and getent."""
    names = list(names)
    out: dict[str, dict[str, Resolution]] = {}
    for label, binary in clients.items():
        out[label] = {r.name: r for r in run_client(binary, resolv_conf, names, family=family,
                                                    timeout=timeout)}
    out["getent"] = {r.name: r for r in run_getent(resolv_conf, names, family=family,
                                                   timeout=timeout)}
    return out


@dataclass
class AuthoritativeDnsmasq(Dnsmasq):
    """A dnsmasq that answers like a real server for its names, and only for them.

    ``localrun.Dnsmasq`` (``--address``, no upstream) answers REFUSED to every
    other name *and* to AAAA of its own IPv4-only names; c-ares in Envoy
    retries a REFUSED answer (4 queries per question), so that upstream
    neither shows NODATA handling nor realistic query counts. Here
    ``--host-record`` gives NODATA for the family a name lacks and
    ``--local=/#/`` gives NXDOMAIN for every unknown name.
    ``records`` maps a name to one address or a comma-separated list; answers
    carry ``ttl`` seconds (``localrun.Dnsmasq``'s are 0, so nothing caches them).
    """

    ttl: int = 30

    def start(self, timeout: float = 10.0) -> AuthoritativeDnsmasq:
        dnsmasq = find_tool("dnsmasq")
        if dnsmasq is None:
            raise FileNotFoundError("dnsmasq not found (apt-get install dnsmasq)")
        argv = [dnsmasq, "--no-daemon", "--port", str(self.port), "--listen-address=127.0.0.1",
                "--bind-interfaces", "--no-resolv", "--no-hosts", "--log-queries",
                f"--log-facility={self.query_log}", "--pid-file=", "--user=root",
                "--local=/#/", f"--local-ttl={self.ttl}"]
        argv += [f"--host-record={name},{ips}" for name, ips in sorted(self.records.items())]
        self.process = Process(f"dnsmasq-{self.port}", argv,
                               self.workdir / f"dnsmasq-{self.port}.log").start()
        wait_for(lambda: self.query_log.exists() and "started" in self.query_log.read_text(),
                 timeout=timeout, what="dnsmasq start")
        return self

    def typed_queries(self) -> list[tuple[str, str]]:
        """``(type, name)`` of every query dnsmasq was asked, in order."""
        if not self.query_log.exists():
            return []
        out = []
        for line in self.query_log.read_text(errors="replace").splitlines():
            if "query[" in line:
                qtype = line.split("query[", 1)[1].split("]", 1)[0]
                out.append((qtype, line.split("] ", 1)[1].split(" from ")[0]))
        return out


__all__ = ["AuthoritativeDnsmasq", "Clients", "LoopbackDnsAddress", "Resolution", "SOURCE", "build_clients",
           "parse_client_output", "pod_argv", "render_resolv_conf",
           "require_real_client_tools", "reserve_loopback_dns_address", "resolve_all",
           "run_client", "run_getent", "write_pod_resolv_conf"]
