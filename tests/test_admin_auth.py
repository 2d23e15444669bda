"""The admin API in a cluster: TokenReview + SubjectAccessReview, kube-rbac-proxy style.

Two halves: the decision logic with a scripted reviewer (a fake of our own
``Reviewer`` interface: cases, caching, failures), then the real
``kubernetes`` client against tests/fakes/kube.py, whose SubjectAccessReviews
are decided by the ClusterRoles of deploy/admin-access.yaml.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.admin.api import create_app
from controlplane.admin.reads import AdminReads
from controlplane.core.errors import AuthUnavailable
from controlplane.core.settings import Settings
from controlplane.hub.hub import Hub
from controlplane.identity.admin_auth import AdminAuthorizer, AuthCollector, TokenResult, User
from controlplane.kube.admin_review import KubeReviewer
from controlplane.kube.runner import api_client
from tests.factories import bearer, inventory
from tests.fakes.kube import FakeKube

ROOT = Path(__file__).resolve().parents[1]

# -- the decision logic, with a scripted reviewer ------------------------------------------

OPERATOR = User("alice", "u1", ("ops", "system:authenticated"))
TENANT = User("system:serviceaccount:acme:default", "u2",
              ("system:serviceaccounts", "system:serviceaccounts:acme"))
PROMETHEUS = User("system:serviceaccount:monitoring:prometheus-k8s", "u3")


class ScriptedReviewer:
    """Answers like the API server would for three tokens and a few grants."""

    def __init__(self) -> None:
        self.users = {"op-token": OPERATOR, "tenant-token": TENANT, "prom-token": PROMETHEUS}
        self.grants = {("alice", "/api/"), ("alice", "/metrics"), (PROMETHEUS.name, "/metrics")}
        self.calls: list[tuple[str, str]] = []
        self.down = False

    def review_token(self, token: str) -> TokenResult:
        self.calls.append(("token", token))
        if self.down:
            raise AuthUnavailable("TokenReview API unreachable: connection refused")
        user = self.users.get(token)
        return TokenResult(user, "" if user else "invalid bearer token")

    def review_access(self, user: User, *, verb: str, path: str) -> tuple[bool, str]:
        self.calls.append(("access", f"{user.name} {verb} {path}"))
        if self.down:
            raise AuthUnavailable("SubjectAccessReview API unreachable")
        allowed = verb == "get" and any(user.name == u and path.startswith(p)
                                        for u, p in self.grants)
        return allowed, "RBAC: allowed" if allowed else ""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("authorization", "method", "path", "status", "reason"), [
    ("", "GET", "/healthz", 200, ""),  # probes: open
    ("", "GET", "/readyz", 200, ""),
    ("", "GET", "/api/v1/nodes", 401, "needs 'Authorization: Bearer"),
    ("Basic b3A6cHc=", "GET", "/api/v1/nodes", 401, "needs 'Authorization: Bearer"),
    ("Bearer nope", "GET", "/api/v1/nodes", 401, "invalid bearer token"),
    ("Bearer tenant-token", "GET", "/api/v1/views/foo/dns-table", 403,
     "may not get /api/v1/views/foo/dns-table"),
    ("Bearer tenant-token", "GET", "/metrics", 403, "dns-controlplane-metrics-reader"),
    ("Bearer op-token", "GET", "/api/v1/views/foo/dns-table", 200, ""),
    ("bearer op-token", "HEAD", "/api/v1/nodes", 200, ""),  # HEAD is get
    ("Bearer op-token", "POST", "/api/v1/nodes", 403, "may not post"),
    ("Bearer op-token", "GET", "/api/v1/views/acme/../../nodes", 400, "'..'"),
    ("Bearer prom-token", "GET", "/metrics", 200, ""),
    ("Bearer prom-token", "GET", "/api/v1/nodes", 403, "dns-controlplane-admin-reader"),
])
def test_decisions(authorization: str, method: str, path: str, status: int,
                   reason: str) -> None:
    auth = AdminAuthorizer(ScriptedReviewer())
    decision = asyncio.run(auth.decide(authorization=authorization, method=method, path=path))
    assert decision.status == status, decision
    assert reason in decision.reason


def test_decisions_are_cached_briefly_and_failures_never() -> None:
    reviewer, clock = ScriptedReviewer(), Clock()
    auth = AdminAuthorizer(reviewer, allow_ttl=30, deny_ttl=5, clock=clock)

    def decide(token: str, path: str = "/api/v1/nodes") -> int:
        return asyncio.run(auth.decide(authorization=f"Bearer {token}", method="GET",
                                       path=path)).status

    assert decide("op-token") == 200 and len(reviewer.calls) == 2  # TokenReview + SAR
    assert decide("op-token") == 200 and len(reviewer.calls) == 2  # both cached
    assert decide("op-token", "/metrics") == 200 and len(reviewer.calls) == 3  # new path
    assert decide("tenant-token") == 403 and len(reviewer.calls) == 5
    clock.now += 6  # the denial (5 s) expired, the allowance (30 s) did not
    assert decide("tenant-token") == 403 and len(reviewer.calls) == 6  # SAR only: token cached
    assert decide("op-token") == 200 and len(reviewer.calls) == 6
    assert decide("nope") == 401 and decide("nope") == 401 and len(reviewer.calls) == 7
    reviewer.down = True
    assert decide("op-token") == 200  # a review of the last 30 s still stands
    assert decide("prom-token", "/metrics") == 503  # nothing new is allowed
    clock.now += 31
    assert decide("op-token") == 503  # expired: not allowed without the API
    reviewer.down = False
    assert decide("prom-token", "/metrics") == 200  # the 503 was not cached
    assert auth.decisions[503] == 2
    metrics = {m.name: m for m in AuthCollector(auth).collect()}
    codes = {s.labels["code"]: s.value for s in metrics["dnscp_admin_auth_decisions"].samples}
    assert codes["503"] == 2 and codes["401"] == 2


def test_token_never_kept_in_clear() -> None:
    auth = AdminAuthorizer(ScriptedReviewer())
    asyncio.run(auth.decide(authorization="Bearer op-token", method="GET", path="/api/v1/x"))
    assert "op-token" not in repr(auth._tokens._items)  # keys are SHA-256 digests


# -- the admin app, the real kubernetes client and the fake API server ----------------------

def test_tenant_gets_403_operator_gets_the_data(admin_kube: FakeKube, tmp_path: Path) -> None:
    asyncio.run(_tenant_and_operator(admin_kube, tmp_path))


async def _with_client(kube: FakeKube, tmp_path: Path, **kw: Any) -> tuple[
        httpx.AsyncClient, AdminAuthorizer]:
    hub = Hub(Settings())
    hub.set_inventory(inventory())
    hub.readiness.loaded()
    auth = AdminAuthorizer(KubeReviewer(api_client(str(kube.kubeconfig(tmp_path)), None),
                                        **kw))
    app = create_app(AdminReads.of_hub(hub), auth=auth, collectors=[AuthCollector(auth)])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                             base_url="http://admin"), auth


async def _tenant_and_operator(kube: FakeKube, tmp_path: Path) -> None:
    c, _ = await _with_client(kube, tmp_path)
    async with c:
        table = "/api/v1/views/foo/dns-table"
        # the isolation hole of the issue: a pod of tenant acme reads tenant foo's table
        r = await c.get(table, headers=bearer("tenant-token"))
        assert r.status_code == 403, r.text
        assert "system:serviceaccount:acme:default" in r.json()["detail"]
        for path in ("/api/v1/nodes", "/api/v1/views", "/api/v1/queries", "/metrics",
                     "/docs", "/openapi.json"):
            assert (await c.get(path, headers=bearer("tenant-token"))).status_code == 403
        # an operator bound to dns-controlplane-admin-reader gets the data
        r = await c.get(table, headers=bearer("op-token"))
        assert r.status_code == 200, r.text
        assert r.json()["tenant"] == "foo" and "web.foo.svc.cluster.local" in r.text
        for path in ("/api/v1/nodes", "/api/v1/views", "/metrics", "/openapi.json"):
            assert (await c.get(path, headers=bearer("op-token"))).status_code == 200, path
        # no token, or one the API does not know
        r = await c.get(table)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = await c.get(table, headers=bearer("made-up"))
        assert r.status_code == 401 and "invalid bearer token" in r.json()["detail"]
        # probes stay open
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/readyz")).status_code == 200
        # /metrics: Prometheus's ServiceAccount yes, and nothing else
        r = await c.get("/metrics", headers=bearer("prom-token"))
        assert r.status_code == 200 and "dnscp_admin_auth_decisions_total" in r.text
        assert (await c.get("/api/v1/nodes", headers=bearer("prom-token"))).status_code == 403
        # a team granted its own tenant's paths sees that and nothing more
        assert (await c.get("/api/v1/views/acme/dns-table",
                            headers=bearer("acme-team-token"))).status_code == 200
        assert (await c.get(table, headers=bearer("acme-team-token"))).status_code == 403

    # what the control plane asked: the token, then non-resource attributes of the user
    sar = [spec for plural, spec in kube.reviews if plural == "subjectaccessreviews"]
    op = next(s for s in sar if s["user"] == "alice")
    assert op["nonResourceAttributes"] == {"path": table, "verb": "get"}
    assert set(op["groups"]) == {"ops", "system:authenticated"}
    assert "resourceAttributes" not in op


def test_reviews_are_cached(admin_kube: FakeKube, tmp_path: Path) -> None:
    async def run() -> None:
        c, _ = await _with_client(admin_kube, tmp_path)
        async with c:
            for _ in range(5):
                r = await c.get("/api/v1/nodes", headers=bearer("op-token"))
                assert r.status_code == 200
        assert [p for p, _ in admin_kube.reviews] == ["tokenreviews", "subjectaccessreviews"]
    asyncio.run(run())


@pytest.mark.parametrize(("fault", "expected"), [
    ("down", "TokenReview failed: the API server answered 503"),
    ("forbid tokenreviews", "needs create on tokenreviews"),
    ("forbid subjectaccessreviews", "needs create on subjectaccessreviews"),
    ("fail subjectaccessreviews", "SubjectAccessReview failed: the API server answered 500"),
])
def test_api_trouble_is_503_with_the_reason(admin_kube: FakeKube, tmp_path: Path, fault: str,
                                            expected: str) -> None:
    verb, _, plural = fault.partition(" ")
    if verb == "down":
        admin_kube.down()
    elif verb == "forbid":
        admin_kube.forbid(plural)
    else:
        admin_kube.fail(plural, 500, count=10)

    async def run() -> None:
        c, _ = await _with_client(admin_kube, tmp_path)
        async with c:
            r = await c.get("/api/v1/nodes", headers=bearer("op-token"))
            assert r.status_code == 503, r.text
            assert expected in r.json()["detail"] and r.headers["retry-after"] == "5"
            assert (await c.get("/healthz")).status_code == 200  # probes do not depend on it
    asyncio.run(run())


def test_api_unreachable_is_503(tmp_path: Path) -> None:
    gone = FakeKube().start()
    config = gone.kubeconfig(tmp_path)
    gone.stop()

    async def run() -> None:
        hub = Hub(Settings())
        auth = AdminAuthorizer(KubeReviewer(api_client(str(config), None), timeout=1.0))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(
                AdminReads.of_hub(hub), auth=auth)), base_url="http://admin") as c:
            r = await c.get("/metrics", headers=bearer("prom-token"))
            assert r.status_code == 503 and "unreachable" in r.json()["detail"], r.text
    asyncio.run(run())


def test_audiences(admin_kube: FakeKube, tmp_path: Path) -> None:
    async def run() -> None:
        c, _ = await _with_client(admin_kube, tmp_path, audiences=("dns-controlplane",))
        async with c:
            # alice's token is for the API server; carol's was made for the control plane
            r = await c.get("/api/v1/nodes", headers=bearer("op-token"))
            assert r.status_code == 401 and "audiences" in r.json()["detail"]
            assert (await c.get("/api/v1/nodes", headers=bearer("aud-token"))).status_code == 200
        token_reviews = [s for p, s in admin_kube.reviews if p == "tokenreviews"]
        assert all(s["audiences"] == ["dns-controlplane"] for s in token_reviews)
    asyncio.run(run())
