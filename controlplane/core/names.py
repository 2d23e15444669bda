"""DNS names and name patterns: validation, normalisation and matching.

A pattern is an exact name (``api.example.com``) or ``*.suffix``, which matches
any name strictly below the suffix, at any depth (``a.suffix``, ``a.b.suffix``)
but not the suffix itself. Names compare case-insensitively (RFC 1035), so
everything is lower-cased on the way in; Envoy's table matching is
case-sensitive (facts #8), so the table holds lower-case names only.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

from controlplane.core.errors import BadAddress, BadPattern

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
# Four ASCII decimal octets 0-255, none with a leading zero: IPv4 as ``ipaddress`` reads it.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def is_ipv4_text(text: str) -> bool:
    """True when ``parse_ip(text)`` is an IPv4 address (whose text is then ``text``)."""
    return _IPV4.fullmatch(text) is not None


def normalise(name: str) -> str:
    return name.strip().rstrip(".").lower()


def name_problem(name: str) -> str | None:
    """Why ``name`` (already normalised) is not a valid DNS name, or None."""
    if not name:
        return "empty name"
    if len(name) > 253:
        return f"name {name!r} is longer than 253 characters"
    for label in name.split("."):
        if not _LABEL.match(label):
            return f"name {name!r} has an invalid label {label!r}"
    return None


@dataclass(frozen=True, slots=True)
class Pattern:
    """An exact name or a ``*.suffix`` wildcard, lower-cased."""

    text: str

    @property
    def is_wildcard(self) -> bool:
        return self.text.startswith("*.")

    @property
    def suffix(self) -> str:
        return self.text[2:] if self.is_wildcard else self.text

    def matches(self, name: str) -> bool:
        if self.is_wildcard:
            return name.endswith("." + self.suffix)
        return name == self.text

    def covers(self, other: Pattern) -> bool:
        """True when every name ``other`` matches is also matched by ``self``."""
        if not self.is_wildcard:
            return not other.is_wildcard and other.text == self.text
        if other.is_wildcard:
            return other.suffix == self.suffix or other.suffix.endswith("." + self.suffix)
        return self.matches(other.text)

    def __str__(self) -> str:
        return self.text


def parse_pattern(raw: object) -> Pattern:
    """The Pattern ``raw`` spells; ``BadPattern`` says why it is not one."""
    if not isinstance(raw, str):
        raise BadPattern(f"pattern {raw!r} is not a string")
    text = normalise(raw)
    if text == "*":
        raise BadPattern("pattern '*' is not allowed: use defaultAction to decide for all "
                         "names")
    body = text[2:] if text.startswith("*.") else text
    if "*" in body:
        raise BadPattern(f"pattern {raw!r} is invalid: '*' may only stand alone as the first "
                         "label ('*.example.com')")
    problem = name_problem(body)
    if problem:
        raise BadPattern(f"pattern {raw!r} is invalid: {problem}")
    return Pattern(text)


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


# An address as ``address_key`` gives it: (version, value, text as ``ipaddress`` writes it).
AddressKey = tuple[int, int, str]


def address_key(text: str) -> AddressKey | None:
    """``parse_ip(text)`` as (version, integer value, ``str()`` of the address), or None: the
    same verdict and text, without an ``ipaddress`` object for the common IPv4 text (the
    records of 100,000 Services parse that many). Sorting keys of one version by value
    sorts them as ``ipaddress`` does.

    Text without a colon can only be IPv4 to ``ipaddress``, which reads exactly four
    decimal octets, none over 255 or with a leading zero; the address's text is then the
    input. Anything else (IPv6, scope ids, embedded IPv4) goes through ``ipaddress``
    (memoised)."""
    if ":" not in text:
        if _IPV4.fullmatch(text) is None:
            return None
        a, b, c, d = map(int, text.split("."))
        return 4, a << 24 | b << 16 | c << 8 | d, text
    return _other_key(text)


@functools.lru_cache(maxsize=1 << 16)
def _other_key(text: str) -> AddressKey | None:
    ip = parse_ip(text)
    if ip is None:
        return None
    return ip.version, int(ip), str(ip)


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """Split ``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address into
    (host, port); ``BadAddress`` says why the text cannot be split."""
    text = text.strip()
    if not text:
        raise BadAddress("empty address")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise BadAddress(f"address {text!r} has an unclosed '['")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise BadAddress(f"address {text!r} is malformed")
        port_text = rest[1:] if rest else ""
    elif text.count(":") > 1:  # bare IPv6
        host, port_text = text, ""
    elif ":" in text:
        host, port_text = text.rsplit(":", 1)
    else:
        host, port_text = text, ""
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BadAddress(f"address {text!r} has an invalid port {port_text!r}")
    return host, int(port_text)


def strict_host_port(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``IPv4[:port]`` or ``[IPv6][:port]``, and nothing else: no
    scheme, path, empty host or empty port (``grpc://h:1``, ``:9191``, ``h:`` are refused);
    a host name is DNS labels. ``BadAddress`` says what is wrong."""
    if not text or text != text.strip() or any(c.isspace() for c in text):
        raise BadAddress(f"{text!r} is not HOST[:PORT]")
    if "/" in text or "@" in text:
        raise BadAddress(f"{text!r} is not HOST[:PORT] (no scheme, user or path)")
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1:]
        if end < 0 or not isinstance(parse_ip(host), ipaddress.IPv6Address):
            raise BadAddress(f"{text!r}: [{host}] is not an IPv6 address")
        if rest and not rest.startswith(":"):
            raise BadAddress(f"{text!r} is not [IPv6][:PORT]")
        port_text, has_port = rest[1:], bool(rest)
    elif text.count(":") > 1:
        raise BadAddress(f"{text!r}: an IPv6 address goes in brackets, [IPv6]:PORT")
    else:
        host, sep, port_text = text.partition(":")
        has_port = bool(sep)
        if not host:
            raise BadAddress(f"{text!r} has no host")
        if parse_ip(host) is None:
            labels = host.lower().rstrip(".").split(".")
            if host.replace(".", "").isdigit() or not all(_LABEL.match(lb) for lb in labels):
                raise BadAddress(f"{text!r}: {host!r} is neither an IPv4 address nor a DNS "
                                 "name")
    if not has_port:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BadAddress(f"{text!r} has an invalid port {port_text!r} (1-65535)")
    return host, int(port_text)
