"""Model -> Envoy protobuf. Pure functions: no logging, no clock, no network.

``translate_view`` is the one entry point: a ``TenantView`` and a listen
address in, the resources of every xDS type out.
"""

from __future__ import annotations

from google.protobuf.message import Message

from controlplane.translate.listeners import dns_listener, listener_name
from controlplane.translate.types import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE
from controlplane.views import TenantView

Resources = dict[str, dict[str, Message]]


def translate_view(view: TenantView, *, host: str, port: int,
                   resolver_timeout_ms: int = 2000) -> Resources:
    """All resources of one view, by type URL then resource name."""
    listener = dns_listener(view, host=host, port=port, resolver_timeout_ms=resolver_timeout_ms)
    return {
        CLUSTER_TYPE: {},
        ENDPOINT_TYPE: {},
        LISTENER_TYPE: {listener.name: listener},
    }


__all__ = ["Resources", "translate_view", "listener_name"]
