"""Tenant views from the inventory, redone only where a change reaches.

``ViewBuilder.build`` takes the inventory and the keys of the objects that
changed (the store's ``Batch``) and returns every tenant's ``TenantView``,
reusing each view that no change concerns. Its state (the cluster's records,
each policy's decisions, the last views) belongs to whoever calls ``build``:
the hub calls it on one worker thread at a time, so a full rebuild at
100,000 Services never holds the event loop. It is pure: no I/O, no clock,
no logging; the tenant resolvers and the policy server, which do I/O, are
applied afterwards by the hub on the event loop.

A view is rebuilt when its policy changed, when the namespaces changed (which
namespaces a policy selects), when a changed name is or was in it, when the
Service its upstream names changed, when its policy server's decisions
changed, or when its last build had an error; otherwise the previous view
object is reused, which is what lets the renderer skip it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.core.errors import InputError
from controlplane.core.inventory import Inventory, Key
from controlplane.core.model import DnsPolicy, Service
from controlplane.core.names import Pattern
from controlplane.core.settings import DefaultView, DnsSettings
from controlplane.dns.incremental_records import IncrementalRecords
from controlplane.dns.record_index import RecordIndex
from controlplane.dns.records import RecordOptions
from controlplane.dns.views import (
    DEFAULT_TENANT,
    TenantView,
    Upstream,
    build_tenant_view,
    upstream_service,
)
from controlplane.dns.vips import Allocation, allocate
from controlplane.policy.decisions import ExternalDecision
from controlplane.policy.selection import CompiledPolicy

Externals = Mapping[str, Mapping[str, ExternalDecision]]  # tenant -> name -> decision


@dataclass(frozen=True)
class ViewBuild:
    """The result of one ``build``: views before their tenant resolvers are filled in."""

    views: dict[str, TenantView]  # by tenant, the default view included
    errors: dict[str, InputError]  # unusable servers, VIP allocation
    compiled: dict[str, CompiledPolicy]  # by policy name
    vips: Allocation
    changed_names: frozenset[str]  # names whose record changed
    selection_changed: bool  # policies or namespaces changed: re-select every stream's policy
    rebuilt: tuple[str, ...]  # tenants whose view was built anew


class ViewBuilder:
    """Every tenant's view, kept up to date by change. Not thread-safe: one caller at a time."""

    def __init__(self, settings: DnsSettings) -> None:
        self.settings = settings
        self._records = IncrementalRecords()
        # Per policy: (the policy, its compiled form, name -> decision); reset when it changes.
        self._decisions: dict[str, tuple[DnsPolicy, CompiledPolicy, dict[str, Any]]] = {}
        self._views: dict[str, TenantView] = {}
        self._failed: set[str] = set()  # tenants whose last build had an error
        self._last_good_upstream: dict[str, Upstream] = {}
        self._externals: dict[str, Mapping[str, ExternalDecision]] = {}
        self._inventory = Inventory()
        self._allocation = Allocation({}, ())
        self._vip_net = (ipaddress.ip_network(settings.vip_range, strict=False)
                         if settings.vip_range else None)
        self._first = True

    def build(self, inventory: Inventory, changed: Collection[Key] | None = None,
              externals: Externals | None = None) -> ViewBuild:
        """Every view for ``inventory``; ``changed``: the keys of the objects that changed
        since the previous build (None: find them by comparing the inventories)."""
        previous = self._inventory
        keys = set(self._changed_keys(previous, inventory) if changed is None else changed)
        externals = externals or {}
        settings = self.settings
        allocation = self._allocate(previous, inventory, keys)
        changed_names = self._records.apply(inventory, keys, RecordOptions(
            zone=settings.zone, ttl=settings.ttls(), max_answers=settings.max_answers,
            aaaa_mapped=settings.aaaa_mapped, vips=allocation.vips))
        records = self._records.sorted_records()
        index = RecordIndex(self._records.records, self._records.by_suffix,
                            self._records.wildcards)
        namespaces_changed = self._first or any(k[0] == "Namespace" for k in keys)
        policies_changed = self._first or any(k[0] == "DnsPolicy" for k in keys)
        # The Services that changed, for the views' upstreams; at a first build every view
        # is built anyway (and 100,000 keys would be copied for nothing).
        services = set() if self._first else {(k[1], k[2]) for k in keys if k[0] == "Service"}
        views: dict[str, TenantView] = {}
        errors: dict[str, InputError] = {}
        compiled: dict[str, CompiledPolicy] = {}
        rebuilt: list[str] = []
        for name in sorted(inventory.policies):
            policy = inventory.policies[name]
            cached = self._decisions.get(name)
            fresh = cached is None or cached[0] != policy
            if cached is None or fresh:
                cached = (policy, CompiledPolicy.of(policy), {})
                self._decisions[name] = cached
            compiled[name] = cached[1]
            external = externals.get(name) if policy.policy_server is not None else None
            prev = self._views.get(name)
            if (prev is not None and not fresh and not namespaces_changed
                    and name not in self._failed
                    and not self._upstream_changed(policy.server_address, services)
                    and (external is None or external == self._externals.get(name))
                    and not _concerns(cached[1], cached[2], changed_names,
                                      server=policy.policy_server is not None)):
                views[name] = prev  # nothing it can see changed: reuse the view
                continue
            view, error = build_tenant_view(
                policy, records, inventory, settings,
                last_good_upstream=self._last_good_upstream.get(name), compiled=cached[1],
                decisions=cached[2], index=index, external=external)
            rebuilt.append(name)
            if external is not None:
                self._externals[name] = external
            if error:
                errors[name] = InputError(kind="DnsPolicy", namespace="", name=name,
                                          reason=error, origin="policy")
            elif view.forward is not None and view.forward.server is not None:
                self._last_good_upstream[name] = view.forward.server
            views[view.tenant] = view
        for message in allocation.errors:
            errors[f"vip:{message}"] = InputError(kind="ServiceEntry", namespace="", name="",
                                                  reason=message, origin="vip allocation")
        default = self._views.get(DEFAULT_TENANT)
        if (default is None or DEFAULT_TENANT in self._failed
                or self._upstream_changed(settings.default_upstream, services)
                or (settings.default_view is DefaultView.CLUSTER and changed_names)):
            default, error = build_tenant_view(None, records, inventory, settings)
            rebuilt.append(DEFAULT_TENANT)
            if error:
                errors[DEFAULT_TENANT] = InputError(kind="Settings", namespace="",
                                                    name="default-upstream", reason=error)
        views[DEFAULT_TENANT] = default
        for gone in set(self._decisions) - set(inventory.policies):
            del self._decisions[gone]
            self._externals.pop(gone, None)
        self._views = views
        self._failed = {t for t in views if t in errors}
        self._inventory = inventory
        self._first = False
        return ViewBuild(views=views, errors=errors, compiled=compiled, vips=allocation,
                         changed_names=frozenset(changed_names),
                         selection_changed=namespaces_changed or policies_changed,
                         rebuilt=tuple(rebuilt))

    @staticmethod
    def _changed_keys(old: Inventory, new: Inventory) -> set[Key]:
        keys = new.changed_keys(old)
        # Namespaces and policies decide which views are redone: count only real changes.
        return {k for k in keys if k[0] not in ("Namespace", "DnsPolicy")
                or old.get(k) != new.get(k)}

    def _upstream_changed(self, address: str, services: set[tuple[str, str]]) -> bool:
        if not address or not services:
            return False
        svc = upstream_service(address, zone=self.settings.zone)
        return svc is not None and svc in services

    def _allocate(self, previous: Inventory, inventory: Inventory, keys: set[Key]) -> Allocation:
        """VIPs of ServiceEntries: allocated again only when an input of it changed."""
        net = self._vip_net
        if net is None:
            return self._allocation
        if self._first or any(k[0] == "ServiceEntry" for k in keys) or any(
                _in(net, previous.services.get((k[1], k[2])))
                or _in(net, inventory.services.get((k[1], k[2])))
                for k in keys if k[0] == "Service"):
            self._allocation = allocate(inventory, self.settings.vip_range)
        return self._allocation


def _in(net: ipaddress.IPv4Network | ipaddress.IPv6Network, svc: Service | None) -> bool:
    """Whether ``svc`` holds an address inside the VIP range (which it takes from it)."""
    if svc is None:
        return False
    for a in svc.cluster_ips:
        try:
            if ipaddress.ip_address(a) in net:
                return True
        except ValueError:
            continue
    return False


def _concerns(compiled: CompiledPolicy, decisions: dict[str, Any], changed: Collection[str],
              *, server: bool) -> bool:
    """Whether any changed name is, or was, in this tenant's view.

    The policy is unchanged (else the view is rebuilt anyway), so a name's
    decision is too: one that is not answered now was not in the view before.
    With a policy server, every name that no blacklist entry denies is in the
    view or asked about.
    """
    for name in changed:
        d = decisions.get(name)
        if d is None:
            d = compiled.classify_pattern(Pattern(name))
            decisions[name] = d
        if d.action.answers or (server and not d.rule.startswith("blacklist")):
            return True
    return False
