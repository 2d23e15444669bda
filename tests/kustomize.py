"""deploy/ as kubectl renders it with kustomize, and a filter by kind."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.tools import require_tool

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = require_tool("kubectl", "apt-get install kubernetes-client")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def rendered() -> list[dict[str, Any]]:
    return _kustomize(DEPLOY)


def rendered_overlay(directory: Path, *, components: list[str]) -> list[dict[str, Any]]:
    """deploy/ with ``components`` (paths under deploy/), as an overlay in ``directory``
    renders it (kustomize wants the paths relative)."""
    import os

    base = os.path.relpath(DEPLOY, directory)
    (directory / "kustomization.yaml").write_text(
        f"resources: [{base}]\ncomponents: [{', '.join(f'{base}/{c}' for c in components)}]\n")
    return _kustomize(directory)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]
