"""Sidecar identity in Kubernetes: the pod's projected ServiceAccount token, checked
with the TokenReview API (``serve --auth-tokenreview --auth-audience dns-controlplane``).

The sidecar sends its pod's projected token (audience: the control plane) as
``authorization: Bearer <token>``. The control plane asks the API server about
it with a TokenReview whose ``spec.audiences`` are ``--auth-audience``, so a
token minted for anything else (the API server, another service) is refused.
The answer names the pod the token is bound to
(``user.extra["authentication.kubernetes.io/pod-name"]`` and ``pod-uid``) and
its ServiceAccount (``system:serviceaccount:<ns>:<sa>``). The pod's namespace
and labels then come from the API (the Pod watch when ``--watch-pods`` has the
pod, else a ``get`` whose uid must match the token's), never from the node
metadata: the node must claim exactly that namespace and those labels, or the
stream ends with PERMISSION_DENIED before any resource (``auth.authorize``).

Refusals: no token, not a JWT, unknown, expired, wrong audience, not a
ServiceAccount, not bound to a pod, pod gone or recreated -> UNAUTHENTICATED.
The API server unreachable -> UNAVAILABLE (Envoy retries); streams that are up
are not affected, since a stream is authenticated once, when it starts.

Cache: a successful review is kept for ``ttl`` seconds (and never past the
token's own ``exp``), a refusal for ``negative_ttl``, keyed by the token's
SHA-256 (the token itself is not kept), at most ``max_entries`` (least recently
used evicted). Concurrent streams with the same token share one review, and at
most ``concurrency`` reviews run at once, so a reconnect storm costs at most one
review per pod, and none for pods seen within ``ttl``. Failures to reach the
API are never cached. So a revoked token (its pod deleted) stops opening
streams within ``ttl``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from controlplane.core.errors import AuthUnavailable, ConfigError, Unauthenticated
from controlplane.core.model import Labels, labels_of
from controlplane.core.settings import AuthSettings
from controlplane.core.ttlcache import TtlCache
from controlplane.identity.auth import (
    MISSING_TOKEN,
    Authenticator,
    FirstOf,
    Identity,
    Metadata,
    TokenAuthenticator,
    bearer_token,
)

log = logging.getLogger("controlplane.identity.tokenreview")

POD_NAME = "authentication.kubernetes.io/pod-name"
POD_UID = "authentication.kubernetes.io/pod-uid"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
DEFAULT_AUDIENCE = "dns-controlplane"


class IdentityApi(Protocol):
    """The API server's side (controlplane/kube/identity.py); blocking calls
    that raise ``AuthUnavailable`` when the API server cannot answer."""

    def review(self, token: str, audiences: Sequence[str]) -> dict[str, Any]: ...
    def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class PodClaim:
    """What a TokenReview says about a token bound to a pod."""

    namespace: str
    service_account: str
    pod: str
    pod_uid: str

    def __str__(self) -> str:
        return f"pod {self.namespace}/{self.pod}"


# -- pure: review status -> claim, token -> expiry --------------------------------------
def pod_claim(status: Mapping[str, Any], audiences: Sequence[str]) -> PodClaim:
    """The pod a reviewed token is bound to; ``Unauthenticated`` says why there is none."""
    if not status.get("authenticated"):
        raise Unauthenticated(f"token refused by TokenReview: "
                              f"{status.get('error') or 'not authenticated'}")
    granted = [str(a) for a in status.get("audiences") or []]
    if audiences and not set(granted) & set(audiences):  # the API must echo one of ours
        raise Unauthenticated(f"token is for audiences {granted}, not {list(audiences)}")
    user = status.get("user") or {}
    username = str(user.get("username") or "")
    namespace, _, account = username.removeprefix(SERVICE_ACCOUNT_PREFIX).partition(":")
    if not username.startswith(SERVICE_ACCOUNT_PREFIX) or not namespace or not account:
        raise Unauthenticated(f"token of {username!r} is not a ServiceAccount token")
    extra = user.get("extra") or {}
    pods = [str(p) for p in extra.get(POD_NAME) or []]
    uids = [str(u) for u in extra.get(POD_UID) or []]
    if len(pods) != 1 or len(uids) != 1:
        raise Unauthenticated(f"token of serviceaccount {namespace}/{account} is not bound to "
                              "a pod (mount a projected serviceAccountToken)")
    return PodClaim(namespace, account, pods[0], uids[0])


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, unverified: only ever used to cache *less* long."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and all(token.split("."))


def pod_identity(claim: PodClaim, labels: Labels) -> Identity:
    return Identity(name=f"{claim} (serviceaccount {claim.service_account})",
                    namespace=claim.namespace, labels=labels, bind_labels=True,
                    pod=claim.pod)


def labels_from_pod(claim: PodClaim, pod: Mapping[str, Any] | None) -> Labels:
    """The labels of the token's pod as read from the API; refused if gone or recreated."""
    if pod is None:
        raise Unauthenticated(f"{claim} of the token does not exist")
    meta = pod.get("metadata") or {}
    if str(meta.get("uid") or "") != claim.pod_uid:
        raise Unauthenticated(f"{claim} was recreated: the token is for uid {claim.pod_uid}, "
                              f"the pod is {meta.get('uid')}")
    return labels_of({str(k): str(v) for k, v in (meta.get("labels") or {}).items()})


@dataclass(frozen=True, slots=True)
class _Entry:
    claim: PodClaim | None  # None: refused
    labels: Labels | None  # from a Pod get; None: read from the inventory at each use
    refusal: str = ""


# -- the authenticator ------------------------------------------------------------------
class TokenReviewAuthenticator:
    """An ``auth.Authenticator`` for pods' projected ServiceAccount tokens."""

    def __init__(self, api: IdentityApi, *, audiences: Sequence[str] = (DEFAULT_AUDIENCE,),
                 pod_labels: Callable[[str, str], Labels | None] | None = None,
                 ttl: float = 60.0, negative_ttl: float = 5.0, max_entries: int = 10_000,
                 concurrency: int = 8, clock: Callable[[], float] = time.time) -> None:
        self.api = api
        self.audiences = tuple(audiences)
        self.pod_labels = pod_labels  # the Pod watch's view (namespace, name) -> labels
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._clock = clock
        # reviews by token hash: bounded, least recently used out, each with its lifetime
        self.cache: TtlCache[bytes, _Entry] = TtlCache(clock=clock, max_entries=max_entries)
        self._inflight: dict[bytes, asyncio.Future[_Entry]] = {}
        self._pool = ThreadPoolExecutor(max_workers=concurrency,
                                        thread_name_prefix="tokenreview")
        self.reviews = 0  # TokenReviews sent
        self.pod_reads = 0  # Pods read from the API (not in the inventory)
        self.cache_hits = 0
        self.outcomes: collections.Counter[str] = collections.Counter()

    async def identify(self, metadata: Metadata) -> Identity:
        try:
            identity = await self._identify(metadata)
        except Unauthenticated:
            self.outcomes["refused"] += 1
            raise
        except AuthUnavailable:
            self.outcomes["unavailable"] += 1
            raise
        self.outcomes["accepted"] += 1
        return identity

    async def _identify(self, metadata: Metadata) -> Identity:
        token = bearer_token(metadata)
        if not token:
            raise Unauthenticated(MISSING_TOKEN)
        if not looks_like_jwt(token):  # not worth a review: no ServiceAccount token
            raise Unauthenticated("the bearer token is not a ServiceAccount token (a JWT)")
        key = hashlib.sha256(token.encode()).digest()
        entry = self.cache.get(key)
        if entry is not None:
            self.cache_hits += 1
        else:
            pending = self._inflight.get(key)
            if pending is None:  # the first stream with this token reviews it
                pending = asyncio.ensure_future(self._review(token, key))
                self._inflight[key] = pending
                pending.add_done_callback(self._reviewed)
            else:
                self.cache_hits += 1
            entry = await asyncio.shield(pending)
        if entry.claim is None:
            raise Unauthenticated(entry.refusal)
        labels = entry.labels
        if labels is None:
            labels = self._inventory_labels(entry.claim)
            if labels is None:  # left the inventory since: ask the API
                labels = (await self._read_pod(entry.claim)).labels or ()
        return pod_identity(entry.claim, labels)

    async def _review(self, token: str, key: bytes) -> _Entry:
        loop = asyncio.get_running_loop()
        self.reviews += 1
        status = await loop.run_in_executor(self._pool, self.api.review, token,
                                            self.audiences)  # AuthUnavailable: not cached
        try:
            claim = pod_claim(status, self.audiences)
            entry = (_Entry(claim, None) if self._inventory_labels(claim) is not None
                     else await self._read_pod(claim))
        except Unauthenticated as exc:
            self.cache.put(key, _Entry(None, None, str(exc)), self.negative_ttl)
            raise
        expiry = token_expiry(token)
        ttl = self.ttl if expiry is None else min(self.ttl, expiry - self._clock())
        self.cache.put(key, entry, ttl)
        log.debug("token of %s accepted (cached %.0fs)", claim, max(ttl, 0))
        return entry

    def _reviewed(self, done: asyncio.Future[_Entry]) -> None:
        self._inflight = {k: f for k, f in self._inflight.items() if f is not done}
        if not done.cancelled():
            done.exception()  # retrieved here too: every waiter may have gone away

    def _inventory_labels(self, claim: PodClaim) -> Labels | None:
        return self.pod_labels(claim.namespace, claim.pod) if self.pod_labels else None

    async def _read_pod(self, claim: PodClaim) -> _Entry:
        loop = asyncio.get_running_loop()
        self.pod_reads += 1
        pod = await loop.run_in_executor(self._pool, self.api.read_pod, claim.namespace,
                                         claim.pod)
        return _Entry(claim, labels_from_pod(claim, pod))

    def stats(self) -> dict[str, int]:
        return {"reviews": self.reviews, "pod_reads": self.pod_reads,
                "cache_hits": self.cache_hits, "cached": len(self.cache),
                **{f"streams_{k}": v for k, v in self.outcomes.items()}}


class TokenReviewCollector:
    """Prometheus metrics of sidecar identity (for the admin API's /metrics)."""

    def __init__(self, authenticator: TokenReviewAuthenticator) -> None:
        self.authenticator = authenticator

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        a = self.authenticator
        outcomes = CounterMetricFamily(
            "dnscp_sidecar_auth_streams", "ADS streams presenting a pod token, by outcome "
            "(accepted; refused: UNAUTHENTICATED; unavailable: TokenReview API down)",
            labels=["outcome"])
        for outcome in ("accepted", "refused", "unavailable"):
            outcomes.add_metric([outcome], a.outcomes[outcome])
        yield outcomes
        yield CounterMetricFamily("dnscp_sidecar_token_reviews",
                                  "TokenReviews sent for sidecar tokens (cache misses)",
                                  value=a.reviews)
        yield CounterMetricFamily("dnscp_sidecar_pod_reads",
                                  "Pods read from the API for a token (not in the Pod watch)",
                                  value=a.pod_reads)
        yield CounterMetricFamily("dnscp_sidecar_auth_cache_hits",
                                  "Sidecar tokens answered from the review cache",
                                  value=a.cache_hits)
        yield GaugeMetricFamily("dnscp_sidecar_auth_cache_entries",
                                "Reviews (accepted and refused) in the cache", value=len(a.cache))


def identity_collectors(authenticator: Authenticator | None) -> list[object]:
    """The metrics collectors of ``authenticator`` (and of those it chains)."""
    chain = authenticator.authenticators if isinstance(authenticator, FirstOf) else [
        authenticator]
    return [TokenReviewCollector(a) for a in chain if isinstance(a, TokenReviewAuthenticator)]


def token_authenticators(authenticator: Authenticator | None) -> list[TokenAuthenticator]:
    """The static token files in ``authenticator`` (and those it chains)."""
    chain = authenticator.authenticators if isinstance(authenticator, FirstOf) else [
        authenticator]
    return [a for a in chain if isinstance(a, TokenAuthenticator)]



def authenticator_from_settings(settings: AuthSettings, identity_api: IdentityApi | None, *,
                                pod_labels: Callable[[str, str], Labels | None] | None = None
                                ) -> Authenticator | None:
    """The ADS authenticator the settings ask for: the static token file (VMs), TokenReview
    (pods), both (static tokens tried first), or None (``--insecure``)."""
    chain: list[Authenticator] = []
    if settings.tokens_file:
        chain.append(TokenAuthenticator.from_file(Path(settings.tokens_file)))
    if settings.tokenreview:
        if identity_api is None:
            raise ConfigError(flag="--auth-tokenreview", reason="needs the Kubernetes API "
                              "(--kubeconfig, or in-cluster)")
        chain.append(TokenReviewAuthenticator(identity_api, audiences=settings.audiences,
                                              pod_labels=pod_labels,
                                              ttl=settings.cache_ttl))
    if not chain:
        return None
    return chain[0] if len(chain) == 1 else FirstOf(chain)
