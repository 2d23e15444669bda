"""A fake Kubernetes API server that speaks the real list/watch wire protocol.

HTTP lists with ``metadata.resourceVersion``; watches as chunked JSON lines
(``ADDED``/``MODIFIED``/``DELETED``/``BOOKMARK``/``ERROR``) from a
resourceVersion, ``410 Gone`` once that version is compacted away; the
``/status`` subresource; discovery (``/api``, ``/apis``). The real
``kubernetes`` client talks to it over a socket, so the code under test is
the code that runs against a cluster.

Faults for tests: ``down()``/``up()`` (every request 503 and open watches
closed), ``fail(resource, status, count)``, ``forbid(resource)``,
``stall(resource)`` (lists hang until released), ``compact()``.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from controlplane.localrun import free_port


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


CORE = [
    Resource("", "v1", "namespaces", "Namespace", False),
    Resource("", "v1", "services", "Service", True),
    Resource("", "v1", "pods", "Pod", True),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
]
OURS = [
    Resource("networking.example.com", "v1alpha1", "dnspolicies", "DnsPolicy", False),
    Resource("networking.example.com", "v1alpha1", "serviceentries", "ServiceEntry", True),
]
ISTIO = [Resource("networking.istio.io", "v1", "serviceentries", "ServiceEntry", True)]


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


@dataclass
class _Event:
    rv: int
    resource: Resource
    type: str
    obj: dict[str, Any]


@dataclass
class FakeKube:
    resources: list[Resource] = field(default_factory=lambda: CORE + OURS)
    bookmark_interval: float = 0.5
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._rv = itertools.count(100)
        self._last_rv = 99
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._events: list[_Event] = []
        self._compacted = 0
        self._down = False
        self._fail: dict[str, list[int]] = {}
        self._forbidden: set[str] = set()
        self._stalled: dict[str, threading.Event] = {}
        self._generation = 0  # bumps on down() to end open watches
        self.requests: list[tuple[str, str, str]] = []  # (method, path, query)
        self.status_writes: list[tuple[str, dict[str, Any]]] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> FakeKube:
        routes = [Route("/api", self._api), Route("/api/", self._api),
                  Route("/apis", self._apis), Route("/apis/", self._apis),
                  Route("/{path:path}", self._dispatch, methods=["GET", "PATCH", "PUT"])]
        app = Starlette(routes=routes)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake API server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        for ev in self._stalled.values():
            ev.set()
        if self._server is not None:
            self._server.should_exit = True
            self._generation += 1
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "test"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }))
        return path

    # -- objects (what tests call instead of kubectl) ------------------------
    def _resource(self, kind: str, api_version: str | None = None) -> Resource:
        for r in self.resources:
            if r.kind == kind and (api_version is None or r.api_version == api_version):
                return r
        raise KeyError(kind)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object (spec changes bump metadata.generation)."""
        obj = copy.deepcopy(obj)
        res = self._resource(obj["kind"], obj.get("apiVersion"))
        meta = obj.setdefault("metadata", {})
        if not res.namespaced:
            meta.pop("namespace", None)
        else:
            meta.setdefault("namespace", "default")
        key = (res.key, meta.get("namespace", ""), meta["name"])
        with self._lock:
            old = self._objects.get(key)
            rv = next(self._rv)
            self._last_rv = rv
            meta["resourceVersion"] = str(rv)
            meta.setdefault("uid", f"uid-{key[1]}-{key[2]}")
            if old is None:
                meta["generation"] = 1
                event = "ADDED"
            else:
                same_spec = {k: v for k, v in old.items() if k not in ("metadata", "status")} == {
                    k: v for k, v in obj.items() if k not in ("metadata", "status")}
                meta["generation"] = old["metadata"]["generation"] + (0 if same_spec else 1)
                if "status" in old and "status" not in obj:
                    obj["status"] = old["status"]
                event = "MODIFIED"
            self._objects[key] = obj
            self._events.append(_Event(rv, res, event, copy.deepcopy(obj)))
        return obj

    def delete(self, kind: str, name: str, namespace: str = "", api_version: str | None = None
               ) -> None:
        res = self._resource(kind, api_version)
        key = (res.key, namespace if res.namespaced else "", name)
        with self._lock:
            obj = self._objects.pop(key)
            rv = next(self._rv)
            self._last_rv = rv
            obj["metadata"]["resourceVersion"] = str(rv)
            self._events.append(_Event(rv, res, "DELETED", copy.deepcopy(obj)))

    def get(self, kind: str, name: str, namespace: str = "") -> dict[str, Any] | None:
        res = self._resource(kind)
        with self._lock:
            obj = self._objects.get((res.key, namespace if res.namespaced else "", name))
            return copy.deepcopy(obj) if obj else None

    # -- faults ------------------------------------------------------------
    def down(self) -> None:
        self._down = True
        self._generation += 1

    def up(self) -> None:
        self._down = False

    def fail(self, plural: str, status: int, count: int = 1) -> None:
        self._fail.setdefault(plural, []).extend([status] * count)

    def forbid(self, plural: str) -> None:
        self._forbidden.add(plural)

    def stall(self, plural: str) -> threading.Event:
        ev = threading.Event()
        self._stalled[plural] = ev
        return ev

    def compact(self) -> None:
        with self._lock:
            self._compacted = self._last_rv

    # -- HTTP --------------------------------------------------------------
    async def _api(self, request: Request) -> Response:
        return JSONResponse({"kind": "APIVersions", "versions": ["v1"]})

    async def _apis(self, request: Request) -> Response:
        groups: dict[str, list[str]] = {}
        for r in self.resources:
            if r.group:
                groups.setdefault(r.group, [])
                if r.version not in groups[r.group]:
                    groups[r.group].append(r.version)
        return JSONResponse({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
             "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
            for g, vs in groups.items()]})

    def _route(self, path: str) -> tuple[Resource, str | None, bool] | None:
        """(resource, object name, is status) for a request path."""
        for r in self.resources:
            base = r.prefix.lstrip("/") + "/" + r.plural
            if path == base:
                return r, None, False
            if path.startswith(base + "/"):
                rest = path[len(base) + 1:].split("/")
                if len(rest) == 2 and rest[1] == "status":
                    return r, rest[0], True
                if len(rest) == 1:
                    return r, rest[0], False
            ns_base = r.prefix.lstrip("/") + "/namespaces/"
            if r.namespaced and path.startswith(ns_base):
                rest = path[len(ns_base):].split("/")
                if len(rest) == 4 and rest[1] == r.plural and rest[3] == "status":
                    return r, f"{rest[0]}/{rest[2]}", True
        return None

    async def _dispatch(self, request: Request) -> Response:
        path = request.path_params["path"]
        self.requests.append((request.method, "/" + path, str(request.query_params)))
        route = self._route(path)
        if route is None:
            return JSONResponse(_status(404, "NotFound", f"the server could not find /{path}"),
                                status_code=404)
        res, name, is_status = route
        if self._down:
            return JSONResponse(_status(503, "ServiceUnavailable", "apiserver is down"),
                                status_code=503)
        if res.plural in self._forbidden:
            return JSONResponse(_status(403, "Forbidden", f"{res.plural} is forbidden: "
                                        "User cannot list resource"), status_code=403)
        queued = self._fail.get(res.plural)
        if queued:
            code = queued.pop(0)
            return JSONResponse(_status(code, "InternalError", "injected failure"),
                                status_code=code)
        if request.method in ("PATCH", "PUT") and is_status and name:
            return await self._write_status(request, res, name)
        if request.method != "GET":
            return JSONResponse(_status(405, "MethodNotAllowed", "not supported"), 405)
        if request.query_params.get("watch") in ("true", "1"):
            return await self._watch(request, res)
        stall = self._stalled.get(res.plural)
        if stall is not None:
            await asyncio.to_thread(stall.wait)
        with self._lock:
            items = [copy.deepcopy(o) for (rkey, _, _), o in sorted(self._objects.items())
                     if rkey == res.key]
            rv = self._last_rv
        return JSONResponse({"kind": f"{res.kind}List", "apiVersion": res.api_version,
                             "metadata": {"resourceVersion": str(rv)}, "items": items})

    async def _write_status(self, request: Request, res: Resource, name: str) -> Response:
        body = json.loads(await request.body())
        namespace, _, name = name.rpartition("/")
        key = (res.key, namespace, name)
        with self._lock:
            obj = self._objects.get(key)
            if obj is None:
                return JSONResponse(_status(404, "NotFound", f"{name} not found"), 404)
            obj["status"] = body.get("status", {})
            rv = next(self._rv)
            self._last_rv = rv
            obj["metadata"]["resourceVersion"] = str(rv)
            self._events.append(_Event(rv, res, "MODIFIED", copy.deepcopy(obj)))
            self.status_writes.append((name, copy.deepcopy(obj["status"])))
            return JSONResponse(copy.deepcopy(obj))

    async def _watch(self, request: Request, res: Resource) -> Response:
        q = request.query_params
        since = int(q.get("resourceVersion") or 0)
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(q.get("timeoutSeconds") or 300)
        generation = self._generation

        async def stream() -> AsyncIterator[bytes]:
            if since and since < self._compacted:
                yield (json.dumps({"type": "ERROR", "object": _status(
                    410, "Expired", f"too old resource version: {since} "
                    f"({self._compacted})")}) + "\n").encode()
                return
            sent = since
            deadline = time.monotonic() + timeout
            last_bookmark = time.monotonic()
            while time.monotonic() < deadline and generation == self._generation:
                with self._lock:
                    pending = [e for e in self._events if e.rv > sent and e.resource == res]
                    current = self._last_rv
                for e in pending:
                    yield (json.dumps({"type": e.type, "object": e.obj}) + "\n").encode()
                    sent = e.rv
                if bookmarks and time.monotonic() - last_bookmark > self.bookmark_interval:
                    last_bookmark = time.monotonic()
                    sent = max(sent, current)
                    yield (json.dumps({"type": "BOOKMARK", "object": {
                        "kind": res.kind, "apiVersion": res.api_version,
                        "metadata": {"resourceVersion": str(sent)}}}) + "\n").encode()
                await asyncio.sleep(0.01)

        return StreamingResponse(stream(), media_type="application/json")
