"""Writes ``status`` of our CRDs (DnsPolicy, ServiceEntry) through ``/status``, rate-limited.

The writer holds the latest desired status per policy and writes it when it
differs from what it last wrote (ignoring ``lastTransitionTime``), at most
once per ``min_interval`` per policy and ``max_per_second`` overall; bursts
coalesce into the latest state. A status write changes only ``status``, so
the watch event it causes parses to the same model object and triggers no
recompute: no write loops.

With several replicas it writes only while ``may_write()`` (the leader
elector, ``leader.py``) says so, asked before every write; ``take_over()``
on winning the lease writes every object's current status once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controlplane.dns.status import merge_transition_times, without_times
from controlplane.runtime.supervise import Crash, Supervisor
from controlplane.sources.kubernetes import POLICY_GROUP

log = logging.getLogger("controlplane.dns.status")

StatusKey = tuple[str, str, str]  # plural, namespace ("" when cluster-scoped), name


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StatusWriter:
    def __init__(self, api: k8s.ApiClient, stop: threading.Event, *,
                 min_interval: float = 1.0, max_per_second: float = 20.0,
                 clock: Callable[[], float] = time.monotonic,
                 may_write: Callable[[], bool] | None = None) -> None:
        self.custom = k8s.CustomObjectsApi(api)
        self.stop = stop
        # Asked before every write (the leader elector's is_leader); None: always write.
        self.may_write = may_write or (lambda: True)
        self.min_interval = min_interval
        self.gap = 1.0 / max_per_second
        self.clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._desired: dict[StatusKey, dict[str, Any]] = {}
        self._written: dict[StatusKey, dict[str, Any]] = {}
        self._last_write: dict[StatusKey, float] = {}
        self._full: dict[StatusKey, dict[str, Any]] = {}  # last written status, with times
        self.writes = 0
        self.thread: threading.Thread | None = None

    def start(self, supervisor: Supervisor | None = None) -> None:
        """``run`` on the ``status-writer`` thread; a crash ends the process (status would
        never be written again: supervise.py). None: a supervisor of its own, which logs
        a crash and fails only its own readiness."""
        supervisor = supervisor if supervisor is not None else Supervisor()
        self.thread = supervisor.thread("status-writer", self.run, crash=Crash.EXIT)

    def update(self, desired: Mapping[StatusKey, dict[str, Any]]) -> None:
        """Record the desired status of every object (thread-safe, cheap)."""
        with self._lock:
            self._desired = dict(desired)
        self._wake.set()

    def take_over(self) -> None:
        """Leadership was just won: write every object's current status once.

        What this replica wrote before may have been overwritten by another
        leader since, so it forgets it; each object's status as the API holds
        it is read before its first write, to keep its lastTransitionTimes.
        """
        with self._lock:
            self._written.clear()
            self._full.clear()
        self._wake.set()

    def _due(self) -> tuple[list[StatusKey], float]:
        now = self.clock()
        due, wait = [], 3600.0
        with self._lock:
            for name, status in sorted(self._desired.items()):
                if self._written.get(name) == without_times(status):
                    continue
                ready_at = self._last_write.get(name, -1e9) + self.min_interval
                if ready_at <= now:
                    due.append(name)
                else:
                    wait = min(wait, ready_at - now)
        return due, wait

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.may_write():  # a follower: wait to be woken (take_over) or look again
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            due, wait = self._due()
            for name in due:
                if self.stop.is_set() or not self.may_write():
                    break
                self._write(name)
                self.stop.wait(self.gap)
            if not due:
                self._wake.wait(timeout=min(wait, 5.0))
                self._wake.clear()

    def _write(self, key: StatusKey) -> None:
        plural, namespace, name = key
        what = f"{plural} {namespace + '/' if namespace else ''}{name}"
        with self._lock:
            desired = self._desired.get(key)
            previous = self._written.get(key)
        if desired is None:
            return
        if key not in self._full:  # first write since start or take-over: keep the API's times
            self._full[key] = self._current(key)
        body = {"status": merge_transition_times(desired, self._full.get(key), _now())}
        if not self.may_write():  # leadership lost meanwhile: not one more write
            return
        self._last_write[key] = self.clock()
        try:
            if namespace:
                self.custom.patch_namespaced_custom_object_status(
                    POLICY_GROUP, "v1alpha1", namespace, plural, name, body)
            else:
                self.custom.patch_cluster_custom_object_status(
                    POLICY_GROUP, "v1alpha1", plural, name, body)
        except ApiException as exc:
            if exc.status == 404:
                log.info("%s is gone; status not written", what)
                with self._lock:
                    self._desired.pop(key, None)
                return
            log.warning("%s: status write failed (%s %s); will retry", what, exc.status,
                        exc.reason)
            return
        except Exception as exc:  # noqa: BLE001 - network trouble: retry on the next round
            log.warning("%s: status write failed (%s); will retry", what, exc)
            return
        self.writes += 1
        with self._lock:
            self._written[key] = without_times(desired)
            self._full[key] = body["status"]
        if previous is None or previous.get("ready") != desired.get("ready"):
            log.info("%s status: ready=%s", what, desired.get("ready"))

    def _current(self, key: StatusKey) -> dict[str, Any]:
        """The object's status as the API holds it ({} when it cannot be read)."""
        plural, namespace, name = key
        try:
            if namespace:
                obj = self.custom.get_namespaced_custom_object(
                    POLICY_GROUP, "v1alpha1", namespace, plural, name, _request_timeout=(2, 5))
            else:
                obj = self.custom.get_cluster_custom_object(
                    POLICY_GROUP, "v1alpha1", plural, name, _request_timeout=(2, 5))
        except Exception:  # noqa: BLE001 - then the conditions' times start now
            return {}
        status = obj.get("status") if isinstance(obj, dict) else None
        return dict(status) if isinstance(status, dict) else {}
