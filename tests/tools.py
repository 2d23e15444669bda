"""Shared test helpers: tool discovery that fails under CI instead of skipping."""

from __future__ import annotations

import os

import pytest

from controlplane.localrun import find_tool


def require_tool(name: str, install_hint: str) -> str:
    """The path of ``name``; skips locally, but fails when CI=true (install steps stay honest)."""
    path = find_tool(name)
    if path is None:
        message = f"{name} is required ({install_hint})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path
