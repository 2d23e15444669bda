"""DnsPolicy status: conditions, conflicts, counts and transition times."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.core.errors import InputError
from controlplane.core.inventory import Inventory
from controlplane.core.model import Namespace, Pod, Workload
from controlplane.dns.status import (
    PolicySelector,
    ProxyState,
    conflicts_by_policy,
    merge_transition_times,
    policy_status,
    without_times,
)
from controlplane.policy.selection import select_policy
from tests.factories import policy

INV = Inventory.of([
    Namespace("a1", (("team", "a"),)), Namespace("a2", (("team", "a"),)),
    Namespace("b", (("team", "b"),)),
    Pod("a1", "p1", (("app", "web"),)), Pod("a2", "p2", (("app", "db"),)),
    policy("alpha", {"team": "a"}, generation=3), policy("beta", {"team": "a"}, generation=3), policy("bravo", {"team": "b"}, generation=3),
])


def conds(status: dict[str, object]) -> dict[str, dict[str, object]]:
    return {c["type"]: c for c in status["conditions"]}  # type: ignore[attr-defined,index]


def test_conflicts_are_symmetric_and_name_the_winner() -> None:
    conflicts = conflicts_by_policy(INV, [])
    assert conflicts == {"alpha": {"beta"}, "beta": {"alpha"}}
    status = policy_status(INV.policies["beta"], "beta", inventory=INV, error=None, view=None,
                           proxies=[], conflicts=conflicts["beta"], pods_watched=True)
    c = conds(status)["Conflicted"]
    assert c["status"] == "True" and "alpha applies" in str(c["message"])
    assert status["selectedNamespaces"] == 2
    assert status["selectedWorkloads"] == 0  # alpha wins both pods of team a
    alpha = policy_status(INV.policies["alpha"], "alpha", inventory=INV, error=None, view=None,
                          proxies=[], conflicts={"beta"}, pods_watched=True)
    assert alpha["selectedWorkloads"] == 2


def test_one_selector_for_a_whole_walk_gives_each_policy_its_own_status() -> None:
    """The status walk selects once per (namespace, labels) and shares that between the
    policies: every policy's status, conflicts and pod count are what each gets alone, by
    brute force over the pods (a pod per label set and namespace, and connected Envoys of
    label sets no pod has)."""
    pods = [Pod(ns, f"p{i}", labels) for i, (ns, labels) in enumerate(
        (ns, labels) for ns in ("a1", "a2", "b", "c")
        for labels in ((), (("app", "web"),), (("app", "db"), ("tier", "x"))))]
    inv = Inventory.of([*INV.namespaces.values(), Namespace("c"), *pods,
                        *INV.policies.values(),
                        policy("web", {"team": "a"}, pod_labels={"app": "web"}),
                        policy("web2", {"team": "a"}, pod_labels={"app": "web"})])
    envoys = [Workload(node_id=f"n{i}", namespace=ns, labels=(("app", "web"), ("v", str(i))))
              for i, ns in enumerate(("a1", "b", "c", "a2"))]
    selector = PolicySelector(inv)
    shared = conflicts_by_policy(inv, envoys, selector=selector)
    assert shared == conflicts_by_policy(inv, envoys)
    assert shared == {"alpha": {"beta"}, "beta": {"alpha"}, "web": {"web2"}, "web2": {"web"}}
    proxies = [ProxyState(w, "bravo", True) for w in envoys]
    for name, pol in inv.policies.items():
        alone = policy_status(pol, name, inventory=inv, error=None, view=None,
                              proxies=proxies, conflicts=shared.get(name, set()),
                              pods_watched=True)
        walked = policy_status(pol, name, inventory=inv, error=None, view=None,
                               proxies=proxies, conflicts=shared.get(name, set()),
                               pods_watched=True, selector=selector)
        assert walked == alone
        assert walked["selectedWorkloads"] == sum(
            1 for p in inv.pods.values()
            if select_policy(Workload(node_id="", namespace=p.namespace, labels=p.labels),
                             inv.namespace_labels(p.namespace),
                             inv.policies.values()).policy == pol)
    assert {n: selector.pods_selected(inv.policies[n]) for n in ("alpha", "web", "bravo")} == {
        "alpha": 4, "web": 2, "bravo": 3}
    # A version of a policy the inventory does not hold applies to no pod.
    assert selector.pods_selected(policy("alpha", {"team": "a"}, generation=9)) == 0


def test_ready_follows_the_proxies() -> None:
    w = Workload(node_id="n1", namespace="b")
    base = dict(inventory=INV, error=None, view=None, conflicts=set(), pods_watched=False)
    pending = policy_status(INV.policies["bravo"], "bravo", proxies=[ProxyState(w, "bravo", False)],
                            **base)  # type: ignore[arg-type]
    assert conds(pending)["Ready"]["reason"] == "Pending" and pending["ready"] is False
    current = policy_status(INV.policies["bravo"], "bravo", proxies=[ProxyState(w, "bravo", True)],
                            **base)  # type: ignore[arg-type]
    assert conds(current)["Ready"]["reason"] == "Current" and current["ready"] is True
    assert current["connectedProxies"] == 1 and "selectedWorkloads" not in current
    assert all(c["observedGeneration"] == 3 for c in current["conditions"])


def test_invalid_policy_is_not_accepted() -> None:
    err = InputError("DnsPolicy", "", "bravo", "spec.policy.defaultAction 'BLOCK' is not one of "
                     "ALLOW, DENY, WARN", "kubernetes dnspolicies", generation=4)
    status = policy_status(INV.policies["bravo"], "bravo", inventory=INV, error=err, view=None,
                           proxies=[], conflicts=set(), pods_watched=False)
    c = conds(status)["Accepted"]
    assert (c["status"], c["reason"], c["observedGeneration"]) == ("False", "Invalid", 4)
    never_valid = policy_status(None, "new", inventory=INV, error=err, view=None, proxies=[],
                                conflicts=set(), pods_watched=False)
    assert conds(never_valid)["Ready"]["reason"] == "NoValidVersion"


def test_transition_times_change_only_with_status() -> None:
    first = policy_status(INV.policies["bravo"], "bravo", inventory=INV, error=None, view=None,
                          proxies=[], conflicts=set(), pods_watched=False)
    written = merge_transition_times(first, None, "T1")
    assert {c["lastTransitionTime"] for c in written["conditions"]} == {"T1"}
    again = merge_transition_times(first, written, "T2")
    assert again == written
    err = InputError("DnsPolicy", "", "bravo", "bad", "x", generation=3)
    broken = policy_status(INV.policies["bravo"], "bravo", inventory=INV, error=err, view=None,
                           proxies=[], conflicts=set(), pods_watched=False)
    merged = merge_transition_times(broken, written, "T3")
    times = {c["type"]: c["lastTransitionTime"] for c in merged["conditions"]}
    assert times == {"Accepted": "T3", "Ready": "T1", "Conflicted": "T1", "Enforced": "T1"}
    assert without_times(merged) == without_times(broken)


@pytest.mark.parametrize("stored", [
    {"conditions": ["not an object"]}, {"conditions": "Ready"}, {"conditions": None},
    {"conditions": [{"type": "Ready"}, 7]}, {},
])
def test_a_malformed_stored_status_is_replaced_not_a_crash(stored: dict[str, Any]) -> None:
    """Whatever a client wrote into status, the writer replaces it (it used to raise in
    merge_transition_times and, since threads are supervised, end the process)."""
    new = {"conditions": [{"type": "Ready", "status": "True"}]}
    merged = merge_transition_times(new, stored, "2026-01-01T00:00:00Z")
    assert merged["conditions"] == [{"type": "Ready", "status": "True",
                                     "lastTransitionTime": "2026-01-01T00:00:00Z"}]
