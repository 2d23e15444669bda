"""The DNS front a sidecar runs in front of Envoy's DNS listener: its addresses and its kresd
configuration, the same for a pod (``sidecar.front_container``) and a VM (``node``). Pure.

Layout (``docs/dns-front.md``): applications ask the front (kresd) on the pod's DNS address
over UDP and TCP; the front sends the (name, type) pairs Envoy answers right to Envoy's DNS
listener, everything else over TCP to Envoy's resolver hop listener (which reaches the
tenant resolver), and polls the pairs from Envoy's loopback set listener. The
configuration does not depend on the tenant: the control plane decides what Envoy's
listeners hold, so one text serves every sidecar with the same addresses.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.core.names import split_host_port
from controlplane.dns.views import Upstream
from controlplane.translate.front import kresd_front_config
from controlplane.translate.front_routes import set_url

ENVOY_DNS_ADDRESS = "127.0.0.1:15053"  # Envoy's DNS listener behind the front
SET_ADDRESS = "127.0.0.1:15055"  # Envoy's loopback set listener (DNS_FRONT_SET_ADDRESS)
# Envoy's resolver hop listener (RESOLVER_HOP_ADDRESS), on another loopback address than
# Envoy's DNS listener: kresd keeps one health state per upstream IP address, ports aside,
# so a dead tenant resolver behind the hop would mark Envoy's DNS listener down too
# (measured: table names SERVFAIL for the second the resolver took to come back).
HOP_ADDRESS = "127.0.0.2:15054"
FRONT_NAME = "dns-front"


@dataclass(frozen=True, slots=True)
class FrontAddresses:
    """Where the front listens and what it talks to (HOST:PORT each)."""

    dns: str = "127.0.0.1:53"  # where applications ask (UDP and TCP)
    envoy_dns: str = ENVOY_DNS_ADDRESS
    set: str = SET_ADDRESS
    hop: str = HOP_ADDRESS

    def problem(self) -> str | None:
        """Why these addresses cannot work together, or None."""
        try:
            ports = {what: _upstream(text, what).port for what, text in self.named()}
        except ValueError as exc:
            return str(exc)
        seen: dict[int, str] = {}
        for what, port in ports.items():
            if port in seen:
                return f"the {what} and the {seen[port]} share port {port}"
            seen[port] = what
        envoy, hop = _upstream(self.envoy_dns, "").host, _upstream(self.hop, "").host
        if envoy == hop:
            return (f"the resolver hop must not share Envoy DNS listener's IP address {hop} "
                    "(the front keeps one health state per upstream address: a dead "
                    "resolver would take table names down with it); e.g. 127.0.0.2")
        return None

    def named(self) -> tuple[tuple[str, str], ...]:
        return (("front's DNS address", self.dns), ("Envoy DNS listener", self.envoy_dns),
                ("set listener", self.set), ("resolver hop", self.hop))


def _upstream(text: str, what: str) -> Upstream:
    host, port = split_host_port(text, 0)
    if port == 0:
        raise ValueError(f"the {what} {text!r} has no port")
    return Upstream(host, port)


def front_config(addresses: FrontAddresses, *, cache_dir: str) -> str:
    """The front's kresd configuration (Lua) for these addresses; its answer cache (LMDB)
    in ``cache_dir``. ``ValueError`` when an address cannot be used."""
    set_host, set_port = split_host_port(addresses.set, 0)
    return kresd_front_config(
        listen=(_upstream(addresses.dns, "front's DNS address"),),
        envoy=_upstream(addresses.envoy_dns, "Envoy DNS listener"),
        set_url=set_url(set_host, set_port),
        resolvers=(_upstream(addresses.hop, "resolver hop"),), resolver_tcp=True,
        cache_dir=cache_dir)


__all__ = ["ENVOY_DNS_ADDRESS", "FRONT_NAME", "HOP_ADDRESS", "SET_ADDRESS", "FrontAddresses",
           "front_config"]
