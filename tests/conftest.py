"""Fixtures for every test under tests/ (factories are plain functions in tests/factories.py;
fakes live in tests/fakes/)."""

import pytest

from tests.fixtures import admin_kube, kube, kube_objects, kube_resources
from tests.golden_support import updating_goldens

__all__ = ["admin_kube", "kube", "kube_objects", "kube_resources"]


def pytest_configure(config: pytest.Config) -> None:
    """UPDATE_GOLDEN under CI stops the run before any test (tests/golden_support.py)."""
    try:
        updating_goldens()
    except RuntimeError as exc:
        raise pytest.UsageError(str(exc)) from None
