"""The Kubernetes source: list and watch each kind, feed the same ``Store`` as files.

One thread per kind, so a slow or stuck kind never holds the others. Each
watcher:

1. lists the kind and applies the *difference* to the store (a relist never
   empties the store first, so nothing vanishes and comes back);
2. watches from the list's ``resourceVersion`` with bookmarks, applying each
   event and remembering the newest version seen;
3. on ``410 Gone`` relists (step 1); on any other error or disconnect backs
   off with jitter and watches again from the last version; the store keeps
   what it had, so the last configuration keeps serving.

Optional kinds (Pods, Istio's ServiceEntry) that the API does not serve, or
that RBAC forbids, are reported in ``/readyz`` details and skipped; the rest
works. This module and the status writer are the only code that talks to the
Kubernetes API.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from controlplane.core.errors import InputError, WatchExpired
from controlplane.core.inventory import Key
from controlplane.core.manifests import Ignored, parse_object
from controlplane.runtime import heap as runtime
from controlplane.runtime.supervise import Crash, Supervisor
from controlplane.store.store import Store

log = logging.getLogger("controlplane.sources.kubernetes")

POLICY_GROUP = "networking.example.com"
ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")


@dataclass(frozen=True)
class WatchedKind:
    kind: str
    group: str
    version: str
    plural: str
    namespaced: bool
    optional: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def origin(self) -> str:
        return f"kubernetes:{self.plural}.{self.group or 'core'}"


CORE_KINDS = (
    WatchedKind("Namespace", "", "v1", "namespaces", namespaced=False),
    WatchedKind("Service", "", "v1", "services", namespaced=True),
    WatchedKind("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", namespaced=True),
    WatchedKind("DnsPolicy", POLICY_GROUP, "v1alpha1", "dnspolicies", namespaced=False),
    WatchedKind("ServiceEntry", POLICY_GROUP, "v1alpha1", "serviceentries", namespaced=True,
                optional=True),
)
POD_KIND = WatchedKind("Pod", "", "v1", "pods", namespaced=True, optional=True)


@dataclass
class Backoff:
    """Exponential backoff with full jitter in [delay/2, delay]."""

    base: float = 0.2
    cap: float = 30.0
    attempt: int = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * (2 ** self.attempt))
        self.attempt += 1
        return float(delay * random.uniform(0.5, 1.0))

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class KindState:
    kind: WatchedKind
    synced: bool = False
    disabled: str = ""  # why an optional kind is skipped
    problem: str = ""  # the last error, cleared on success
    resource_version: str = ""
    relists: int = 0
    versions: dict[Key, str] = field(default_factory=dict)  # key -> resourceVersion


def _object_key(kind: WatchedKind, obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    ns = (meta.get("namespace") or "default") if kind.namespaced else ""
    return (kind.kind, ns, str(meta.get("name", "")))


class KindWatcher:
    """List+watch one kind in its own thread."""

    def __init__(self, kind: WatchedKind, api: k8s.ApiClient, store: Store,
                 notify: Callable[[], None], stop: threading.Event, *,
                 watch_timeout: int = 60, backoff: Backoff | None = None) -> None:
        self.state = KindState(kind)
        self.kind = kind
        self.api = api
        self.store = store
        self.notify = notify
        self.stop = stop
        self.watch_timeout = watch_timeout
        self.backoff = backoff or Backoff()
        self.thread: threading.Thread | None = None

    def start(self, supervisor: Supervisor) -> None:
        """``run`` on its own thread, ``watch-<plural>``; a crash ends the process (a dead
        watch would leave this kind stale; a restart lists it again: supervise.py)."""
        self.thread = supervisor.thread(f"watch-{self.kind.plural}", self.run, crash=Crash.EXIT,
                                        context={"kind": self.kind.origin})

    # -- HTTP --------------------------------------------------------------
    def _list_function(self) -> Callable[..., Any]:
        k = self.kind
        if k.group == "" and k.plural == "namespaces":
            return k8s.CoreV1Api(self.api).list_namespace
        if k.group == "" and k.plural == "services":
            return k8s.CoreV1Api(self.api).list_service_for_all_namespaces
        if k.group == "" and k.plural == "pods":
            return k8s.CoreV1Api(self.api).list_pod_for_all_namespaces
        if k.group == "discovery.k8s.io":
            return k8s.DiscoveryV1Api(self.api).list_endpoint_slice_for_all_namespaces
        custom = k8s.CustomObjectsApi(self.api).list_cluster_custom_object
        return lambda **kw: custom(k.group, k.version, k.plural, **kw)

    def list(self) -> tuple[list[dict[str, Any]], str]:
        resp = self._list_function()(_preload_content=False, _request_timeout=(5, 60))
        payload = json.loads(resp.data)
        return list(payload.get("items") or []), str(payload["metadata"].get("resourceVersion", ""))

    # -- state -------------------------------------------------------------
    def _apply(self, obj: dict[str, Any], *, seen_at: float | None = None,
               decoded: float = 0.0) -> bool:
        """Apply one object; ``seen_at``: when its event arrived (wall time), ``decoded``:
        the time its JSON took (both travel with the change, see ``Store``)."""
        started = time.perf_counter()
        key = _object_key(self.kind, obj)
        rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        if self.state.versions.get(key) == rv:
            return False
        self.state.versions[key] = rv
        doc = dict(obj)
        doc.setdefault("apiVersion", self.kind.api_version)
        doc.setdefault("kind", self.kind.kind)
        result = parse_object(doc, origin=f"kubernetes {self.kind.plural}")
        if isinstance(result, Ignored):
            return False
        if isinstance(result, InputError):
            log.error("%s", result, extra={"object": result.object_ref})
        return self.store.apply_object(
            self.kind.origin, key, result, seen_at=seen_at,
            parse_seconds=decoded + time.perf_counter() - started)

    def _delete(self, obj: dict[str, Any], *, seen_at: float | None = None) -> bool:
        key = _object_key(self.kind, obj)
        self.state.versions.pop(key, None)
        changed = self.store.delete_object(self.kind.origin, key)
        if changed and seen_at is not None:
            self.store.seen(seen_at)
        return changed

    def relist(self) -> None:
        with runtime.quiet():  # a large list allocates a lot: no full collection midway
            self._relist()

    def _relist(self) -> None:
        items, rv = self.list()
        changed = False
        seen = set()
        for obj in items:
            seen.add(_object_key(self.kind, obj))
            changed |= self._apply(obj)
        for key in self.store.keys(self.kind.origin) - seen:
            self.state.versions.pop(key, None)
            changed |= self.store.delete_object(self.kind.origin, key)
        self.state.resource_version = rv
        self.state.relists += 1
        first = not self.state.synced
        self.state.synced = True
        if changed or first:
            self.notify()
        log.info("%s: listed %d objects at resourceVersion %s", self.kind.plural, len(items), rv)

    def watch_once(self) -> None:
        """One watch request, until the server ends it. Raises WatchExpired on 410."""
        kwargs: dict[str, Any] = {"watch": True, "allow_watch_bookmarks": True,
                                  "timeout_seconds": self.watch_timeout,
                                  "_preload_content": False,
                                  "_request_timeout": (5, self.watch_timeout + 15)}
        if self.state.resource_version:
            kwargs["resource_version"] = self.state.resource_version
        resp = self._list_function()(**kwargs)
        try:
            for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                if self.stop.is_set():
                    return
                seen_at, started = time.time(), time.perf_counter()
                event = json.loads(line)
                etype, obj = event.get("type"), event.get("object") or {}
                if etype == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchExpired(obj.get("message", "resourceVersion expired"))
                    raise ApiException(status=obj.get("code", 500), reason=obj.get("message"))
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if etype == "BOOKMARK":
                    self.state.resource_version = str(rv)
                    continue
                changed = (self._delete(obj, seen_at=seen_at) if etype == "DELETED" else
                           self._apply(obj, seen_at=seen_at,
                                       decoded=time.perf_counter() - started))
                if rv:
                    self.state.resource_version = str(rv)
                self.state.problem = ""
                self.backoff.reset()
                if changed:
                    self.notify()
        finally:
            resp.release_conn()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                if not self.state.synced:
                    self.relist()
                    self.backoff.reset()
                    self.state.problem = ""
                self.watch_once()
            except WatchExpired as exc:
                log.info("%s: %s; relisting", self.kind.plural, exc)
                self._relist_keeping_ready()
            except ApiException as exc:
                if exc.status in (403, 404) and self.kind.optional:
                    self.state.disabled = (
                        f"{self.kind.plural}.{self.kind.group or 'core'}: "
                        f"{'forbidden by RBAC' if exc.status == 403 else 'not served'}; skipped")
                    log.warning("%s", self.state.disabled)
                    self.notify()
                    return
                self._fail(f"API error {exc.status}: {exc.reason}")
            except Exception as exc:  # noqa: BLE001 - any network failure: back off, keep serving
                self._fail(f"{type(exc).__name__}: {exc}")

    def _relist_keeping_ready(self) -> None:
        try:
            self.relist()
        except Exception as exc:  # noqa: BLE001
            self._fail(f"relist failed: {type(exc).__name__}: {exc}")

    def _fail(self, problem: str) -> None:
        delay = self.backoff.next()
        self.state.problem = problem
        log.warning("%s: %s; retrying in %.1fs, the last configuration keeps serving",
                    self.kind.plural, problem, delay)
        self.stop.wait(delay)


def discover_kinds(api: k8s.ApiClient, *, watch_pods: bool) -> tuple[list[WatchedKind], list[str]]:
    """The kinds to watch, from API discovery, and notes on what is missing."""
    notes = []
    kinds = list(CORE_KINDS)
    groups = {g.name: [v.version for v in g.versions]
              for g in k8s.ApisApi(api).get_api_versions().groups}
    if POLICY_GROUP not in groups:
        notes.append(f"the {POLICY_GROUP} API is not installed: apply the CRDs in api/")
    istio = next((v for v in ISTIO_VERSIONS if v in groups.get(ISTIO_GROUP, [])), None)
    if istio:
        kinds.append(WatchedKind("ServiceEntry", ISTIO_GROUP, istio, "serviceentries",
                                 namespaced=True, optional=True))
    else:
        notes.append(f"{ISTIO_GROUP} is not served: Istio ServiceEntries are not watched")
    if watch_pods:
        kinds.append(POD_KIND)
    return kinds, notes


class KubernetesSource:
    """All watchers of one cluster, and their readiness."""

    def __init__(self, api: k8s.ApiClient, store: Store, notify: Callable[[], None], *,
                 watch_pods: bool = False, watch_timeout: int = 60,
                 backoff_base: float = 0.2) -> None:
        self.api = api
        self.store = store
        self.notify = notify
        self.stop_event = threading.Event()
        self.watch_pods = watch_pods
        self.watch_timeout = watch_timeout
        self.backoff_base = backoff_base
        self.watchers: list[KindWatcher] = []
        self.notes: list[str] = []

    def start(self, supervisor: Supervisor | None = None) -> None:
        """Discover the kinds and start a watcher for each, under ``supervisor`` (None: one
        of its own, which logs a crash and fails only its own readiness)."""
        supervisor = supervisor if supervisor is not None else Supervisor()
        kinds, self.notes = discover_kinds(self.api, watch_pods=self.watch_pods)
        for note in self.notes:
            log.warning("%s", note)
        for kind in kinds:
            w = KindWatcher(kind, self.api, self.store, self.notify, self.stop_event,
                            watch_timeout=self.watch_timeout,
                            backoff=Backoff(base=self.backoff_base))
            self.watchers.append(w)
            w.start(supervisor)

    def stop(self) -> None:
        self.stop_event.set()

    @property
    def ready(self) -> bool:
        return bool(self.watchers) and all(
            w.state.synced or w.state.disabled for w in self.watchers)

    def not_ready_reason(self) -> str:
        waiting = [w.kind.plural + (f" ({w.state.problem})" if w.state.problem else "")
                   for w in self.watchers if not (w.state.synced or w.state.disabled)]
        return "waiting for the initial list of " + ", ".join(waiting) if waiting else ""

    def status(self) -> dict[str, object]:
        return {
            "kind": "kubernetes",
            "notes": list(self.notes),
            "kinds": {
                w.kind.origin: {
                    "synced": w.state.synced, "resourceVersion": w.state.resource_version,
                    "relists": w.state.relists, "problem": w.state.problem or None,
                    "disabled": w.state.disabled or None,
                } for w in self.watchers
            },
        }
