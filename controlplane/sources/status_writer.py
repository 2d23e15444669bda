"""Writes DnsPolicy ``status`` through the ``/status`` subresource, rate-limited.

The writer holds the latest desired status per policy and writes it when it
differs from what it last wrote (ignoring ``lastTransitionTime``), at most
once per ``min_interval`` per policy and ``max_per_second`` overall; bursts
coalesce into the latest state. A status write changes only ``status``, so
the watch event it causes parses to the same model object and triggers no
recompute: no write loops.
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

from controlplane.sources.kubernetes import POLICY_GROUP
from controlplane.status import merge_transition_times, without_times

log = logging.getLogger("controlplane.status")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StatusWriter:
    def __init__(self, api: k8s.ApiClient, stop: threading.Event, *,
                 min_interval: float = 1.0, max_per_second: float = 20.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.custom = k8s.CustomObjectsApi(api)
        self.stop = stop
        self.min_interval = min_interval
        self.gap = 1.0 / max_per_second
        self.clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._desired: dict[str, dict[str, Any]] = {}
        self._written: dict[str, dict[str, Any]] = {}
        self._last_write: dict[str, float] = {}
        self._full: dict[str, dict[str, Any]] = {}  # last written status, with times
        self.writes = 0
        self.thread = threading.Thread(target=self.run, name="status-writer", daemon=True)

    def update(self, desired: Mapping[str, dict[str, Any]]) -> None:
        """Record the desired status of every policy (thread-safe, cheap)."""
        with self._lock:
            self._desired = dict(desired)
        self._wake.set()

    def _due(self) -> tuple[list[str], float]:
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
            due, wait = self._due()
            for name in due:
                if self.stop.is_set():
                    return
                self._write(name)
                self.stop.wait(self.gap)
            if not due:
                self._wake.wait(timeout=min(wait, 5.0))
                self._wake.clear()

    def _write(self, name: str) -> None:
        with self._lock:
            desired = self._desired.get(name)
            previous = self._written.get(name)
        if desired is None:
            return
        body = {"status": merge_transition_times(desired, self._full.get(name), _now())}
        self._last_write[name] = self.clock()
        try:
            self.custom.patch_cluster_custom_object_status(
                POLICY_GROUP, "v1alpha1", "dnspolicies", name, body)
        except ApiException as exc:
            if exc.status == 404:
                log.info("DnsPolicy %s is gone; status not written", name)
                with self._lock:
                    self._desired.pop(name, None)
                return
            log.warning("DnsPolicy %s: status write failed (%s %s); will retry", name,
                        exc.status, exc.reason)
            return
        except Exception as exc:  # noqa: BLE001 - network trouble: retry on the next round
            log.warning("DnsPolicy %s: status write failed (%s); will retry", name, exc)
            return
        self.writes += 1
        with self._lock:
            self._written[name] = without_times(desired)
            self._full[name] = body["status"]
        if previous is None or previous.get("ready") != desired.get("ready"):
            log.info("DnsPolicy %s status: ready=%s", name, desired.get("ready"))
