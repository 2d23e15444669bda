"""The hop terminators a sidecar's hop cluster lists (``--resolver-hop-peers``): the fixed
addresses, or the ready endpoints of a Service's named port from its EndpointSlices in
the inventory (the source already lists and watches every EndpointSlice). Pure.
"""

from __future__ import annotations

from collections.abc import Collection

from controlplane.core.hop_peers import HopPeers
from controlplane.core.inventory import Inventory, Key
from controlplane.core.names import parse_ip
from controlplane.dns.views import Upstream


def hop_peers(spec: HopPeers, inventory: Inventory) -> tuple[Upstream, ...]:
    """Every peer, deduplicated and in one order (``peer_order``); () when none is known
    (the Service has no ready endpoint on that port yet, or no peers were given)."""
    if spec.addresses:
        return tuple(sorted({Upstream(h, p) for h, p in spec.addresses}, key=peer_order))
    if spec.service is None:
        return ()
    namespace, name = spec.service
    found: set[Upstream] = set()
    for (ns, _), eps in inventory.endpoint_slices.items():
        if ns != namespace or eps.service_name != name:
            continue
        ports = [p.port for p in eps.ports if p.name == spec.port_name and p.port]
        for endpoint in eps.endpoints:
            if not endpoint.ready:
                continue
            for address in endpoint.addresses:
                found.update(Upstream(address, port) for port in ports)
    return tuple(sorted(found, key=peer_order))


def peers_may_change(spec: HopPeers, changed: Collection[Key] | None) -> bool:
    """Whether ``changed`` (None: anything) can move the peers of ``spec``: an EndpointSlice
    of the Service's namespace (a slice's service label may change too)."""
    if spec.service is None:
        return False
    return changed is None or any(k[0] == "EndpointSlice" and k[1] == spec.namespace
                                  for k in changed)


def peer_order(peer: Upstream) -> tuple[int, int, str, int]:
    """IPv4 before IPv6, each by its number, then the port: one order on every replica."""
    ip = parse_ip(peer.host)
    return (ip.version if ip else 99, int(ip) if ip else 0, peer.host, peer.port)


__all__ = ["hop_peers", "peer_order", "peers_may_change"]
