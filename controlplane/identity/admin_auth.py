"""Who may read the admin API in a cluster (``serve --admin-auth kubernetes``).

The admin API shows every tenant's DNS table, the connected sidecars and the
recent queries: in a cluster it is not for every pod. As kube-rbac-proxy does,
each caller presents its *own* Kubernetes bearer token (``kubectl create token``
for a person behind ``kubectl port-forward``, the ServiceAccount token for
Prometheus), and the control plane asks the API server about it:

1. **Authentication**: a ``TokenReview`` (``authentication.k8s.io/v1``) of the
   token, with the audiences of ``--admin-auth-audience`` (default: the API
   server's own). No token, or one the API server does not accept: **401**.
2. **Authorisation**: a ``SubjectAccessReview`` (``authorization.k8s.io/v1``)
   for that user and its groups with **non-resource attributes**: ``verb`` is
   ``get`` (the admin API is read-only; other methods are their lowercase name)
   and ``path`` is the request path, e.g. ``/api/v1/views/acme/dns-table``.
   Not allowed: **403**, naming the user and what to grant.

   RBAC grants it with ``nonResourceURLs`` in a ClusterRole (deploy/rbac.yaml):
   - ``dns-controlplane-admin-reader``: ``get`` on ``/api/*``, ``/docs``,
     ``/openapi.json`` and ``/metrics``, for operators;
   - ``dns-controlplane-metrics-reader``: ``get`` on ``/metrics`` only, for
     Prometheus (kube-prometheus' own ``prometheus-k8s`` role already has it).
   Paths name the tenant, so ``/api/v1/views/acme/*`` gives one team its own
   tenant's view and nothing else.

   Why non-resource URLs rather than a resource (e.g. ``get dnspolicies/admin``):
   they are what the requests are, path for path, so a rule reads like the API
   and can be as narrow as one tenant's view; and they are kube-rbac-proxy's
   default, which Prometheus setups are already granted for ``/metrics``. The
   cost: non-resource URLs are cluster-wide names, so a ClusterRole granting
   ``/api/*`` or ``/metrics`` for another service's kube-rbac-proxy also opens
   these. Keep such grants narrow (documented in deploy/rbac.yaml).

Open without a token: ``/healthz`` and ``/readyz`` (the kubelet's probes carry
none and they reveal nothing). Paths with ``.`` or ``..`` segments are refused
(400) before any review, so a grant on a prefix cannot be walked out of.

Decisions are cached by the token's SHA-256 (never the token) and by (user,
groups, verb, path): allowed for ``allow_ttl`` (30 s), denied and unknown
tokens for ``deny_ttl`` (5 s), so a revoked token or binding stops working
within 30 s and a flood of bad tokens costs the API server one review per 5 s.
The API server unreachable, or refusing the control plane's own reviews:
**503** with the reason and ``Retry-After``; nothing is allowed that was not
allowed by a review in the last ``allow_ttl``, and errors are never cached.

This module decides; the calls to the API server are behind ``Reviewer``
(``sources/kube_admin_review.py`` in a cluster, a scripted fake in tests).
With ``--admin-tls-dir`` the admin API serves HTTPS, so the tokens do not
cross the pod network in clear (tlsfiles.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from controlplane.core.errors import AuthUnavailable
from controlplane.core.ttlcache import TtlCache

log = logging.getLogger("controlplane.identity.admin_auth")

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
ADMIN_ROLE = "dns-controlplane-admin-reader"
METRICS_ROLE = "dns-controlplane-metrics-reader"


@dataclass(frozen=True, slots=True)
class User:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class TokenResult:
    user: User | None  # None: not authenticated
    error: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    status: int  # 200 allowed, 400, 401, 403, 503
    reason: str = ""
    user: str = ""

    @property
    def allowed(self) -> bool:
        return self.status == 200


class Reviewer(Protocol):
    """The API server's answers; blocking calls, run in a thread."""

    def review_token(self, token: str) -> TokenResult: ...
    def review_access(self, user: User, *, verb: str, path: str) -> tuple[bool, str]: ...


def verb_of(method: str) -> str:
    return "get" if method.upper() in ("GET", "HEAD") else method.lower()


def bearer_token(header: str) -> str:
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class AdminAuthorizer:
    """Decides one request: open path, or TokenReview then SubjectAccessReview, cached."""

    def __init__(self, reviewer: Reviewer, *, allow_ttl: float = 30.0, deny_ttl: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, max_entries: int = 4096,
                 open_paths: frozenset[str] = OPEN_PATHS) -> None:
        self.reviewer = reviewer
        self.allow_ttl = allow_ttl
        self.deny_ttl = deny_ttl
        self.open_paths = open_paths
        self._tokens: TtlCache[bytes, TokenResult] = TtlCache(clock=clock,
                                                              max_entries=max_entries)
        self._access: TtlCache[tuple[User, str, str], tuple[bool, str]] = TtlCache(
            clock=clock, max_entries=max_entries)
        self.decisions: dict[int, int] = {}  # status -> count
        self.reviews = 0  # calls to the API server (both kinds)

    async def decide(self, *, authorization: str, method: str, path: str) -> Decision:
        decision = await self._decide(authorization, method, path)
        self.decisions[decision.status] = self.decisions.get(decision.status, 0) + 1
        return decision

    async def _decide(self, authorization: str, method: str, path: str) -> Decision:
        if path in self.open_paths:
            return Decision(200)
        if any(seg in (".", "..") for seg in path.split("/")):
            return Decision(400, f"path {path!r} has '.' or '..' segments")
        token = bearer_token(authorization)
        if not token:
            return Decision(401, "this admin API needs 'Authorization: Bearer <token>', a "
                            "Kubernetes token of a user or ServiceAccount allowed to read "
                            "it (kubectl create token ...)")
        key = hashlib.sha256(token.encode()).digest()
        result = self._tokens.get(key)
        if result is None:
            try:
                result = await self._review(self.reviewer.review_token, token)
            except AuthUnavailable as exc:
                log.warning("admin API request refused (503): %s", exc)
                return Decision(503, f"cannot authenticate the token now: {exc}")
            self._tokens.put(key, result, self.allow_ttl if result.user else self.deny_ttl)
        if result.user is None:
            return Decision(401, f"token not accepted by the Kubernetes API: "
                            f"{result.error or 'unauthenticated'}")
        user = result.user
        verb = verb_of(method)
        access = self._access.get((user, verb, path))
        if access is None:
            try:
                access = await self._review(self.reviewer.review_access, user, verb=verb,
                                            path=path)
            except AuthUnavailable as exc:
                log.warning("admin API request of %s refused (503): %s", user.name, exc)
                return Decision(503, f"cannot authorise the request now: {exc}", user.name)
            self._access.put((user, verb, path), access,
                             self.allow_ttl if access[0] else self.deny_ttl)
            if not access[0]:
                log.info("admin API: %s may not %s %s (%s)", user.name, verb, path,
                         access[1] or "no RBAC rule allows it")
        allowed, why = access
        if not allowed:
            role = METRICS_ROLE if path == "/metrics" else ADMIN_ROLE
            return Decision(403, f"user {user.name!r} may not {verb} {path} on the DNS "
                            f"control plane admin API (nonResourceURLs; see the ClusterRole "
                            f"{role})" + (f": {why}" if why else ""), user.name)
        return Decision(200, "", user.name)

    async def _review(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.reviews += 1
        return await asyncio.to_thread(call, *args, **kwargs)


class AdminAuthMiddleware:
    """ASGI middleware: every HTTP request passes :class:`AdminAuthorizer` first."""

    def __init__(self, app: ASGIApp, authorizer: AdminAuthorizer) -> None:
        self.app = app
        self.authorizer = authorizer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        decision = await self.authorizer.decide(
            authorization=headers.get("authorization", ""), method=scope["method"],
            path=scope["path"])
        if decision.allowed:
            await self.app(scope, receive, send)
            return
        extra: dict[str, str] = {}
        if decision.status == 401:
            extra["WWW-Authenticate"] = 'Bearer realm="dns-controlplane"'
        elif decision.status == 503:
            extra["Retry-After"] = "5"
        response = JSONResponse({"detail": decision.reason}, status_code=decision.status,
                                headers=extra)
        await response(scope, receive, send)


class AuthCollector:
    """Prometheus counters of the admin API's authorisation decisions."""

    def __init__(self, authorizer: AdminAuthorizer) -> None:
        self.authorizer = authorizer

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        decisions = CounterMetricFamily(
            "dnscp_admin_auth_decisions", "Admin API requests by authorisation outcome "
            "(200 allowed or open, 400, 401 no/unknown token, 403 not allowed, 503 API "
            "server unavailable)", labels=["code"])
        for status, n in sorted(self.authorizer.decisions.items()):
            decisions.add_metric([str(status)], n)
        yield decisions
        yield CounterMetricFamily("dnscp_admin_auth_reviews",
                                  "TokenReviews and SubjectAccessReviews sent (cache misses)",
                                  value=self.authorizer.reviews)
