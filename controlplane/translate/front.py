"""TenantView -> the DNS front of a pod (kresd): which (name, type) pairs go to Envoy, and
the front's configuration text. Pure (``docs/dns-front.md``).

The front routes a query to Envoy's DNS listener only when Envoy answers that exact
(name, type) pair right: an A, AAAA or SRV name of the table with between 1 and
``max_answers`` records of that type. Everything else goes to the tenant resolver, which
holds the whole table and answers like any DNS server. So these stay out of the set:

- AAAA of an IPv4-only name (the table may hold IPv4-mapped stand-ins: ``record.mapped``);
  the resolver answers NOERROR with no records.
- a family the record builder cut at its answer cap (``record.truncated``): the
  resolver sets TC over UDP and answers in full over TCP. The cap is not kept on the
  record, so a family is taken as cut when the record lost addresses and that family is
  the larger one (a cut family holds exactly the cap; ties leave both out).
- names answered from a cluster (ExternalName, DNS ServiceEntries): the count of
  addresses is the upstream's, not the table's; the resolver follows the CNAME.
- wildcards (the front matches exact names) and names that are not lower case (Envoy
  matches case-sensitively, fact 8, and the front asks in lower case).

The set travels to the pod as the body of an HTTP response with an ETag
(``front_routes``); ``set_body`` and ``set_etag`` make both deterministic.
"""

from __future__ import annotations

import hashlib
from string import Template
from typing import NamedTuple

from controlplane.core.names import parse_ip
from controlplane.dns.records import NameRecord
from controlplane.dns.views import TenantView, Upstream
from controlplane.translate.front_lua import KRESD_FRONT_TEMPLATE
from controlplane.translate.unbound import RPZ_ZONE

ENVOY_MAX_ANSWERS = 8  # Envoy's DNS filter answers at most 8 records and never sets TC
ALL_TO_ENVOY = "* .\n"  # a set line: send every query to Envoy (a view with no resolver)
QTYPES = ("A", "AAAA", "SRV")


class Pair(NamedTuple):
    """A query Envoy answers right: its type and lower-case name (no trailing dot). A
    tuple, so that sorting 100k of them compares in C."""

    qtype: str
    name: str

    def line(self) -> str:
        return f"{self.qtype} {self.name}.\n"


def _cut_families(rec: NameRecord) -> frozenset[str]:
    """The address families the answer cap shortened (see the module)."""
    if not rec.truncated:
        return frozenset()
    v4, v6 = len(rec.ipv4), 0 if rec.mapped else len(rec.ipv6)
    top = max(v4, v6)
    return frozenset(f for f, n in (("A", v4), ("AAAA", v6)) if n == top)


def _record_pairs(rec: NameRecord, max_answers: int) -> list[Pair]:
    name = rec.name
    if rec.is_wildcard or name != name.lower() or not name:
        return []
    cut = _cut_families(rec)
    out = []
    if 1 <= len(rec.ipv4) <= max_answers and "A" not in cut:
        out.append(Pair("A", name))
    if not rec.mapped and 1 <= len(rec.ipv6) <= max_answers and "AAAA" not in cut:
        out.append(Pair("AAAA", name))
    counts: dict[tuple[str, str], int] = {}
    for srv in rec.srv:
        key = (srv.service, srv.protocol)
        counts[key] = counts.get(key, 0) + 1
    for (service, protocol), n in counts.items():
        srv_name = f"_{service}._{protocol}.{name}"
        if 1 <= n <= max_answers and srv_name == srv_name.lower():
            out.append(Pair("SRV", srv_name))
    return out


def record_pairs(rec: NameRecord, *, max_answers: int = ENVOY_MAX_ANSWERS) -> list[Pair]:
    """The pairs one table record gives (``envoy_pairs`` is their union over a view)."""
    return _record_pairs(rec, max_answers)


def pair_record_name(pair: Pair) -> str:
    """The name of the record a pair comes from (an SRV pair's name is
    ``_service._protocol.<record>``)."""
    return pair.name.split(".", 2)[2] if pair.qtype == "SRV" else pair.name


def envoy_pairs(view: TenantView, *, max_answers: int = ENVOY_MAX_ANSWERS) -> tuple[Pair, ...]:
    """The (type, name) pairs Envoy's table for ``view`` answers right, sorted."""
    if not 1 <= max_answers <= ENVOY_MAX_ANSWERS:
        raise ValueError(f"max_answers must be between 1 and {ENVOY_MAX_ANSWERS}, "
                         f"not {max_answers}")
    pairs: set[Pair] = set()
    for entry in view.entries:
        pairs.update(_record_pairs(entry.record, max_answers))
    return tuple(sorted(pairs))


def set_body(pairs: tuple[Pair, ...]) -> str:
    """``"<TYPE> <name>.\\n"`` per pair, sorted: the same pairs give the same bytes."""
    return "".join(f"{qtype} {name}.\n" for qtype, name in sorted(pairs))


def set_etag(body: str) -> str:
    """A strong HTTP entity tag of ``body`` (quoted, as RFC 9110 writes one)."""
    return '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'


def _lua_string(text: str) -> str:
    """``text`` as a Lua string literal; only printable ASCII without quotes is accepted."""
    if not text.isascii() or not text.isprintable() or "'" in text or "\\" in text:
        raise ValueError(f"not allowed in the front's configuration: {text!r}")
    return f"'{text}'"


# The SOA a denied name's NXDOMAIN gets at the front (front_lua.py, ``add_policy_soa``): the
# policy zone's, as in the resolver's RPZ file, with a short negative TTL (RFC 2308: the
# lesser of the record's TTL and its minimum) so an allowed name is seen again soon.
POLICY_SOA_TTL = 5
POLICY_SOA = ("localhost.", "nobody.invalid.", 1, 3600, 600, 86400, POLICY_SOA_TTL)


def _lua_wire(data: bytes) -> str:
    """``data`` inside a Lua string literal: printable bytes as they are, the rest as
    three-digit decimal escapes (which no following digit can extend)."""
    return "".join(chr(b) if 0x30 <= b < 0x7f and b != 0x5c else f"\\{b:03d}" for b in data)


def _dname_wire(name: str) -> bytes:
    labels = [label.encode("ascii") for label in name.rstrip(".").split(".") if label]
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def policy_soa_rdata() -> bytes:
    """The wire RDATA of ``POLICY_SOA`` (RFC 1035 3.3.13)."""
    mname, rname, *numbers = POLICY_SOA
    return (_dname_wire(str(mname)) + _dname_wire(str(rname))
            + b"".join(int(n).to_bytes(4, "big") for n in numbers))


def _server(address: Upstream) -> str:
    """kresd's ``address@port`` for an upstream; the host must be an IP address."""
    if parse_ip(address.host) is None:
        raise ValueError(f"the front needs an IP address, not {address.host!r}")
    if not 0 < address.port < 65536:
        raise ValueError(f"bad port {address.port} for {address.host}")
    return f"{address.host}@{address.port}"


def kresd_front_config(*, listen: tuple[Upstream, ...], envoy: Upstream, set_url: str,
                       resolvers: tuple[Upstream, ...], tenant: str = "",
                       resolver_tcp: bool = False, cache_mb: int = 8,
                       cache_dir: str = "/var/cache/dns-front", poll_seconds: int = 1,
                       fetch_timeout_seconds: int = 2) -> str:
    """The front's kresd configuration (Lua) for one pod.

    ``listen``: where applications ask (UDP and TCP on each; ``127.0.0.1:53`` in a pod).
    ``envoy``: Envoy's DNS listener. ``set_url``: Envoy's loopback set listener
    (``front_routes.set_url``). ``resolvers``: the tenant resolver(s), plain DNS; with
    ``resolver_tcp`` every query to them goes over TCP (a pod's front reaches its tenant's
    resolver through Envoy's hop listener, which is TCP only). ``tenant``: for the header
    comment only (a pod's tenant is the control plane's decision, not the front's).
    ``cache_mb``: kresd's answer cache (LMDB in ``cache_dir``), served stale (RFC 8767)
    when the resolver does not answer.
    """
    if not listen or not resolvers:
        raise ValueError("the front needs at least one listen address and one resolver")
    if not set_url.startswith("http://"):
        raise ValueError(f"the set URL must be plain HTTP on loopback, not {set_url!r}")
    if cache_mb < 1 or poll_seconds < 1 or fetch_timeout_seconds < 1:
        raise ValueError("cache_mb, poll_seconds and fetch_timeout_seconds must be at least 1")
    addresses = (*listen, envoy, *resolvers)
    servers = [_server(a) for a in addresses]  # validates every address
    listen_lines = "\n".join(
        f"net.listen({_lua_string(a.host)}, {a.port}, {{ kind = 'dns' }})" for a in listen)
    return Template(KRESD_FRONT_TEMPLATE).substitute(
        tenant=tenant.replace("\n", " ") or "(chosen by the control plane)",
        # No 0x20 to the resolver either: the hop is loopback or TCP (nothing to spoof), and
        # the resolver's query records then show names as the policy sees them.
        resolver_flags="'NO_0X20', 'TCP'" if resolver_tcp else "'NO_0X20'",
        listen=listen_lines,
        ipv6="true" if any(":" in a.host for a in addresses) else "false",
        cache_mb=cache_mb,
        cache_dir=_lua_string(f"lmdb://{cache_dir}"),
        envoy=_lua_string(servers[len(listen)]),
        resolvers="{ " + ", ".join(_lua_string(s) for s in servers[len(listen) + 1:]) + " }",
        set_url=_lua_string(set_url),
        poll_seconds=poll_seconds,
        fetch_timeout=fetch_timeout_seconds,
        policy_soa_owner=_lua_string(RPZ_ZONE),
        policy_soa_ttl=POLICY_SOA_TTL,
        policy_soa_rdata=_lua_wire(policy_soa_rdata()),
    )


__all__ = ["ENVOY_MAX_ANSWERS", "POLICY_SOA", "POLICY_SOA_TTL", "Pair", "envoy_pairs",
           "kresd_front_config", "pair_record_name", "policy_soa_rdata", "record_pairs",
           "set_body", "set_etag"]
