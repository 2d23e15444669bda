"""Ask the resolvers applications use what they make of a name, one uniform way.

``AppClients.lookup(client, lookups, transport=...)`` runs one client process (or one per
name where the client has no batch mode) in a private mount namespace whose
/etc/resolv.conf is a pod's (``realclients.pod_argv``: nameserver ``127.0.0.X``, the
namespace search list, ``ndots:5``; for TCP also ``use-vc``), and returns one
:class:`AppAnswer` per lookup: ok or an :class:`ErrorKind`, the addresses or the record
data (normalised text: SRV ``prio weight port target``, MX ``pref host``, TXT the joined
strings, PTR/CNAME the name; names without the trailing dot, IPs compressed, sorted).

A lookup is ``(name, type)``: ``ADDR`` is a host lookup as applications do it
(getaddrinfo AF_UNSPEC, Go's LookupHost, Java's getAllByName); ``A``/``AAAA``/``SRV``/
``TXT``/``MX``/``CNAME`` ask that type; ``PTR`` takes an IP address. What a client cannot
do is answered, not skipped: :data:`ErrorKind.UNSUPPORTED` with the reason
(:data:`CLIENTS` lists each client's types and how it uses TCP).

The clients (sources in ``e2e/harness/clients/``, built once into a cache directory keyed
by the source's hash):

- ``glibc`` / ``musl``: ``getaddrinfo.c`` (``realclients``); ``getent``: ``getent ahosts``;
- ``go``: ``appclient.go`` built with ``CGO_ENABLED=0`` (Go's pure resolver);
- ``busybox``: ``busybox nslookup [-type=T]``, its output parsed;
- ``node-lookup`` (``dns.lookup``, getaddrinfo) and ``node-cares``
  (``dns.promises.Resolver``, c-ares): ``appclient.js``;
- ``java-inet`` (``InetAddress.getAllByName``) and ``java-jndi`` (JNDI DNS):
  ``AppClient.java``, one JVM for all the names of a call, caches off;
- ``dig``: ``dig +search +notcp`` / ``+tcp``, the wire-level reference.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from e2e.harness.realclients import (
    build_clients,
    pod_argv,
    require_real_client_tools,
    run_client,
    run_getent,
    write_pod_resolv_conf,
)
from tests.tools import skip

CLIENT_SOURCES = Path(__file__).resolve().parent / "clients"
GO_SOURCE = CLIENT_SOURCES / "appclient.go"
NODE_SOURCE = CLIENT_SOURCES / "appclient.js"
JAVA_SOURCE = CLIENT_SOURCES / "AppClient.java"
ADDRESS_TYPES = ("ADDR", "A", "AAAA")


class Transport(StrEnum):
    UDP = "udp"
    TCP = "tcp"


class ErrorKind(StrEnum):
    """Why a lookup gave nothing, as far as the client tells."""

    NXDOMAIN = "nxdomain"  # the client says: no such name
    NODATA = "nodata"  # the client says: the name exists, without such records
    NOT_FOUND = "not_found"  # one "not found" for both (Go, getent, Java InetAddress)
    TEMPORARY = "temporary"  # SERVFAIL or a timeout, the client does not say which
    SERVFAIL = "servfail"
    REFUSED = "refused"
    NOTIMP = "notimp"
    TIMEOUT = "timeout"
    OTHER = "other"
    UNSUPPORTED = "unsupported"  # this client cannot ask this (type or transport)


@dataclass(frozen=True)
class Lookup:
    name: str
    rdtype: str = "ADDR"


@dataclass(frozen=True)
class AppAnswer:
    """What one client made of one lookup."""

    client: str
    name: str
    rdtype: str
    transport: Transport
    ok: bool
    error: ErrorKind | None = None
    addresses: tuple[str, ...] = ()
    records: tuple[str, ...] = ()
    detail: str = ""

    @property
    def not_found(self) -> bool:
        return self.error in (ErrorKind.NXDOMAIN, ErrorKind.NODATA, ErrorKind.NOT_FOUND)

    def line(self) -> str:
        what = (" ".join(self.addresses + self.records) if self.ok
                else f"{self.error.value if self.error else '?'} ({self.detail})")
        return f"{self.client:11} {self.transport.value} {self.rdtype:5} {self.name}: {what}"


@dataclass(frozen=True)
class ClientSpec:
    """What a client can ask, and how it uses TCP."""

    types: tuple[str, ...]
    tcp: str  # how TCP is forced, or "" when it cannot be
    udp: str  # what the client does over UDP when an answer is truncated
    note: str = ""


_CARES_NOTE = "resolve* use ares_query: no search list, names are taken as absolute"
CLIENTS: dict[str, ClientSpec] = {
    "glibc": ClientSpec(ADDRESS_TYPES, "options use-vc", "retries over TCP"),
    "getent": ClientSpec(ADDRESS_TYPES, "options use-vc", "retries over TCP",
                         "AAAA is ahostsv6, which maps IPv4 (AI_V4MAPPED)"),
    "musl": ClientSpec(ADDRESS_TYPES, "", "keeps the truncated answer (musl 1.2.3: no TCP)"),
    "go": ClientSpec((*ADDRESS_TYPES, "SRV", "TXT", "MX", "PTR", "CNAME"), "options use-vc",
                     "retries over TCP"),
    "busybox": ClientSpec((*ADDRESS_TYPES, "SRV", "TXT", "MX", "PTR", "CNAME"), "",
                          "keeps the truncated answer (nslookup has no TCP)",
                          "search list only for names without a dot; NODATA prints nothing"),
    "node-lookup": ClientSpec(ADDRESS_TYPES, "options use-vc", "retries over TCP (glibc)"),
    "node-cares": ClientSpec(("A", "AAAA", "SRV", "TXT", "MX", "PTR", "CNAME"),
                             "options use-vc (c-ares reads it)", "retries over TCP",
                             _CARES_NOTE),
    "java-inet": ClientSpec(("ADDR",), "options use-vc", "retries over TCP (glibc)"),
    "java-jndi": ClientSpec(("A", "AAAA", "SRV", "TXT", "MX", "PTR", "CNAME"), "",
                            "retries over TCP (no way to force TCP)",
                            "no search list; the first nameserver of resolv.conf"),
    "dig": ClientSpec(("A", "AAAA", "SRV", "TXT", "MX", "PTR", "CNAME"), "+tcp",
                      "retries over TCP"),
}


def require_app_client_tools() -> None:
    """Everything :class:`AppClients` runs; a missing tool skips (fails under CI)."""
    require_real_client_tools()
    hints = {"go": "apt-get install golang-go", "busybox": "apt-get install busybox",
             "node": "apt-get install nodejs", "javac": "apt-get install openjdk-17-jdk-headless",
             "java": "apt-get install openjdk-17-jdk-headless", "dig": "apt-get install dnsutils"}
    missing = [f"{tool} ({hint})" for tool, hint in hints.items() if shutil.which(tool) is None]
    if missing:
        skip("application resolver clients need " + ", ".join(missing))


def _digest(*sources: Path) -> str:
    h = hashlib.sha256()
    for source in sources:
        h.update(source.read_bytes())
    return h.hexdigest()[:16]


def _build(argv: list[str], target: Path, *, env: dict[str, str] | None = None) -> Path:
    """Run ``argv`` (which writes ``target``'s temporary twin, passed as ``{out}``) once."""
    if target.exists():
        return target
    partial = target.with_name(target.name + f".{os.getpid()}.tmp")
    result = subprocess.run([a.replace("{out}", str(partial)) for a in argv],
                            capture_output=True, text=True, timeout=300, check=False, env=env)
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}")
    partial.replace(target)  # atomic: a concurrent build of the same source is harmless
    return target


def build_go_client(cache_dir: Path) -> Path:
    """``appclient.go`` with ``CGO_ENABLED=0`` (stdlib only; GOCACHE/GOPATH are temporary)."""
    target = cache_dir / f"appclient-go-{_digest(GO_SOURCE)}"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(prefix="appclient-go-") as scratch:
        env = {**os.environ, "CGO_ENABLED": "0", "GO111MODULE": "off", "GOFLAGS": "",
               "GOCACHE": f"{scratch}/cache", "GOPATH": f"{scratch}/path"}
        return _build(["go", "build", "-o", "{out}", str(GO_SOURCE)], target, env=env)


def build_java_client(cache_dir: Path) -> Path:
    """``AppClient.java`` compiled into a class directory."""
    return _build(["javac", "-d", "{out}", str(JAVA_SOURCE)],
                  cache_dir / f"appclient-java-{_digest(JAVA_SOURCE)}")


def _ip(text: str) -> str:
    """Compressed; an IPv4-mapped IPv6 address as ``::ffff:a.b.c.d``."""
    ip = ipaddress.ip_address(text.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"::ffff:{ip.ipv4_mapped}"
    return ip.compressed


def _name(text: str) -> str:
    return text.rstrip(".").lower()


def _normal_record(rdtype: str, text: str) -> str:
    """Names lower case without the trailing dot (SRV target, MX host, PTR, CNAME)."""
    if rdtype in ("PTR", "CNAME"):
        return _name(text)
    if rdtype in ("SRV", "MX"):
        *numbers, target = text.split()
        return " ".join([*numbers, _name(target)])
    return text


_TXT_CHUNK = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')


def _txt(text: str) -> str:
    """The strings of a TXT record joined: dig's ``"a" "b"``, JNDI's ``a "b c"``
    (unquoted unless a string holds a space) -> ``ab`` / ``ab c``."""
    return "".join(quoted or bare for quoted, bare in _TXT_CHUNK.findall(text))


_GAI_ERRORS = {
    "Name or service not known": ErrorKind.NXDOMAIN,  # glibc EAI_NONAME
    "No address associated with hostname": ErrorKind.NODATA,  # glibc EAI_NODATA
    "Temporary failure in name resolution": ErrorKind.TEMPORARY,  # EAI_AGAIN
    "Name does not resolve": ErrorKind.NXDOMAIN,  # musl EAI_NONAME
    "Name has no usable address": ErrorKind.NODATA,  # musl EAI_NODATA
    "Try again": ErrorKind.TEMPORARY,  # musl EAI_AGAIN
}
_GO_CODES = {"notfound": ErrorKind.NOT_FOUND, "timeout": ErrorKind.TIMEOUT,
             "temporary": ErrorKind.TEMPORARY}
_CARES_CODES = {"ENOTFOUND": ErrorKind.NXDOMAIN, "ENODATA": ErrorKind.NODATA,
                "ESERVFAIL": ErrorKind.SERVFAIL, "EREFUSED": ErrorKind.REFUSED,
                "ENOTIMP": ErrorKind.NOTIMP, "ETIMEOUT": ErrorKind.TIMEOUT,
                "EAI_AGAIN": ErrorKind.TEMPORARY}
# getaddrinfo through libuv: ENOTFOUND is EAI_NONAME and EAI_NODATA alike.
_LOOKUP_CODES = {"ENOTFOUND": ErrorKind.NOT_FOUND, "EAI_AGAIN": ErrorKind.TEMPORARY}
_JAVA_CODES = {"unknownhost": ErrorKind.NOT_FOUND, "nxdomain": ErrorKind.NXDOMAIN,
               "nodata": ErrorKind.NODATA, "servfail": ErrorKind.SERVFAIL,
               "notimp": ErrorKind.NOTIMP}
_DIG_STATUS = {"NXDOMAIN": ErrorKind.NXDOMAIN, "SERVFAIL": ErrorKind.SERVFAIL,
               "REFUSED": ErrorKind.REFUSED, "NOTIMP": ErrorKind.NOTIMP}
_NSLOOKUP_STATUS = {"NXDOMAIN": ErrorKind.NXDOMAIN, "SERVFAIL": ErrorKind.SERVFAIL,
                    "REFUSED": ErrorKind.REFUSED, "NOTIMP": ErrorKind.NOTIMP}


@dataclass(kw_only=True)
class AppClients:
    """The built clients and a pod's two resolv.conf files (UDP, and TCP via ``use-vc``)."""

    nameserver: str
    namespace: str
    cache_dir: Path
    workdir: Path
    timeout: float = 30.0

    def __post_init__(self) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        c_clients = build_clients(self.cache_dir)
        self._binaries = {"musl": c_clients.musl, "glibc": c_clients.glibc,
                          "go": build_go_client(self.cache_dir)}
        self._java_classes = build_java_client(self.cache_dir)
        self._resolv = {
            transport: write_pod_resolv_conf(
                self.workdir / f"resolv-{transport.value}.conf", nameserver=self.nameserver,
                namespace=self.namespace,
                options=("ndots:5", "use-vc") if transport is Transport.TCP else ("ndots:5",))
            for transport in Transport}

    def resolv_conf(self, transport: Transport) -> Path:
        return self._resolv[transport]

    def lookup(self, client: str, lookups: Sequence[Lookup], *,
               transport: Transport = Transport.UDP) -> list[AppAnswer]:
        """One answer per lookup, in order; unsupported ones answered without running."""
        spec = CLIENTS[client]
        out: dict[int, AppAnswer] = {}
        runnable: list[tuple[int, Lookup]] = []
        for i, item in enumerate(lookups):
            reason = ""
            if item.rdtype not in spec.types:
                reason = f"{client} cannot ask {item.rdtype} (it asks {', '.join(spec.types)})"
            elif transport is Transport.TCP and not spec.tcp:
                reason = f"{client} cannot be made to use TCP; over UDP it {spec.udp}"
            if reason:
                out[i] = AppAnswer(client, item.name, item.rdtype, transport, False,
                                   ErrorKind.UNSUPPORTED, detail=reason)
            else:
                runnable.append((i, item))
        if runnable:
            got = self._run(client, [item for _, item in runnable], transport=transport)
            out.update({i: answer for (i, _), answer in zip(runnable, got, strict=True)})
        return [out[i] for i in range(len(lookups))]

    # -- per client -------------------------------------------------------------------

    def _run(self, client: str, lookups: list[Lookup], *, transport: Transport
             ) -> list[AppAnswer]:
        resolv = self._resolv[transport]
        if client in ("glibc", "musl"):
            return self._run_gai(client, lookups, transport=transport)
        if client == "getent":
            return self._run_getent(lookups, transport)
        if client == "busybox":
            return [self._run_busybox(item, transport) for item in lookups]
        if client == "dig":
            return [self._run_dig(item, transport) for item in lookups]
        pairs = [arg for item in lookups for arg in (item.rdtype, item.name)]
        if client == "go":
            argv = [str(self._binaries["go"]), *pairs]
            codes = _GO_CODES
        elif client.startswith("node-"):
            argv = ["node", str(NODE_SOURCE), client.removeprefix("node-"), *pairs]
            codes = _CARES_CODES if client == "node-cares" else _LOOKUP_CODES
        else:
            argv = ["java", "-Dsun.net.inetaddr.ttl=0", "-Dsun.net.inetaddr.negative.ttl=0",
                    "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp",
                    str(self._java_classes), "AppClient", client.removeprefix("java-"),
                    *pairs]
            codes = _JAVA_CODES
        result = self._in_pod(resolv, argv)
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        if [(d["type"], d["name"]) for d in lines] != [(i.rdtype, i.name) for i in lookups]:
            raise RuntimeError(f"{client}: expected {lookups}, got:\n{result.stdout}"
                               f"\n{result.stderr}")
        return [self._from_json(client, transport, d, codes=codes) for d in lines]

    def _in_pod(self, resolv: Path, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(pod_argv(resolv, argv), capture_output=True, text=True,
                                timeout=self.timeout, check=False)
        if result.returncode in (97, 98):
            raise RuntimeError(f"could not set up the pod's mount namespace: {result.stderr}")
        return result

    @staticmethod
    def _from_json(client: str, transport: Transport, d: dict[str, object], *,
                   codes: dict[str, ErrorKind]) -> AppAnswer:
        rdtype, name = str(d["type"]), str(d["name"])
        if d["ok"]:
            addresses = d.get("addresses") or []
            records = d.get("records") or []
            assert isinstance(addresses, list) and isinstance(records, list)
            return AppAnswer(client, name, rdtype, transport, True,
                             addresses=tuple(sorted(_ip(str(a)) for a in addresses)),
                             records=tuple(sorted(
                                 _txt(str(r)) if client == "java-jndi" and rdtype == "TXT"
                                 else _normal_record(rdtype, str(r)) for r in records)))
        code = str(d.get("code", ""))
        return AppAnswer(client, name, rdtype, transport, False,
                         codes.get(code, ErrorKind.OTHER), detail=f"{code}: {d.get('detail')}")

    def _run_gai(self, client: str, lookups: list[Lookup], *, transport: Transport
                 ) -> list[AppAnswer]:
        out = []
        for rdtype in ADDRESS_TYPES:  # one process per family
            names = [i.name for i in lookups if i.rdtype == rdtype]
            if names:
                family = {"ADDR": None, "A": 4, "AAAA": 6}[rdtype]
                got = run_client(self._binaries[client], self._resolv[transport], names,
                                 family=family, timeout=self.timeout)
                out += [(rdtype, r) for r in got]
        by_key = {(rdtype, r.name): r for rdtype, r in out}
        answers = []
        for item in lookups:
            r = by_key[(item.rdtype, item.name)]
            answers.append(
                AppAnswer(client, item.name, item.rdtype, transport, True,
                          addresses=tuple(sorted(_ip(a) for a in r.addresses)))
                if r.ok else
                AppAnswer(client, item.name, item.rdtype, transport, False,
                          _GAI_ERRORS.get(r.error, ErrorKind.OTHER), detail=r.error))
        return answers

    def _run_getent(self, lookups: list[Lookup], transport: Transport) -> list[AppAnswer]:
        answers = []
        for item in lookups:
            family = {"ADDR": None, "A": 4, "AAAA": 6}[item.rdtype]
            (r,) = run_getent(self._resolv[transport], [item.name], family=family,
                              timeout=self.timeout)
            answers.append(
                AppAnswer("getent", item.name, item.rdtype, transport, True,
                          addresses=tuple(sorted(_ip(a) for a in r.addresses)))
                if r.ok else
                AppAnswer("getent", item.name, item.rdtype, transport, False,
                          ErrorKind.NOT_FOUND if r.error == "getent exit 2" else ErrorKind.OTHER,
                          detail=r.error))
        return answers

    def _run_busybox(self, item: Lookup, transport: Transport) -> AppAnswer:
        """``busybox nslookup``: PTR by giving the IP itself, ADDR without ``-type``."""
        argv = ["busybox", "nslookup"]
        if item.rdtype not in ("ADDR", "PTR"):
            argv.append(f"-type={item.rdtype}")
        result = self._in_pod(self._resolv[transport], [*argv, item.name])
        addresses: list[str] = []
        records: list[str] = []
        failures: list[str] = []
        no_answer = False
        server_address = False  # the "Address:" line after "Server:" is the server's
        for raw in result.stdout.splitlines():
            line = raw.strip()
            if line.startswith("Server:"):
                server_address = True
            elif line.startswith("Address:") and server_address:
                server_address = False
            elif line.startswith("Address:"):
                addresses.append(_ip(line.split(None, 1)[1]))
            elif "\tservice = " in raw or "\tmail exchanger = " in raw or "\tname = " in raw \
                    or "\tcanonical name = " in raw:
                records.append(_normal_record(item.rdtype, raw.split(" = ", 1)[1]))
            elif "\ttext = " in raw:
                records.append(_txt(raw.split(" = ", 1)[1]))
            elif line.startswith("** server can't find"):
                failures.append(line.rsplit(": ", 1)[1])
            elif line.startswith("*** Can't find") and line.endswith("No answer"):
                no_answer = True
        if item.rdtype == "A":
            addresses = [a for a in addresses if ":" not in a]
        elif item.rdtype == "AAAA":
            addresses = [a for a in addresses if ":" in a]
        if addresses or records:
            return AppAnswer("busybox", item.name, item.rdtype, transport, True,
                             addresses=tuple(sorted(addresses)), records=tuple(sorted(records)))
        detail = f"exit {result.returncode}: {'; '.join(failures) or 'no records printed'}"
        if failures:
            kind = _NSLOOKUP_STATUS.get(failures[-1], ErrorKind.OTHER)
        else:  # NODATA: nslookup prints nothing (or "No answer") and exits 0
            kind = ErrorKind.NODATA if no_answer or result.returncode == 0 else ErrorKind.OTHER
        return AppAnswer("busybox", item.name, item.rdtype, transport, False, kind,
                         detail=detail)

    def _run_dig(self, item: Lookup, transport: Transport) -> AppAnswer:
        """``dig +search`` with the pod's resolv.conf; over UDP it retries TC over TCP."""
        flag = "+tcp" if transport is Transport.TCP else "+notcp"
        query = (["-x", item.name] if item.rdtype == "PTR" else [item.name, item.rdtype])
        result = self._in_pod(self._resolv[transport],
                              ["dig", "+search", flag, "+noall", "+comments", "+answer",
                               "+tries=2", "+time=2", *query])
        status = ""
        answer: list[list[str]] = []
        for line in result.stdout.splitlines():
            if "->>HEADER<<-" in line:
                status = line.split("status: ", 1)[1].split(",", 1)[0]
                answer = []
            elif line.strip() and not line.startswith(";"):
                answer.append(line.split(None, 4))
        wanted = [parts[4] for parts in answer if len(parts) == 5 and parts[3] == item.rdtype]
        if status == "NOERROR" and wanted:
            if item.rdtype in ("A", "AAAA"):
                return AppAnswer("dig", item.name, item.rdtype, transport, True,
                                 addresses=tuple(sorted(_ip(a) for a in wanted)))
            records = [_txt(r) if item.rdtype == "TXT" else _normal_record(item.rdtype, r)
                       for r in wanted]
            return AppAnswer("dig", item.name, item.rdtype, transport, True,
                             records=tuple(sorted(records)))
        kind = (ErrorKind.NODATA if status == "NOERROR"
                else _DIG_STATUS.get(status, ErrorKind.TIMEOUT if not status
                                     else ErrorKind.OTHER))
        return AppAnswer("dig", item.name, item.rdtype, transport, False, kind,
                         detail=f"status {status or 'none'} (exit {result.returncode})")


__all__ = ["CLIENTS", "AppAnswer", "AppClients", "ClientSpec", "ErrorKind", "Lookup",
           "Transport", "build_go_client", "build_java_client", "require_app_client_tools"]
