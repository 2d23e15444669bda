"""Shared test helpers: tool discovery that fails under CI instead of skipping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controlplane._kit.localrun import find_tool


def require_tool(name: str, install_hint: str) -> str:
    """The path of ``name``; skips locally, but fails when CI=true (install steps stay honest)."""
    path = find_tool(name)
    if path is None:
        message = f"{name} is required ({install_hint})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_file(path: Path, install_hint: str) -> Path:
    """``path``, which an installed package provides; skips locally, fails when CI=true."""
    if not path.exists():
        message = f"{path} is required ({install_hint})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def seed_examples() -> Path:
    """The users' seed examples: ../shared/seed-examples beside the project when present
    (it is the source of truth), else the copy kept in tests/seed-examples."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "seed-examples"
    return shared if shared.is_dir() else Path(__file__).resolve().parent / "seed-examples"
