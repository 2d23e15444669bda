"""Who sent an AdmissionReview: the API server, proven, or a caller the webhook cannot tell.

The webhook's port is reachable from more than the API server (a NetworkPolicy cannot
name the API server, deploy/networkpolicy.yaml), so anyone who reaches it can send a
review. The answer does not depend on the caller (a pod's patch is computed from the
review alone, and refusing unproven callers would break pod creation on clusters whose
API server presents no credentials), but the injection log does: ``GET
/api/v1/injection`` and ``dnscp_injection_total`` say which entries came from a proven
caller (``webhook.InjectionLog``).

The API server proves itself, when its AdmissionConfiguration gives it a kubeconfig
entry for the webhook's Service name, in one of two ways:

- a **client certificate**: the TLS server asks for one and verifies it against
  ``--webhook-client-ca`` (a certificate the CA did not sign ends the handshake; a caller
  with none is answered); its subject CN (Kubernetes' user name of a certificate) must be
  one of ``--webhook-caller-user``;
- a **bearer token**: reviewed with the API server's TokenReview (the same call as the
  sidecars' tokens, ``identity.tokenreview.IdentityApi``; ``--webhook-caller-tokenreview``,
  audiences ``--webhook-caller-audience``, default the API server's own); its user name
  must be one of ``--webhook-caller-user``. Any pod can mint a valid token, so the user
  name, not validity, is the proof.

``Caller.why`` names what failed: ``not-configured`` (no verification asked for: every
entry is unverified), ``no-credentials``, ``certificate-user`` (a certificate of the CA
for another user), ``token-refused``, ``token-user`` (a valid token of another user),
``token-unavailable`` (TokenReview could not answer: the webhook cannot tell), ``busy``
(``concurrency`` reviews already running: not reviewed, so a flood of invented tokens
costs the API server at most that many reviews at a time). Token reviews are cached by
the token's SHA-256 (``ttl`` accepted, ``negative_ttl`` refused; unavailability never).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controlplane.core.errors import AuthUnavailable
from controlplane.core.ttlcache import TtlCache
from controlplane.identity.tokenreview import IdentityApi

NOT_CONFIGURED = ("the webhook verifies no caller: give --webhook-caller-user with "
                  "--webhook-client-ca and/or --webhook-caller-tokenreview")


@dataclass(frozen=True, slots=True)
class Caller:
    verified: bool
    by: str = ""  # client-certificate | token (what proved it, or what was presented)
    user: str = ""  # the certificate's CN or the token's user name, when known
    why: str = ""  # when not verified: a short code (module doc)
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"verified": self.verified, "by": self.by, "user": self.user,
                "why": self.why, "detail": self.detail}


UNCHECKED = Caller(False, why="not-configured", detail=NOT_CONFIGURED)


def certificate_user(peer_cert: Mapping[str, Any] | None) -> str:
    """The subject CN of a verified peer certificate (``SSLSocket.getpeercert()``), or ""."""
    for rdn in (peer_cert or {}).get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def bearer(authorization: str) -> str:
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class CallerCheck:
    """Decides ``Caller`` for one request from its verified peer certificate (if any) and
    its ``Authorization`` header."""

    def __init__(self, *, users: Sequence[str] = (), client_ca: bool = False,
                 api: IdentityApi | None = None, audiences: Sequence[str] = (),
                 ttl: float = 60.0, negative_ttl: float = 5.0, concurrency: int = 4,
                 max_entries: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self.users = frozenset(users)
        self.client_ca = client_ca
        self.api = api
        self.audiences = tuple(audiences)
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.concurrency = concurrency
        self._running = 0
        self._cache: TtlCache[bytes, tuple[bool, str, str]] = TtlCache(
            clock=clock, max_entries=max_entries)
        self.reviews = 0  # TokenReviews sent

    @property
    def configured(self) -> bool:
        return bool(self.users) and (self.client_ca or self.api is not None)

    async def identify(self, *, peer_cert: Mapping[str, Any] | None,
                       authorization: str) -> Caller:
        if not self.configured:
            return UNCHECKED
        refused: Caller | None = None
        cn = certificate_user(peer_cert) if self.client_ca else ""
        if cn:
            if cn in self.users:
                return Caller(True, "client-certificate", cn)
            refused = Caller(False, "client-certificate", cn, "certificate-user",
                             f"a certificate of the client CA for {cn!r}, which is not "
                             "one of --webhook-caller-user")
        token = bearer(authorization)
        if token and self.api is not None:
            return await self._token(token)
        return refused or Caller(False, why="no-credentials", detail=(
            "no client certificate and no bearer token" if self.client_ca and self.api
            else "no client certificate" if self.client_ca else "no bearer token"))

    async def _token(self, token: str) -> Caller:
        key = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        known = self._cache.get(key)
        if known is None:
            if self._running >= self.concurrency:
                return Caller(False, "token", why="busy", detail=(
                    f"{self.concurrency} token reviews already running: not reviewed"))
            self._running += 1
            try:
                known = await self._review(token)
            except AuthUnavailable as exc:
                return Caller(False, "token", why="token-unavailable",
                              detail=f"TokenReview could not answer: {exc}")
            finally:
                self._running -= 1
            self._cache.put(key, known, self.ttl if known[0] else self.negative_ttl)
        authenticated, user, error = known
        if not authenticated:
            return Caller(False, "token", why="token-refused",
                          detail=f"TokenReview refused the token: {error}")
        if user not in self.users:
            return Caller(False, "token", user, "token-user",
                          f"a valid token of {user!r}, which is not one of "
                          "--webhook-caller-user")
        return Caller(True, "token", user)

    async def _review(self, token: str) -> tuple[bool, str, str]:
        """(authenticated, user name, error) of a TokenReview of ``token``."""
        assert self.api is not None
        self.reviews += 1
        status = await asyncio.to_thread(self.api.review, token, self.audiences)
        if not status.get("authenticated"):
            return False, "", str(status.get("error") or "not authenticated")
        granted = [str(a) for a in status.get("audiences") or []]
        if self.audiences and not set(granted) & set(self.audiences):
            return False, "", f"the token is for {granted}, not {list(self.audiences)}"
        user = status.get("user") or {}
        return True, str(user.get("username") or "") if isinstance(user, Mapping) else "", ""
