"""``--resolver-hop-peers``: where every replica's hop terminator listens.

With ``--resolver-hop mtls`` each replica runs one terminator in front of its tenant
resolvers, on one fixed port, admitting every tenant's sidecars with the one hop CA: any
replica answers any tenant. A sidecar's hop cluster lists all of them, so it keeps
forwarding when one replica goes (``translate/clusters.resolver_hop_cluster``). The
peers are either fixed addresses (a VM, the local run, the tests) or the ready
endpoints of a Service's named port, read from its EndpointSlices in the inventory
(``dns/hop_peers.py``). Pure: parsing only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from controlplane.core.errors import BadAddress, ConfigError
from controlplane.core.names import parse_ip, split_host_port

FLAG = "--resolver-hop-peers"
SERVICE_PREFIX = "service:"
DEFAULT_PORT_NAME = "dns-hop"
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SERVICE = re.compile(rf"(?P<ns>{_LABEL})/(?P<name>{_LABEL})(:(?P<port>{_LABEL}))?")


@dataclass(frozen=True, slots=True)
class HopPeers:
    """Fixed ``addresses`` (IP, port), or a Service (``namespace``/``name``) whose ready
    endpoints on its port named ``port_name`` are the peers. Neither: not given (each
    sidecar's hop reaches the replica it is connected to)."""

    addresses: tuple[tuple[str, int], ...] = ()
    namespace: str = ""
    name: str = ""
    port_name: str = DEFAULT_PORT_NAME

    @property
    def service(self) -> tuple[str, str] | None:
        return (self.namespace, self.name) if self.name else None

    @property
    def given(self) -> bool:
        return bool(self.addresses or self.name)

    def __str__(self) -> str:
        if self.name:
            return f"{SERVICE_PREFIX}{self.namespace}/{self.name}:{self.port_name}"
        return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.addresses)


def parse_hop_peers(text: str, *, default_port: int) -> HopPeers:
    """``service:NAMESPACE/NAME[:PORT_NAME]`` (port name default ``dns-hop``) or a comma
    list of ``IP[:PORT]`` (port default ``default_port``: ``--resolver-hop-port``); ""
    is none. A ``ConfigError`` naming the flag says what is wrong."""
    text = text.strip()
    if not text:
        return HopPeers()
    if text.startswith(SERVICE_PREFIX):
        match = _SERVICE.fullmatch(text[len(SERVICE_PREFIX):])
        if match is None:
            raise ConfigError(flag=FLAG, reason=f"{text!r} is not service:NAMESPACE/NAME"
                              "[:PORT_NAME] (lower-case DNS labels)")
        return HopPeers(namespace=match["ns"], name=match["name"],
                        port_name=match["port"] or DEFAULT_PORT_NAME)
    addresses = set()
    for part in text.split(","):
        try:
            host, port = split_host_port(part, default_port)
        except BadAddress as exc:
            raise ConfigError(flag=FLAG, reason=str(exc)) from None
        ip = parse_ip(host)
        if ip is None:
            raise ConfigError(flag=FLAG, reason=f"{part.strip()!r}: the peers are IP "
                              "addresses (a name: give service:NAMESPACE/NAME)")
        addresses.add((str(ip), port))
    return HopPeers(addresses=tuple(sorted(addresses, key=_order)))


def _order(address: tuple[str, int]) -> tuple[int, str, int]:
    """IPv4 before IPv6, then by text: the same order on every replica."""
    return (":" in address[0], address[0], address[1])


__all__ = ["DEFAULT_PORT_NAME", "FLAG", "HopPeers", "parse_hop_peers"]
