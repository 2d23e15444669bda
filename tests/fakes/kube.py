"""A fake Kubernetes API server that speaks the real list/watch wire protocol.

HTTP lists with ``metadata.resourceVersion``; watches as chunked JSON lines
(``ADDED``/``MODIFIED``/``DELETED``/``BOOKMARK``/``ERROR``) from a
resourceVersion, ``410 Gone`` once that version is compacted away; the
``/status`` subresource; discovery (``/api``, ``/apis``). The real
``kubernetes`` client talks to it over a socket, so the code under test is
the code that runs against a cluster.

Faults for tests: ``down()``/``up()`` (every request 503 and open watches
closed), ``fail(resource, status, count)``, ``forbid(resource)``,
``stall(resource)`` (lists hang until released), ``compact()``,
``isolate(token)``/``rejoin(token)`` (one client, told apart by its bearer
token, gets 503 as if cut off).

Leases (``coordination.k8s.io/v1``, always served): get, create, update and
delete, with the real API's optimistic concurrency (an update whose
``resourceVersion`` is stale, or a create of an existing lease, is 409) and
its MicroTime format; ``lease_writes`` and ``status_write_log`` record who
wrote what, and when. Unlike a real API server it does not require the
lease's namespace to exist.

Reviews (always served, create only): ``tokenreviews`` answer for the tokens
given to ``add_token``/``add_service_account_token`` (audiences checked as the
API server does); ``subjectaccessreviews`` are decided by real RBAC objects
given to ``apply_rbac`` (e.g. deploy/rbac.yaml; see tests/fakes/rbac.py).
``reviews`` records each (plural, spec); faults apply (``down``, ``isolate``,
``forbid``/``fail`` of ``tokenreviews`` or ``subjectaccessreviews``).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import re
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

from controlplane._kit.localrun import free_port
from tests.fakes import rbac

API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"  # the API server's own


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


LEASES = "/apis/coordination.k8s.io/v1"
_MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")


@dataclass(frozen=True)
class LeaseWrite:
    """One accepted create or update of a Lease, and who made it."""

    at: float  # time.monotonic()
    client: str  # bearer token
    verb: str  # create | update
    name: str
    holder: str


def _client(request: Request) -> str:
    """The caller's bearer token: how these tests tell replicas apart."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else ""


def _lease_problem(body: dict[str, Any], namespace: str, name: str | None) -> str:
    """What the real API server would reject in a Lease body (a subset of its validation)."""
    meta = body.get("metadata") or {}
    if not meta.get("name"):
        return "metadata.name: Required value"
    if name is not None and meta["name"] != name:
        return "metadata.name: the name of the object does not match the name in the URL"
    if meta.get("namespace") not in (None, namespace):
        return "metadata.namespace: does not match the namespace in the URL"
    spec = body.get("spec") or {}
    for field_ in ("acquireTime", "renewTime"):
        value = spec.get(field_)
        # MicroTime: RFC 3339 with exactly six fractional digits, or the API rejects it.
        if value is not None and not (isinstance(value, str) and _MICRO_TIME.match(value)):
            return f"spec.{field_}: {value!r} is not a MicroTime"
    for field_ in ("leaseDurationSeconds", "leaseTransitions"):
        value = spec.get(field_)
        if value is not None and (not isinstance(value, int) or value < 0
                                  or (field_ == "leaseDurationSeconds" and value == 0)):
            return f"spec.{field_}: Invalid value: {value!r}"
    holder = spec.get("holderIdentity")
    if holder is not None and not isinstance(holder, str):
        return f"spec.holderIdentity: Invalid value: {holder!r}"
    return ""


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
        # Who wrote each status: (time.monotonic(), bearer token of the client, name).
        self.status_write_log: list[tuple[float, str, str]] = []
        self._leases: dict[tuple[str, str], dict[str, Any]] = {}  # (namespace, name)
        self.lease_writes: list[LeaseWrite] = []
        self._isolated: set[str] = set()  # bearer tokens cut off from the API
        self._tokens: dict[str, dict[str, Any]] = {}  # token -> {"user": ..., "audiences": [...]}
        self._rbac: list[dict[str, Any]] = []  # (Cluster)Role(Binding)s for access reviews
        self.reviews: list[tuple[str, dict[str, Any]]] = []  # (plural, spec) of each review
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> FakeKube:
        routes = [Route("/api", self._api), Route("/api/", self._api),
                  Route("/apis", self._apis), Route("/apis/", self._apis),
                  Route(f"{LEASES}/namespaces/{{namespace}}/leases", self._lease_create,
                        methods=["POST"]),
                  Route(f"{LEASES}/namespaces/{{namespace}}/leases/{{name}}", self._lease,
                        methods=["GET", "PUT", "DELETE"]),
                  Route("/apis/authentication.k8s.io/v1/tokenreviews", self._review,
                        methods=["POST"]),
                  Route("/apis/authorization.k8s.io/v1/subjectaccessreviews", self._review,
                        methods=["POST"]),
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

    def kubeconfig(self, directory: Path, *, token: str = "test") -> Path:
        """A kubeconfig for this server; ``token`` tells clients apart (status_write_log)."""
        path = directory / "kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": token}}],
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

    def isolate(self, token: str) -> None:
        """Cut one client (by its bearer token) off: its requests get 503 until ``rejoin``."""
        self._isolated.add(token)

    def rejoin(self, token: str) -> None:
        self._isolated.discard(token)

    def lease(self, name: str, namespace: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self._leases.get((namespace, name))
            return copy.deepcopy(obj) if obj else None

    def status_writes_by(self, token: str) -> list[tuple[float, str]]:
        """(time.monotonic(), object name) of every status write made with ``token``."""
        return [(t, name) for t, who, name in self.status_write_log if who == token]

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
                if len(rest) == 3 and rest[1] == r.plural:
                    return r, f"{rest[0]}/{rest[2]}", False
        return None

    async def _dispatch(self, request: Request) -> Response:
        path = request.path_params["path"]
        self.requests.append((request.method, "/" + path, str(request.query_params)))
        route = self._route(path)
        if route is None:
            return JSONResponse(_status(404, "NotFound", f"the server could not find /{path}"),
                                status_code=404)
        res, name, is_status = route
        if self._down or _client(request) in self._isolated:
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
        if name is not None:  # GET of one object (or its status subresource)
            namespace, _, short = name.rpartition("/")
            with self._lock:
                one = self._objects.get((res.key, namespace, short))
                one = copy.deepcopy(one) if one else None
            if one is None:
                return JSONResponse(_status(404, "NotFound", f'{res.plural} "{short}" not '
                                            "found"), 404)
            return JSONResponse(one)
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
            self.status_write_log.append((time.monotonic(), _client(request), name))
            return JSONResponse(copy.deepcopy(obj))

    # -- TokenReview and SubjectAccessReview (served always) -----------------------------
    def add_token(self, token: str, *, username: str, groups: tuple[str, ...] = (),
                  uid: str = "", extra: dict[str, list[str]] | None = None,
                  audiences: tuple[str, ...] = (API_AUDIENCE,)) -> None:
        """A token that TokenReview accepts for ``username`` (and only for ``audiences``)."""
        user: dict[str, Any] = {"username": username, "uid": uid or f"uid-{username}",
                                "groups": [*groups, "system:authenticated"]}
        if extra:
            user["extra"] = extra
        self._tokens[token] = {"user": user, "audiences": list(audiences)}

    def add_service_account_token(self, token: str, namespace: str, name: str, **kw: Any
                                  ) -> None:
        self.add_token(token, username=f"system:serviceaccount:{namespace}:{name}",
                       groups=("system:serviceaccounts", f"system:serviceaccounts:{namespace}"),
                       **kw)

    # Sidecar identity (controlplane/identity/tokenreview.py): projected tokens bound to a Pod.
    def add_pod_token(self, token: str, namespace: str, pod: str, *,
                      service_account: str = "default",
                      audiences: tuple[str, ...] = (API_AUDIENCE,)) -> None:
        """A projected ServiceAccount token of Pod ``namespace/pod`` (applied before), as
        the kubelet mounts it: TokenReview names the pod (name and uid) in ``user.extra``."""
        obj = self.get("Pod", pod, namespace)
        uid = str((obj or {}).get("metadata", {}).get("uid") or f"uid-{namespace}-{pod}")
        self.add_service_account_token(
            token, namespace, service_account, audiences=audiences, extra={
                "authentication.kubernetes.io/pod-name": [pod],
                "authentication.kubernetes.io/pod-uid": [uid],
                "authentication.kubernetes.io/credential-id": [f"JTI=jti-{len(self._tokens)}"],
                "authentication.kubernetes.io/node-name": ["node-1"]})

    def expire_token(self, token: str) -> None:
        """TokenReview now answers as for an expired token (the API server's wording)."""
        self._tokens[token]["error"] = ("[invalid bearer token, service account token has "
                                        "expired]")

    def revoke_token(self, token: str) -> None:
        """Forget a token (its pod deleted, its ServiceAccount recreated): unknown now."""
        self._tokens.pop(token, None)

    def token_review_count(self) -> int:
        return sum(1 for plural, _ in self.reviews if plural == "tokenreviews")

    def apply_rbac(self, *objects: dict[str, Any]) -> None:
        """ClusterRoles, Roles and their bindings that SubjectAccessReviews are decided by."""
        for obj in objects:
            if obj and obj.get("kind") in ("ClusterRole", "Role", "ClusterRoleBinding",
                                           "RoleBinding"):
                self._rbac.append(copy.deepcopy(obj))

    async def _review(self, request: Request) -> Response:
        plural = request.url.path.rsplit("/", 1)[1]
        self.requests.append((request.method, request.url.path, ""))
        if self._down or _client(request) in self._isolated:
            return JSONResponse(_status(503, "ServiceUnavailable", "apiserver is down"), 503)
        if plural in self._forbidden:
            return JSONResponse(_status(403, "Forbidden", f"{plural} is forbidden: User cannot "
                                        "create resource"), 403)
        queued = self._fail.get(plural)
        if queued:
            code = queued.pop(0)
            return JSONResponse(_status(code, "InternalError", "injected failure"), code)
        body = json.loads(await request.body())
        spec = body.get("spec") or {}
        self.reviews.append((plural, copy.deepcopy(spec)))
        if plural == "tokenreviews":
            entry = self._tokens.get(str(spec.get("token") or ""))
            wanted = list(spec.get("audiences") or [API_AUDIENCE])
            matched = [a for a in wanted if entry and a in entry["audiences"]]
            if entry is None:
                status: dict[str, Any] = {"authenticated": False,
                                          "error": "invalid bearer token"}
            elif entry.get("error"):  # expire_token: known, but no longer valid
                status = {"authenticated": False, "error": entry["error"]}
            elif not matched:
                status = {"authenticated": False,
                          "error": "invalid bearer token, token audiences "
                                   f"{entry['audiences']} is invalid for the target audiences "
                                   f"{wanted}"}
            else:
                status = {"authenticated": True, "user": entry["user"], "audiences": matched}
        else:
            with self._lock:
                allowed, reason = rbac.authorize(self._rbac, spec)
            status = {"allowed": allowed, **({"reason": reason} if reason else {})}
        return JSONResponse({**body, "metadata": {"creationTimestamp": None}, "spec": spec,
                             "status": status}, 201)

    # -- coordination.k8s.io/v1 Lease (served always, as by a real API server) -----------
    def _lease_refusal(self, request: Request) -> Response | None:
        """The faults (down, isolate, forbid/fail "leases") as the real API would answer."""
        self.requests.append((request.method, request.url.path, str(request.query_params)))
        if self._down or _client(request) in self._isolated:
            return JSONResponse(_status(503, "ServiceUnavailable", "apiserver is down"), 503)
        if "leases" in self._forbidden:
            return JSONResponse(_status(403, "Forbidden", "leases.coordination.k8s.io is "
                                        "forbidden: User cannot access resource"), 403)
        queued = self._fail.get("leases")
        if queued:
            code = queued.pop(0)
            return JSONResponse(_status(code, "InternalError", "injected failure"), code)
        return None

    async def _lease_body(self, request: Request, namespace: str, name: str | None
                          ) -> dict[str, Any] | Response:
        try:
            body = json.loads(await request.body())
        except json.JSONDecodeError as exc:
            return JSONResponse(_status(400, "BadRequest", f"invalid JSON: {exc}"), 400)
        meta = body.get("metadata") or {}
        problem = _lease_problem(body, namespace, name)
        if problem:
            return JSONResponse(_status(422 if "spec." in problem else 400,
                                        "Invalid" if "spec." in problem else "BadRequest",
                                        f'Lease.coordination.k8s.io "{meta.get("name")}" is '
                                        f"invalid: {problem}"), 422 if "spec." in problem else 400)
        return dict(body)

    def _lease_store(self, request: Request, verb: str, namespace: str,
                     body: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        """Store ``body`` as the lease (lock held): a new resourceVersion, kept metadata."""
        meta = dict(body.get("metadata") or {})
        rv = next(self._rv)
        self._last_rv = rv
        meta.update({"namespace": namespace, "resourceVersion": str(rv)})
        if old is not None:
            for kept in ("uid", "creationTimestamp"):
                meta[kept] = old["metadata"][kept]
        else:
            meta["uid"] = f"uid-lease-{namespace}-{meta['name']}"
            meta["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        obj = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
               "spec": dict(body.get("spec") or {})}
        self._leases[(namespace, meta["name"])] = obj
        self.lease_writes.append(LeaseWrite(time.monotonic(), _client(request), verb,
                                            meta["name"],
                                            str(obj["spec"].get("holderIdentity") or "")))
        return copy.deepcopy(obj)

    async def _lease_create(self, request: Request) -> Response:
        refusal = self._lease_refusal(request)
        if refusal is not None:
            return refusal
        namespace = request.path_params["namespace"]
        body = await self._lease_body(request, namespace, None)
        if isinstance(body, Response):
            return body
        name = body["metadata"]["name"]
        with self._lock:
            if (namespace, name) in self._leases:
                return JSONResponse(_status(409, "AlreadyExists",
                                            f'leases.coordination.k8s.io "{name}" already '
                                            "exists"), 409)
            if body["metadata"].get("resourceVersion"):
                return JSONResponse(_status(400, "BadRequest", "resourceVersion should not "
                                            "be set on objects to be created"), 400)
            return JSONResponse(self._lease_store(request, "create", namespace, body, None),
                                201)

    async def _lease(self, request: Request) -> Response:
        refusal = self._lease_refusal(request)
        if refusal is not None:
            return refusal
        namespace, name = request.path_params["namespace"], request.path_params["name"]
        not_found = JSONResponse(_status(404, "NotFound", f'leases.coordination.k8s.io '
                                         f'"{name}" not found'), 404)
        if request.method == "GET":
            found = self.lease(name, namespace)
            return JSONResponse(found) if found else not_found
        if request.method == "DELETE":
            with self._lock:
                if self._leases.pop((namespace, name), None) is None:
                    return not_found
            return JSONResponse({"kind": "Status", "apiVersion": "v1", "status": "Success"})
        body = await self._lease_body(request, namespace, name)
        if isinstance(body, Response):
            return body
        with self._lock:
            old = self._leases.get((namespace, name))
            if old is None:  # leases do not allow create-on-update
                return not_found
            sent = str(body["metadata"].get("resourceVersion") or "")
            if sent and sent != old["metadata"]["resourceVersion"]:
                return JSONResponse(_status(
                    409, "Conflict", f'Operation cannot be fulfilled on leases.coordination.'
                    f'k8s.io "{name}": the object has been modified; please apply your '
                    "changes to the latest version and try again"), 409)
            return JSONResponse(self._lease_store(request, "update", namespace, body, old))

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
