"""What each DnsPolicy's ``status`` should say. Pure: the writer lives with the source.

Conditions (each with reason, message and ``observedGeneration``):

- ``Accepted``: the object is valid and its server can be used.
- ``Ready``: accepted, and every connected Envoy of the tenant runs the
  current configuration (acked), or none is connected yet.
- ``Conflicted``: another policy selects the same namespace or workload with
  the same precedence; the alphabetically first one wins.
- ``Enforced``: every rule is enforced as written; ``False`` lists the rules
  Envoy cannot express and the stricter (fail-closed) behaviour used instead.

Plus ``tenant``, ``selectedNamespaces``, ``selectedWorkloads`` (when Pods are
watched), ``connectedProxies`` and the view's ``notes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.core.errors import InputError
from controlplane.core.inventory import Inventory
from controlplane.core.model import DnsPolicy, Labels, Workload
from controlplane.dns.views import TenantView
from controlplane.policy.selection import Selection, select_policy


@dataclass(frozen=True)
class ProxyState:
    """What the status needs to know about one connected Envoy."""

    workload: Workload
    tenant: str
    current: bool  # acked the current listener version of its view (and route, if fronted)


def _condition(type_: str, ok: bool, reason: str, message: str, generation: int
               ) -> dict[str, Any]:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason,
            "message": message, "observedGeneration": generation}


class PolicySelector:
    """``select_policy`` over one inventory, once per (namespace, labels): the pods of one
    workload, and the Envoys beside them, share one answer. The status is made for every
    pod and connected Envoy each time the hub changes (every 0.2 s while a fleet
    reconnects): 10,000 of each cost 0.6 s of the event loop per run when each was
    selected again for every policy (RESULTS.md section 26)."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self._policies = list(inventory.policies.values())
        self._memo: dict[tuple[str, Labels], Selection] = {}
        self._pods: dict[str, int] | None = None  # policy name -> pods it applies to

    def select(self, namespace: str, labels: Labels) -> Selection:
        key = (namespace, labels)
        selection = self._memo.get(key)
        if selection is None:
            selection = self._memo[key] = select_policy(
                Workload(node_id="", namespace=namespace, labels=labels),
                self.inventory.namespace_labels(namespace), self._policies)
        return selection

    def pods_selected(self, policy: DnsPolicy) -> int:
        """How many of the inventory's pods ``policy`` applies to."""
        if self._pods is None:
            counts: dict[str, int] = {}
            for pod in self.inventory.pods.values():
                chosen = self.select(pod.namespace, pod.labels).policy
                if chosen is not None:
                    counts[chosen.name] = counts.get(chosen.name, 0) + 1
            self._pods = counts
        # Only the inventory's policy of that name can be chosen (the name is compared).
        if self.inventory.policies.get(policy.name) != policy:
            return 0
        return self._pods.get(policy.name, 0)


def conflicts_by_policy(inventory: Inventory, workloads: Iterable[Workload], *,
                        selector: PolicySelector | None = None) -> dict[str, set[str]]:
    """For each policy, the other policies it ties with on some namespace or workload."""
    select = (selector or PolicySelector(inventory)).select
    out: dict[str, set[str]] = {}
    candidates: set[tuple[str, Labels]] = {(ns, ()) for ns in inventory.namespaces}
    candidates.update((p.namespace, p.labels) for p in inventory.pods.values())
    candidates.update((w.namespace, w.labels) for w in workloads)
    for namespace, labels in candidates:
        sel = select(namespace, labels)
        if sel.policy and sel.conflicts:
            group = {sel.policy.name, *sel.conflicts}
            for name in group:
                out.setdefault(name, set()).update(group - {name})
    return out


def policy_status(
    policy: DnsPolicy | None,
    name: str,
    *,
    inventory: Inventory,
    error: InputError | None,
    view: TenantView | None,
    proxies: list[ProxyState],
    conflicts: set[str],
    pods_watched: bool,
    policy_server: tuple[bool, str] | None = None,
    selector: PolicySelector | None = None,
) -> dict[str, Any]:
    """The desired ``status`` of policy ``name`` (``policy`` is its last valid version).
    ``selector``: one shared by the policies of one walk (the pods selected once)."""
    generation = error.generation if error and error.generation else (
        policy.generation if policy else 0)
    status: dict[str, Any] = {"observedGeneration": generation, "tenant": name}
    if policy is not None:
        ns_selected = [ns for ns, obj in inventory.namespaces.items()
                       if policy.namespace_selector.matches(dict(obj.labels))]
        status["selectedNamespaces"] = len(ns_selected)
        if pods_watched:
            status["selectedWorkloads"] = (
                selector or PolicySelector(inventory)).pods_selected(policy)
    mine = [p for p in proxies if p.tenant == name]
    status["connectedProxies"] = len(mine)
    if view is not None:
        status["defaultAction"] = policy.default_action.value if policy else None
        status["notes"] = list(view.notes)
    if error is not None:
        accepted = _condition("Accepted", False, "Invalid" if error.origin != "policy"
                              else "UnresolvableServer", error.reason, generation)
    else:
        accepted = _condition("Accepted", True, "Valid", "the policy is in force", generation)
    stale = [p.workload.node_id for p in mine if not p.current]
    if policy is None:
        ready = _condition("Ready", False, "NoValidVersion",
                           "no valid version of this policy has been seen", generation)
    elif stale:
        ready = _condition("Ready", False, "Pending",
                           f"{len(stale)} of {len(mine)} proxies do not run the current "
                           f"configuration yet", generation)
    else:
        ready = _condition("Ready", True, "Current" if mine else "NoProxies",
                           f"{len(mine)} proxies run the current configuration" if mine
                           else "configuration built; no proxy connected", generation)
    if conflicts:
        others = ", ".join(sorted(conflicts))
        winner = min({name, *conflicts})
        conflicted = _condition("Conflicted", True, "Overlap",
                                f"selects the same namespaces or workloads as {others}; "
                                f"{winner} applies", generation)
    else:
        conflicted = _condition("Conflicted", False, "NoOverlap", "", generation)
    if view is not None and view.unenforced:
        enforced = _condition("Enforced", False, "FailClosed", "; ".join(view.unenforced),
                              generation)
    else:
        enforced = _condition("Enforced", True, "AllRules",
                              "every rule is enforced as written (Envoy and the tenant "
                              "resolver)", generation)
    status["conditions"] = [accepted, ready, conflicted, enforced]
    if policy is not None and policy.policy_server is not None and policy_server is not None:
        up, why = policy_server
        status["conditions"].append(
            _condition("PolicyServerReachable", True, "Answering",
                       f"{policy.policy_server.address} answers", generation) if up else
            _condition("PolicyServerReachable", False, "Unreachable",
                       f"{policy.policy_server.address}: {why}; the failure mode decides",
                       generation))
    status["ready"] = accepted["status"] == "True" and ready["status"] == "True"
    return status


def merge_transition_times(new: Mapping[str, Any], old: Mapping[str, Any] | None,
                           now: str) -> dict[str, Any]:
    """Keep each condition's lastTransitionTime unless its status changed."""
    old_conditions = (old or {}).get("conditions")
    # What is stored may be anything a client wrote: keep only well-formed conditions.
    previous = {c.get("type"): c for c in (old_conditions if isinstance(old_conditions, list)
                                           else []) if isinstance(c, Mapping)}
    out = dict(new)
    conds = []
    for c in new.get("conditions", []):
        p = previous.get(c["type"])
        keep = p is not None and p.get("status") == c["status"] and p.get("lastTransitionTime")
        conds.append({**c, "lastTransitionTime": p["lastTransitionTime"] if keep and p else now})
    out["conditions"] = conds
    return out


def without_times(status: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(status)
    out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                         for c in status.get("conditions", [])]
    return out

