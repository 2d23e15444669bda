"""Views become snapshots: translated and serialised once per view key, then installed.

``render`` is pure (a view and its key in, a ``ViewSnapshot`` out) and runs
on the hub's worker thread; ``ViewSnapshots`` runs on the event loop and
knows which view each installed snapshot was rendered from, so it can tell
which keys need rendering (``stale``) and refuse a result that a newer view
overtook while it was being rendered (``install``). It also keeps the serialised
table domains of the records rendered so far (``DomainCache``, shared by all
tenants, as the records are) and hands the cache out with each job, so a view
that changed re-serialises only the records that changed.

It also holds the mutual hop's peers (every replica's terminator,
``--resolver-hop-peers``): renders list them in the hop cluster, and a change of peers
alone re-renders only that cluster in the installed snapshots (``set_hop_peers``), never
a table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol

from controlplane.core.settings import Settings
from controlplane.dns.views import TenantView, Upstream
from controlplane.hub.view_key import ViewKey
from controlplane.translate import DomainCache, hop_cluster, translate_view
from controlplane.translate.faults import poison
from controlplane.translate.front import Pair
from controlplane.translate.types import CLUSTER_TYPE
from controlplane.xds.snapshot import SnapshotCache, ViewSnapshot, build_snapshot, with_resources


class SetPublisher(Protocol):
    """Which pairs a tenant's DNS front may route to Envoy now (``front_sets.FrontSets``)."""

    def publish(self, view: TenantView, now: float, *, initial: bool = False
                ) -> tuple[TenantView, tuple[Pair, ...]]: ...

    def forget(self, tenants: Iterable[str]) -> None: ...


class FrontTurn(NamedTuple):
    """What a render needs to publish sets: the tenants' state, the time, and whether the
    hub is still loading (``FrontSets.publish``'s ``initial``)."""

    sets: SetPublisher
    now: float
    initial: bool = False


# A view key, the view to render for it, the view its installed snapshot came from, and
# the domain cache to render it with.
Job = tuple[ViewKey, TenantView, TenantView | None, DomainCache]
Rendered = tuple[ViewKey, TenantView, ViewSnapshot | None]  # None: equal to the installed one


def render(key: ViewKey, view: TenantView, settings: Settings,
           domains: DomainCache | None = None, front: FrontTurn | None = None,
           peers: tuple[Upstream, ...] = ()) -> ViewSnapshot:
    """Translate and serialise ``view`` for the Envoys of ``key`` (reusing ``domains``),
    its mutual hop's cluster listing ``peers`` (() : the view's own resolver).

    A fronted key's set lists the pairs ``front`` publishes now, and its table may still
    hold records that left the view (new pairs lag the table, gone ones leave the set
    first: ``front_sets.py``); without ``front``, every pair of the view."""
    pairs = None
    table = view
    if key.front is not None and front is not None:
        if view.upstreams:
            table, pairs = front.sets.publish(view, front.now, initial=front.initial)
        else:
            front.sets.forget([view.tenant])  # '* .': no pairs; a resolver later starts over
    resources: Any = translate_view(
        table, host=key.host, port=key.port,
        resolver_timeout_ms=int(settings.resolvers.timeout_seconds * 1000),
        stats=(key.stats_host, key.stats_port) if key.stats_port else None,
        hop=(key.hop_host, key.hop_port), domains=domains, front=key.front,
        front_pairs=pairs, hop_peers=peers)
    if settings.fault_invalid_names:
        poison(resources, settings.fault_invalid_names)
    return build_snapshot(key, resources)


def render_all(jobs: Iterable[Job], settings: Settings, front: FrontTurn | None = None,
               peers: tuple[Upstream, ...] = ()) -> list[Rendered]:
    """Render each job whose view differs from the one its installed snapshot came from
    (comparing two large views costs time too: it happens here, off the event loop); a
    job without a previous view is always rendered (a fronted key whose set is due)."""
    return [(key, view, None if previous is not None and previous == view
             else render(key, view, settings, domains, front, peers))
            for key, view, previous, domains in jobs]


def with_hop_peers(snap: ViewSnapshot, view: TenantView, peers: tuple[Upstream, ...]
                   ) -> ViewSnapshot:
    """``snap`` (rendered from ``view``) with its mutual hop's cluster listing ``peers``;
    ``snap`` itself when that is what it lists already, or the view has no mutual hop."""
    cluster = hop_cluster(view, peers)
    if cluster is None:
        return snap
    clusters = snap.types.get(CLUSTER_TYPE)
    now = clusters.anys.get(cluster.name) if clusters is not None else None
    if now is not None and now.value == cluster.SerializeToString(deterministic=True):
        return snap
    return with_resources(snap, CLUSTER_TYPE, {cluster.name: cluster})


class ViewSnapshots:
    """The installed snapshots and the views they came from (event-loop side)."""

    def __init__(self, cache: SnapshotCache, *, changed_at: dict[ViewKey, float]) -> None:
        self.cache = cache
        self._built: dict[ViewKey, TenantView] = {}
        self.domains = DomainCache()  # table domains of the records rendered so far
        self._changed_at = changed_at  # Streams.changed_at: when the input behind a view changed
        self.hop_peers: tuple[Upstream, ...] = ()  # every replica's terminator; (): unknown

    def stale(self, keys: Iterable[ViewKey], views: Mapping[str, TenantView]) -> list[Job]:
        """The keys whose snapshot is missing or was rendered from another view object."""
        out: list[Job] = []
        for key in sorted(keys):
            view = views.get(key.tenant)
            if view is None:
                continue
            built = self._built.get(key) if self.cache.get(key) is not None else None
            if built is not view:
                out.append((key, view, built, self.domains))
        return out

    def install(self, results: Iterable[Rendered], *,
                current: Callable[[ViewKey, TenantView], bool], changed_at: float
                ) -> set[ViewKey]:
        """Put rendered snapshots in place (those ``current`` still wants); the keys whose
        version changed (their streams are woken by the cache's listeners)."""
        changed = set()
        for key, view, snap in results:
            if snap is not None:
                self.cache.serializations += 1
            if not current(key, view):
                continue  # a newer view of this key, or no stream has it any more
            self._built[key] = view
            if snap is not None:  # rendered with other peers while they changed: redo
                snap = with_hop_peers(snap, view, self.hop_peers)
            if snap is not None and self.cache.put(key, snap):
                self._changed_at[key] = changed_at
                changed.add(key)
        return changed

    def set_hop_peers(self, peers: tuple[Upstream, ...], *, changed_at: float
                      ) -> set[ViewKey]:
        """From now on the mutual hop lists ``peers``: the installed snapshots of views
        with a mutual hop get their hop cluster re-rendered (nothing else); the keys whose
        version changed (their streams are woken by the cache's listeners)."""
        self.hop_peers = peers
        changed = set()
        for key, view in list(self._built.items()):
            snap = self.cache.get(key)
            if snap is None:
                continue
            new = with_hop_peers(snap, view, peers)
            if new is not snap and self.cache.put(key, new):
                self.cache.serializations += 1
                self._changed_at[key] = changed_at
                changed.add(key)
        return changed

    def discard(self, key: ViewKey) -> None:
        """No stream has ``key`` any more."""
        self._built.pop(key, None)
        self.cache.discard(key)
