"""Settings, passed in as one frozen dataclass; nothing is read at import time."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DefaultView(StrEnum):
    """What an Envoy that no DnsPolicy selects gets."""

    DENY = "deny"  # an empty table and no forwarding: every query gets NXDOMAIN
    CLUSTER = "cluster"  # every cluster name, forwarding to the default upstream if set


@dataclass(frozen=True, slots=True)
class Settings:
    zone: str = "cluster.local"
    answer_ttl_seconds: int = 30  # Envoy's minimum (facts #13)
    default_upstream: str = ""  # "IP[:port]" used when a policy names no server
    default_view: DefaultView = DefaultView.DENY
    xds_host: str = "127.0.0.1"
    xds_port: int = 18000
    admin_host: str = "127.0.0.1"
    admin_port: int = 18080
    debounce_seconds: float = 0.05
    resolver_timeout_seconds: float = 2.0
