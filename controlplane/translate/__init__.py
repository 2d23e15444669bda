"""Model -> Envoy protobuf. Pure functions: no logging, no clock, no network.

``translate_view`` is the one entry point: a ``TenantView`` and a listen
address in, the resources of every xDS type out. Also here: the tenant resolver's
configuration text (``unbound``), what Envoy will answer and why (``explain``), and the
test-only NACK fault (``faults``).

May import: ``dns``, ``policy``, ``core``. Pure.
"""

from __future__ import annotations

from google.protobuf.message import Message

from controlplane.dns.views import TenantView, Upstream
from controlplane.translate.clusters import (
    HOP_CONNECT_ATTEMPTS,
    RESTART_BACKOFF_MS,
    RESTART_CONNECT_ATTEMPTS,
    dns_cluster,
    hop_client_secret,
    hop_cluster,
    hop_endpoints,
    resolver_hop_cluster,
)
from controlplane.translate.dns_table import DomainCache
from controlplane.translate.front import ALL_TO_ENVOY, Pair, envoy_pairs, set_body
from controlplane.translate.front_routes import front_resources
from controlplane.translate.listeners import dns_listener, listener_name, resolver_hop_listener
from controlplane.translate.stats import stats_listener
from controlplane.translate.types import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
)

Resources = dict[str, dict[str, Message]]


def translate_view(view: TenantView, *, host: str, port: int,
                   resolver_timeout_ms: int = 2000,
                   stats: tuple[str, int] | None = None,
                   hop: tuple[str, int] = ("127.0.0.1", 15054),
                   domains: DomainCache | None = None,
                   front: tuple[str, int] | None = None,
                   front_pairs: tuple[Pair, ...] | None = None,
                   hop_peers: tuple[Upstream, ...] = ()) -> Resources:
    """All resources of one view, by type URL then resource name.

    ``stats`` adds the stats-only HTTP listener at that address. When the view reaches
    its tenant resolver over TLS (``view.hop``), Envoy's resolver asks the local TCP
    listener at ``hop``, whose cluster carries the queries to the resolver over TLS.
    ``domains``: serialised table domains the caller keeps between calls, so that an
    unchanged record is not serialised again (``dns_table.DomainCache``).

    ``front``: the node runs the DNS front (``docs/dns-front.md``): the set listener at
    that address and its RouteConfiguration (RDS), whose body lists ``front_pairs``
    (default: every pair of ``envoy_pairs``; the hub passes the pairs it publishes, which
    lag the table) or, for a view with no resolver, ``* .`` (everything to Envoy); and
    the hop listener at ``hop`` whenever the view has a resolver, a plain TCP proxy to it
    when there is no TLS hop. Without ``front`` the output is what it always was, and a
    view whose resolver is table-only (``forward.server`` None) gets exactly the resources
    of a view without a resolver: no upstream, no hop, nothing that names its port.

    A mutual hop (``view.hop.mutual``) adds the tenant's client certificate as an SDS
    Secret (``SECRET_TYPE``), which the hop cluster asks for by name over ADS, and its
    cluster lists ``hop_peers`` (every replica's terminator, ``--resolver-hop-peers``;
    (): the view's own resolver address), a connection trying the next one when one
    fails to connect.
    """
    # Envoy's own resolver asks the tenant resolver only when that one has a server
    # (``view.forwarding``); a table-only resolver is for the front alone.
    dns_servers = view.upstreams if view.forwarding else ()
    tcp = False
    listeners = []
    clusters = []
    has_hop = bool(view.upstreams) and (
        front is not None or (view.hop is not None and view.forwarding))
    if has_hop:
        mutual = view.hop is not None and view.hop.mutual
        clusters.append(resolver_hop_cluster(hop_endpoints(view, hop_peers), view.hop))
        listeners.append(resolver_hop_listener(
            host=hop[0], port=hop[1],
            connect_attempts=HOP_CONNECT_ATTEMPTS if mutual else RESTART_CONNECT_ATTEMPTS,
            backoff_ms=None if mutual else RESTART_BACKOFF_MS))
    if view.hop is not None and view.forwarding:
        dns_servers, tcp = (Upstream(hop[0], hop[1]),), True
    listeners.insert(0, dns_listener(view, host=host, port=port, servers=dns_servers, tcp=tcp,
                                     resolver_timeout_ms=resolver_timeout_ms,
                                     domains=domains))
    if stats is not None:
        listeners.append(stats_listener(host=stats[0], port=stats[1]))
    clusters += [dns_cluster(e.record, dns_servers, tcp=tcp) for e in view.entries
                 if e.record.cluster and not (e.record.ipv4 or e.record.ipv6)]
    out: Resources = {
        CLUSTER_TYPE: {c.name: c for c in clusters},
        ENDPOINT_TYPE: {},
        LISTENER_TYPE: {listener.name: listener for listener in listeners},
    }
    if view.hop is not None and view.hop.mutual and has_hop:
        secret = hop_client_secret(view.hop)
        out[SECRET_TYPE] = {secret.name: secret}
    if front is not None:
        body = (ALL_TO_ENVOY if not view.upstreams else
                set_body(front_pairs if front_pairs is not None else envoy_pairs(view)))
        extra = front_resources(view, host=front[0], port=front[1], body=body)
        out[LISTENER_TYPE].update(extra[LISTENER_TYPE])
        out[ROUTE_TYPE] = extra[ROUTE_TYPE]
    return out


__all__ = ["Resources", "DomainCache", "hop_cluster", "translate_view", "listener_name"]
