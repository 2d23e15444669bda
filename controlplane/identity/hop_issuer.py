"""The mutual hop's client certificates, one per tenant (docs/resolver-isolation.md).

Each forwarding tenant's sidecars present one certificate whose only identity is the URI
SAN ``spiffe://dns-controlplane/tenant/<tenant>/`` (``certs.hop_client_uri``); it rides
in the tenant's view snapshot as an SDS Secret. A certificate is re-issued once half its
lifetime has passed (``due``), so a sidecar holds one valid for at least half a lifetime
through any control-plane outage shorter than that. Per-stream certificates (the plan's
step 5) are the next step; the terminator checks the tenant prefix either way.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from controlplane.identity.certs import hop_client_uri, issue_client_cert


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True, slots=True)
class HopCert:
    cert_pem: str
    key_pem: str = field(repr=False)
    not_after: datetime.datetime
    renew_at: datetime.datetime


@dataclass
class TenantCerts:
    """Per-tenant hop client certificates, issued on first use and renewed at half-life."""

    ca_pem: bytes
    ca_key_pem: bytes = field(repr=False)
    lifetime: datetime.timedelta = datetime.timedelta(hours=12)
    clock: Callable[[], datetime.datetime] = utc_now
    issued: int = 0  # certificates made so far (a counter for tests and logs)
    _certs: dict[str, HopCert] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.lifetime < datetime.timedelta(minutes=10):
            raise ValueError("the hop certificate lifetime must be at least 10 minutes")

    def get(self, tenant: str) -> HopCert:
        """The tenant's current certificate (made now when it has none, or its is due)."""
        current = self._certs.get(tenant)
        if current is None or self.clock() >= current.renew_at:
            current = self._issue(tenant)
        return current

    def due(self) -> list[str]:
        """Re-issue every certificate past its half-life; the tenants that got a new one."""
        now = self.clock()
        renewed = sorted(t for t, c in self._certs.items() if now >= c.renew_at)
        for tenant in renewed:
            self._issue(tenant)
        return renewed

    def keep(self, tenants: Iterable[str]) -> None:
        """Forget the certificates of tenants not in ``tenants`` (they stopped forwarding)."""
        wanted = set(tenants)
        for gone in set(self._certs) - wanted:
            del self._certs[gone]

    def _issue(self, tenant: str) -> HopCert:
        now = self.clock()
        cert, key = issue_client_cert(self.ca_pem, self.ca_key_pem,
                                      uri=hop_client_uri(tenant), lifetime=self.lifetime,
                                      now=now)
        made = HopCert(cert.decode(), key.decode(), not_after=now + self.lifetime,
                       renew_at=now + self.lifetime / 2)
        self._certs[tenant] = made
        self.issued += 1
        return made
