"""The flow goes one way: translate and policy never import I/O libraries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "controlplane"
PURE = ["policy.py", "views.py", "names.py", "model.py", "manifests.py", "translate", "records.py",
        "record_index.py", "explain.py", "status.py", "vips.py", "auth.py",
        "incremental_records.py", "policy_decisions.py", "leadership.py", "injection.py",
        "admission.py", "view_builder.py", "view_snapshots.py", "view_key.py", "frozenmap.py"]
FORBIDDEN = ("grpc", "fastapi", "kubernetes", "uvicorn", "watchfiles", "logging", "time",
             "socket", "asyncio", "controlplane.hub", "controlplane.xds", "controlplane.admin",
             "controlplane.sources")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def _files(entry: str) -> list[Path]:
    p = PACKAGE / entry
    return sorted(p.rglob("*.py")) if p.is_dir() else [p]


@pytest.mark.parametrize("path", [f for e in PURE for f in _files(e)],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_modules_import_no_io(path: Path) -> None:
    bad = sorted(m for m in _imports(path)
                 if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
    assert bad == [], f"{path.name} imports {bad}"


def test_sources_are_the_only_kubernetes_users() -> None:
    users = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                   if any(m.startswith("kubernetes") for m in _imports(p)))
    assert all(u.startswith("sources/") for u in users), users


# The hub's parts (hub.py coordinates them): each may not reach the others' side.
HUB_PARTS = {
    "frozenmap.py": ("controlplane",),
    "hub_metrics.py": ("controlplane",),
    "view_key.py": ("controlplane.hub", "controlplane.streams", "controlplane.view_builder",
                    "controlplane.view_snapshots", "controlplane.hub_metrics"),
    "inventory.py": ("controlplane.hub", "controlplane.views", "controlplane.view_builder",
                     "controlplane.streams", "controlplane.xds", "controlplane.sources"),
    "view_builder.py": ("controlplane.hub", "controlplane.streams", "controlplane.view_snapshots",
                        "controlplane.hub_metrics", "controlplane.resolvers",
                        "controlplane.policy_client", "controlplane.translate",
                        "controlplane.snapshot"),
    "view_snapshots.py": ("controlplane.hub", "controlplane.streams", "controlplane.view_builder",
                          "controlplane.hub_metrics", "controlplane.inventory",
                          "controlplane.resolvers", "controlplane.policy_client"),
    "streams.py": ("controlplane.hub", "controlplane.view_builder",
                   "controlplane.view_snapshots", "controlplane.inventory",
                   "controlplane.resolvers", "controlplane.policy_client",
                   "controlplane.translate.listeners", "controlplane.translate.dns_table"),
}


@pytest.mark.parametrize("name", sorted(HUB_PARTS))
def test_hub_parts_import_one_way(name: str) -> None:
    bad = sorted(m for m in _imports(PACKAGE / name)
                 if any(m == f or m.startswith(f + ".") for f in HUB_PARTS[name]))
    assert bad == [], f"{name} imports {bad}"


def test_only_the_hub_drives_the_view_builder_and_renderer() -> None:
    """Their state is the worker thread's (hub.py): nobody else may call into it."""
    parts = ("controlplane.view_builder", "controlplane.view_snapshots")
    users = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                   if p.name != "hub.py" and any(m in parts for m in _imports(p)))
    assert users == [], users
