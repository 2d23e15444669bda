"""Which part of a wide tenant's table a DNS-fronted sidecar's Envoy holds. Pure.

A tenant that sees the whole cluster would cost every pod the whole table in Envoy
(210 MB private at 100,000 Services, issue 21). A fronted sidecar does not need it: the
front routes to Envoy only the (name, type) pairs of its set, and sends everything else
to the tenant resolver, which holds the whole table once per tenant and replica
(``docs/wide-tenants.md``). So for a view that has a resolver and more than ``limit``
entries, Envoy's table (and with it the front's set, ``front.envoy_pairs``) is

    the entries whose record comes from a namespace the tenant selects
    (``TenantView.namespaces``; a source ``"<Kind> <namespace>/<name>"``), in view order,
    at most ``limit`` of them;

every other name is answered by the resolver through the hop. A view with at most
``limit`` entries, one without a resolver (its front sends everything to Envoy), and
``limit`` 0 keep the whole table: narrow tenants see no change. Sidecars without a front
always get the whole table (they have no other way to answer SRV of a table name; see
the decision record).
"""

from __future__ import annotations

from dataclasses import replace

from controlplane.dns.records import NameRecord
from controlplane.dns.views import TenantView


def record_namespaces(record: NameRecord) -> frozenset[str]:
    """The namespaces of the objects a record comes from (``sources``)."""
    out = set()
    for source in record.sources:
        _, _, ref = source.partition(" ")
        namespace, slash, _ = ref.partition("/")
        if slash:
            out.add(namespace)
    return frozenset(out)


def envoy_part(view: TenantView, *, limit: int) -> TenantView:
    """The view a fronted sidecar's Envoy is rendered from (the module's rule); ``view``
    itself when it keeps the whole table."""
    if limit <= 0 or not view.upstreams or len(view.entries) <= limit:
        return view
    own = view.namespaces
    entries = []
    if not own:
        return replace(view, entries=())
    for entry in view.entries:
        sources = entry.record.sources
        if len(sources) == 1:  # the common case: record_namespaces' one namespace, no sets
            namespace, slash, _ = sources[0].partition(" ")[2].partition("/")
            if not (slash and namespace in own):
                continue
        elif own.isdisjoint(record_namespaces(entry.record)):
            continue
        entries.append(entry)
        if len(entries) == limit:
            break
    return replace(view, entries=tuple(entries))


def is_wide(view: TenantView, *, limit: int) -> bool:
    """Whether a fronted sidecar's Envoy holds only part of ``view``."""
    return envoy_part(view, limit=limit) is not view


__all__ = ["envoy_part", "is_wide", "record_namespaces"]
