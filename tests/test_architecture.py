"""The package's shape: every package has a place in the import-linter layers, the
contracts hold, and the hub alone drives its worker-thread parts.

The contracts themselves live in ``pyproject.toml`` (``[tool.importlinter]``) and run in
``make test`` as ``lint-imports``; this test runs them too, so a plain ``pytest`` sees a
wrong import, and checks that the contracts cover every package.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "controlplane"
TOP_MODULES = {"__init__.py", "__main__.py", "app.py"}  # the composition root (with cli/)
PRIVATE = {"_kit"}  # the local-run kit: forbidden to product code by its own contract


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(config["tool"]["importlinter"]["contracts"])


def _layer_names() -> set[str]:
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    assert isinstance(layers, list)
    return {part.strip() for layer in layers for part in str(layer).split("|")}


def _packages() -> list[str]:
    return sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_no_flat_modules_beside_the_composition_root() -> None:
    flat = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in TOP_MODULES)
    assert flat == [], f"put {flat} in a package (and in the layers contract)"


@pytest.mark.parametrize("package", _packages())
def test_every_package_has_a_layer_and_says_what_it_may_import(package: str) -> None:
    if package not in PRIVATE:
        assert f"controlplane.{package}" in _layer_names(), f"{package} is in no layer"
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text())) or ""
    assert "May import" in doc, f"controlplane/{package}/__init__.py: say what it holds and may import"


def test_the_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.fail("lint-imports is missing: pip install -e '.[dev]'")
    result = subprocess.run([lint, "--no-cache"], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "BROKEN" not in result.stdout


def test_the_pure_contract_sees_the_standard_library() -> None:
    """The contracts forbid asyncio and threading: they must be in the graph to be caught."""
    import grimp

    graph = grimp.build_graph("controlplane", include_external_packages=True)
    assert {"threading", "asyncio", "grpc"} <= graph.modules
    pure = next(c for c in _contracts() if str(c["name"]).startswith("Pure layers"))
    assert {"asyncio", "threading", "grpc", "kubernetes"} <= set(pure["forbidden_modules"])  # type: ignore[arg-type]


def test_only_the_hub_drives_the_view_builder_and_renderer() -> None:
    """Their state is the worker thread's (hub/hub.py): nobody else may call into it."""
    parts = ("controlplane.dns.view_builder", "controlplane.hub.view_snapshots")
    users = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                   if p.name != "hub.py" and any(m in parts for m in _imports(p)))
    assert users == [], users
