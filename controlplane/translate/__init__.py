"""Model -> Envoy protobuf. Pure functions: no logging, no clock, no network.

``translate_view`` is the one entry point: a ``TenantView`` and a listen
address in, the resources of every xDS type out.
"""

from __future__ import annotations

from google.protobuf.message import Message

from controlplane.translate.clusters import dns_cluster
from controlplane.translate.listeners import dns_listener, listener_name
from controlplane.translate.stats import stats_listener
from controlplane.translate.types import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE
from controlplane.views import TenantView

Resources = dict[str, dict[str, Message]]


def translate_view(view: TenantView, *, host: str, port: int,
                   resolver_timeout_ms: int = 2000,
                   stats: tuple[str, int] | None = None) -> Resources:
    """All resources of one view, by type URL then resource name.

    ``stats`` adds the stats-only HTTP listener at that address.
    """
    listeners = [dns_listener(view, host=host, port=port,
                              resolver_timeout_ms=resolver_timeout_ms)]
    if stats is not None:
        listeners.append(stats_listener(host=stats[0], port=stats[1]))
    clusters = [dns_cluster(e.record, view.upstreams) for e in view.entries if e.record.cluster
                and not (e.record.ipv4 or e.record.ipv6)]
    return {
        CLUSTER_TYPE: {c.name: c for c in clusters},
        ENDPOINT_TYPE: {},
        LISTENER_TYPE: {listener.name: listener for listener in listeners},
    }


__all__ = ["Resources", "translate_view", "listener_name"]
