"""Runs the Kubernetes source and the DnsPolicy status writer for the app."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from controlplane.core.errors import ConfigError
from controlplane.hub.hub import Hub
from controlplane.kube.leader import Election, LeaderCollector, LeaderElector
from controlplane.kube.status_writer import StatusWriter
from controlplane.runtime.supervise import Supervisor
from controlplane.sources.kubernetes import CORE_KINDS, KubernetesSource
from controlplane.store.store import Store


def api_client(kubeconfig: str | None, context: str | None) -> k8s.ApiClient:
    """A client from a kubeconfig, or in-cluster config when neither is given."""
    try:
        if kubeconfig or context:
            api: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context)
            return api
        configuration = k8s.Configuration()
        k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration)
        return k8s.ApiClient(configuration)
    except Exception as exc:
        raise ConfigError(f"cannot configure the Kubernetes client: {exc}") from exc


OUR_SERVICE_ENTRIES = next(k.origin for k in CORE_KINDS if k.plural == "serviceentries")


class KubeRunner:
    def __init__(self, api: k8s.ApiClient, store: Store, poke: Callable[[], None], *,
                 watch_pods: bool = False, write_status: bool = True,
                 watch_timeout: int = 60, backoff_base: float = 0.2,
                 status_min_interval: float = 1.0, election: Election | None = None) -> None:
        """``election``: write status only while holding its Lease (several replicas);
        None: this process always writes (one replica)."""
        self.source = KubernetesSource(api, store, poke, watch_pods=watch_pods,
                                       watch_timeout=watch_timeout, backoff_base=backoff_base)
        self.elector: LeaderElector | None = None
        if write_status and election is not None:
            self.elector = LeaderElector(
                api, namespace=election.namespace, name=election.name,
                identity=election.identity, timings=election.timings,
                on_change=self._leadership_changed)
        self.writer = StatusWriter(
            api, self.source.stop_event, min_interval=status_min_interval,
            may_write=self.elector.is_leader if self.elector else None,
        ) if write_status else None
        self.watch_pods = watch_pods

    def _leadership_changed(self, leading: bool) -> None:
        if self.writer is not None and leading:
            self.writer.take_over()  # losing needs nothing: the writer asks before each write

    def collectors(self) -> list[object]:
        """Prometheus collectors for the admin API's /metrics."""
        return [LeaderCollector(self.elector)] if self.elector is not None else []

    def load(self, supervisor: Supervisor) -> None:
        """Start the watch threads, the status writer and the election under ``supervisor``
        (a crash of any ends the process: ``runtime/supervise.py``)."""
        self.source.start(supervisor)
        if self.writer is not None:
            self.writer.start(supervisor)
        if self.elector is not None:
            self.elector.start(supervisor)

    def loaded(self) -> bool:
        return self.source.ready

    def problem(self) -> str:
        if not self.source.ready:
            return self.source.not_ready_reason()
        problems = [f"{w.kind.plural}: {w.state.problem}" for w in self.source.watchers
                    if w.state.problem]
        if self.elector is not None and self.elector.problem:
            problems.append(f"leader election: {self.elector.problem}")
        return "; ".join(problems)

    def status(self) -> dict[str, object]:
        out = self.source.status()
        if self.writer is not None:
            out["status_writes"] = self.writer.writes
        if self.elector is not None:
            out["leaderElection"] = self.elector.status()
        return out

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.source.stop()
        if self.elector is not None:  # step down now and free the lease for the next leader
            await asyncio.to_thread(self.elector.stop, release=True)

    def hub_changed(self, hub: Hub) -> None:
        if self.writer is None or not hub.readiness.is_loaded:
            return
        desired: dict[tuple[str, str, str], dict[str, object]] = {
            ("dnspolicies", "", name): status
            for name, status in hub.policy_statuses(pods_watched=self.watch_pods).items()}
        # ServiceEntries of our own group get their VIPs in status; Istio's are not ours.
        ours = {key[1:] for key in self.source.store.keys(OUR_SERVICE_ENTRIES)}
        for (ns, name), status in hub.service_entry_statuses().items():
            if (ns, name) in ours:
                desired[("serviceentries", ns, name)] = status
        self.writer.update(desired)
