"""deploy/ as kubectl renders it with kustomize, and a filter by kind."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.tools import require_tool

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
# kustomize Components under deploy/: optional changes a user's own kustomization adds
# with `components:` (kustomize forbids an overlay inside the base it builds on).
HOP_MTLS = DEPLOY / "hop-mtls"


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = require_tool("kubectl", "apt-get install kubernetes-client")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def rendered() -> list[dict[str, Any]]:
    return _kustomize(DEPLOY)


def rendered_with(*components: Path) -> list[dict[str, Any]]:
    """deploy/ with ``components`` applied, as a user's kustomization would apply them:
    ``resources: [<deploy>]``, ``components: [...]`` (paths relative: kustomize refuses
    absolute ones)."""
    with tempfile.TemporaryDirectory() as tmp:
        def rel(path: Path) -> str:
            return os.path.relpath(path, tmp)
        Path(tmp, "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [rel(DEPLOY)], "components": [rel(c) for c in components]}))
        return _kustomize(Path(tmp))


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]
