"""Start the control plane from another checkout, for the benchmarks' ``--code DIR``
(before/after runs: ``git archive REV | tar -x -C DIR``)."""

from __future__ import annotations

import os
from pathlib import Path

from controlplane._kit.localrun import ControlPlane


def start_control_plane(manifests: Path, work: Path, *, code: str = "",
                        extra_args: list[str] | None = None,
                        timeout: float = 120) -> ControlPlane:
    """``controlplane serve`` on ``manifests``, run from ``code`` when given (``python -m
    controlplane`` finds the package in its working directory first), else from this
    checkout; returns once it is ready."""
    here = Path.cwd()
    if code:
        os.chdir(Path(code).resolve())
    try:
        return ControlPlane(manifests, work, extra_args=extra_args or []).start(
            timeout=timeout)
    finally:
        os.chdir(here)
