"""Virtual IPs for ServiceEntries that name hosts but no addresses.

Deterministic: each (namespace, name, host) starts probing at a slot taken
from a SHA-256 of its key, and keys are placed in the order of their hashes,
so the same input gives the same VIPs on every replica and after every
restart, with no state. Declared addresses (ServiceEntry ``addresses``,
Service cluster IPs) inside the range are never handed out. A new entry can
only move another one if their probe sequences collide, which in a /16 is
rare; conflicts and exhaustion are reported, never silent.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from controlplane.core.inventory import Inventory

VipKey = tuple[str, str, str]  # namespace, ServiceEntry name, host


@dataclass(frozen=True)
class Allocation:
    vips: dict[VipKey, str]
    errors: tuple[str, ...]


def eligible(inventory: Inventory) -> list[VipKey]:
    out = []
    for (ns, name), se in sorted(inventory.service_entries.items()):
        if se.addresses:
            continue
        out += [(ns, name, h) for h in se.hosts if not h.startswith("*.")]
    return out


def allocate(inventory: Inventory, cidr: str) -> Allocation:
    network = ipaddress.ip_network(cidr, strict=False)
    hosts = network.num_addresses - 2 if network.num_addresses > 2 else network.num_addresses
    first = int(network.network_address) + (1 if network.num_addresses > 2 else 0)
    taken: set[int] = set()
    for se in inventory.service_entries.values():
        for a in se.addresses:
            ip = ipaddress.ip_address(a)
            if ip in network:
                taken.add(int(ip))
    for svc in inventory.services.values():
        for a in svc.cluster_ips:
            ip = ipaddress.ip_address(a)
            if ip in network:
                taken.add(int(ip))
    keys = eligible(inventory)
    digest = {k: int.from_bytes(hashlib.sha256("/".join(k).encode()).digest()[:8], "big")
              for k in keys}
    vips: dict[VipKey, str] = {}
    errors = []
    for key in sorted(keys, key=lambda k: (digest[k], k)):
        if len(taken) >= hosts:
            errors.append(f"ServiceEntry {key[0]}/{key[1]} host {key[2]}: no free address left "
                          f"in {cidr}")
            continue
        slot = digest[key] % hosts
        while first + slot in taken:
            slot = (slot + 1) % hosts
        taken.add(first + slot)
        vips[key] = str(ipaddress.ip_address(first + slot))
    return Allocation(vips, tuple(errors))
