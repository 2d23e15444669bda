"""Leader election on a ``coordination.k8s.io/v1`` Lease, in its own thread.

Only the leader writes DnsPolicy status; every replica serves ADS. The rules
(expiry by the observer's clock, release, transitions) are pure and live in
``controlplane/kube/leadership.py``; this module reads and writes the Lease with
the ``kubernetes`` client and keeps the time.

``is_leader()`` is what the status writer asks before every write. It is true
only while the last successful renewal is younger than ``renew_deadline``, so
a leader whose renewals fail (API down, network cut) stops writing by itself,
even while this thread is stuck in a request, and before the lease can
expire for the others. ``on_change(True)`` is called after the lease is won,
``on_change(False)`` as soon as it is known to be lost. ``stop()`` releases
the lease (holderIdentity ``""``) so a follower takes over at its next look
instead of waiting for expiry.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

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
from controlplane.runtime.supervise import Crash, Supervisor

log = logging.getLogger("controlplane.leader")

REQUEST_TIMEOUT = (2.0, 5.0)  # connect, read: well inside the renew deadline
DEFAULT_LEASE = "dns-system/dns-controlplane-status"


@dataclass(frozen=True)
class Election:
    """Which lease, and who this replica is (its pod name in a cluster)."""

    identity: str
    namespace: str = "dns-system"
    name: str = "dns-controlplane-status"
    timings: LeaseTimings = field(default_factory=LeaseTimings)


def micro_time() -> str:
    """Now as a Kubernetes MicroTime (RFC 3339, always six fractional digits).

    The client turns the body into its ``V1Lease`` model and back, with
    ``datetime.isoformat()``, which drops the fraction when it is zero; the API
    server would then reject the time. A zero fraction becomes one microsecond.
    """
    now = datetime.now(UTC)
    if now.microsecond == 0:
        now = now.replace(microsecond=1)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, api: k8s.ApiClient, *, namespace: str, name: str, identity: str,
                 timings: LeaseTimings | None = None,
                 on_change: Callable[[bool], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.coordination = k8s.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timings = timings or LeaseTimings()
        self.on_change = on_change
        self.clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._leading = False
        self._renewed_at = -1e18  # local clock of the last successful write as leader
        self._observation: Observation | None = None
        self.problem = ""  # the last API error, cleared on success
        self.transitions_seen = 0  # times this replica became leader
        self.leader_since: float | None = None  # wall time
        self.thread: threading.Thread | None = None

    @property
    def lease(self) -> str:
        return f"{self.namespace}/{self.name}"

    # -- what others ask ---------------------------------------------------
    def is_leader(self) -> bool:
        with self._lock:
            return self._leading and self.clock() - self._renewed_at < self.timings.renew_deadline

    def holder(self) -> str:
        """The holder as last observed ("" when released or unknown)."""
        obs = self._observation
        return obs.record.holder if obs is not None and obs.record is not None else ""

    def status(self) -> dict[str, object]:
        record = self._observation.record if self._observation else None
        return {"lease": self.lease, "identity": self.identity, "leader": self.is_leader(),
                "holder": self.holder() or None,
                "transitions": record.transitions if record else None,
                "leaderSince": self.leader_since, "problem": self.problem or None}

    # -- the loop ----------------------------------------------------------
    def start(self, supervisor: Supervisor | None = None) -> None:
        """``run`` on the ``leader-election`` thread; a crash ends the process (a dead
        elector never leads again: supervise.py). None: a supervisor of its own, which
        logs a crash and fails only its own readiness."""
        supervisor = supervisor if supervisor is not None else Supervisor()
        self.thread = supervisor.thread("leader-election", self.run, crash=Crash.EXIT,
                                        context={"lease": self.lease})

    def stop(self, *, release: bool = True, timeout: float = 5.0) -> None:
        """Stop electing; a leader steps down at once and, with ``release``, frees the lease."""
        self._stop.set()
        self._step_down("stopping")
        thread = self.thread
        if thread is not None and thread.is_alive() and threading.current_thread() is not thread:
            thread.join(timeout)
        if release:
            self._release()

    def run(self) -> None:
        log.info("leader election on lease %s as %r", self.lease, self.identity)
        while not self._stop.is_set():
            ok = self.try_once()
            self._check_deadline()
            if self._stop.is_set():
                return
            if ok and self.is_leader():
                delay = self.timings.renew
            else:
                delay = self.timings.retry * random.uniform(1.0, 1.2)
                # A follower also looks right when the lease it watches would expire,
                # not up to one retry later (after a failed round: the full retry).
                expiry = self._expires_in() if ok else None
                if expiry is not None:
                    delay = min(delay, expiry + 0.01)
            self._stop.wait(delay)

    def _expires_in(self) -> float | None:
        obs = self._observation
        if obs is None or obs.record is None or not obs.record.holder:
            return None
        return max(0.0, obs.since + obs.record.duration_seconds - self.clock())

    def try_once(self) -> bool:
        """Read the lease and create, renew, take over or follow it (one round).

        False when the round failed (API error, or a 409 because another
        replica wrote first): the caller looks again after the retry interval.
        """
        try:
            record = self._read()
            now = self.clock()
            self._observation = observe(self._observation, record, now)
            action = decide(self.identity, self._observation, now)
            if action is Action.FOLLOW:
                self._step_down(f"the lease is held by {record.holder if record else '?'}")
                self.problem = ""
                return True
            spec = lease_spec(self.identity, action, record,
                              duration=self.timings.duration, now=micro_time())
            sent_at = self.clock()
            written = self._write(action, record, spec)
        except ApiException as exc:
            if exc.status == 409:
                # Someone wrote in between. While our last renewal is younger than the
                # renew deadline nobody can have taken the lease (it expires later), so
                # a leader stays one until the next read says otherwise.
                log.info("lease %s changed while we wrote it; reading it again", self.lease)
                self.problem = ""
                return False
            problem = f"lease {self.lease}: API error {exc.status}: {exc.reason}"
            if exc.status == 404:  # the lease was absent and could not be created
                problem += (f" (does namespace {self.namespace} exist? Or pass --lease "
                            "NAMESPACE/NAME, or --no-leader-election for one replica)")
            elif exc.status == 403:
                problem += " (RBAC: get, create and update on this lease are needed)"
            return self._failed(problem)
        except Exception as exc:  # noqa: BLE001 - network trouble: try again next round
            return self._failed(f"lease {self.lease}: {type(exc).__name__}: {exc}")
        self.problem = ""
        self._observation = Observation(written, sent_at)
        self._won(sent_at, action)
        return True

    def _failed(self, problem: str) -> bool:
        if problem != self.problem:  # logged once per kind of trouble, not every round
            log.warning("%s; retrying every %.0fs%s", problem, self.timings.retry,
                        "" if self.is_leader() else "; status is not written meanwhile")
        self.problem = problem
        return False

    # -- state changes -----------------------------------------------------
    def _won(self, sent_at: float, action: Action) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            became = not self._leading
            self._leading = True
            # The renewal counts from when the request left, not when it came back.
            self._renewed_at = sent_at
        if became:
            self.transitions_seen += 1
            self.leader_since = time.time()
            log.info("became the leader (lease %s, %s): writing status", self.lease, action)
            if self.on_change is not None:
                self.on_change(True)

    def _step_down(self, why: str) -> bool:
        with self._lock:
            was = self._leading
            self._leading = False
        if was:
            self.leader_since = None
            log.warning("no longer the leader (%s): status writes stop", why)
            if self.on_change is not None:
                self.on_change(False)
        return was

    def _check_deadline(self) -> None:
        with self._lock:
            late = self._leading and (
                self.clock() - self._renewed_at >= self.timings.renew_deadline)
        if late:
            self._step_down(f"no renewal for {self.timings.renew_deadline:.0f}s")

    def _release(self) -> None:
        obs = self._observation
        if obs is None or obs.record is None or obs.record.holder != self.identity:
            return
        body = self._body(released_spec(obs.record, now=micro_time()), obs.record)
        try:
            self.coordination.replace_namespaced_lease(
                self.name, self.namespace, body, _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT)
            log.info("released lease %s", self.lease)
        except Exception as exc:  # noqa: BLE001 - the lease then expires on its own
            log.warning("could not release lease %s (%s); it expires in %ds", self.lease, exc,
                        self.timings.duration)

    # -- HTTP --------------------------------------------------------------
    def _read(self) -> LeaseRecord | None:
        resp: Any  # with _preload_content=False: the raw response
        try:
            resp = self.coordination.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return parse_lease(json.loads(resp.data))

    def _body(self, spec: dict[str, Any], record: LeaseRecord | None) -> Any:
        """The Lease as a dict (the client validates it into its ``V1Lease`` model)."""
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if record is not None:
            meta["resourceVersion"] = record.resource_version  # 409 if it changed since
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": spec}

    def _write(self, action: Action, record: LeaseRecord | None, spec: dict[str, Any]
               ) -> LeaseRecord:
        body = self._body(spec, record)
        resp: Any  # with _preload_content=False: the raw response
        if action is Action.CREATE:
            resp = self.coordination.create_namespaced_lease(
                self.namespace, body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        else:
            resp = self.coordination.replace_namespaced_lease(
                self.name, self.namespace, body, _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT)
        return parse_lease(json.loads(resp.data))


class LeaderCollector:
    """``dnscp_leader{identity,lease}``: 1 on the replica that writes status, 0 elsewhere."""

    def __init__(self, elector: LeaderElector) -> None:
        self.elector = elector

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        e = self.elector
        gauge = GaugeMetricFamily("dnscp_leader", "1 while this replica holds the status "
                                  "lease and writes DnsPolicy status, else 0",
                                  labels=["identity", "lease"])
        gauge.add_metric([e.identity, e.lease], 1.0 if e.is_leader() else 0.0)
        yield gauge
        yield CounterMetricFamily("dnscp_leader_acquisitions", "Times this replica became "
                                  "the leader", value=e.transitions_seen)
