"""How a test skips, and the tools it needs: one rule for every skip in tests/ and e2e/.

The CI rule: a test that cannot run here skips on a developer's machine but fails under
CI, so an install step that goes missing from CI shows as a failure, not as a quiet skip.
"Under CI" means the ``CI`` environment variable is set to anything but ``""``, ``"0"`` or
``"false"`` (any case): ``CI=true`` (GitHub Actions, GitLab CI and most others), ``CI=1``
and ``CI=yes`` all count. Every skip goes through :func:`skip`; the only skips CI allows
are those marked ``ci_may_skip`` (a reason that holds in every clean clone).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

from controlplane._kit.localrun import find_tool


def in_ci() -> bool:
    """True when ``CI`` is set to anything but "", "0" or "false" (see the module)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def skip(reason: str, *, ci_may_skip: bool = False) -> NoReturn:
    """Skip this test; under CI fail instead, unless ``ci_may_skip`` (a reason that is true
    of every CI checkout, e.g. a directory only a developer's machine has)."""
    __tracebackhide__ = True  # reported at the test's line, not here
    if in_ci() and not ci_may_skip:
        pytest.fail(f"{reason} (CI is set: a test CI cannot run fails instead of skipping)")
    pytest.skip(reason)


def require_tool(name: str, install_hint: str) -> str:
    """The path of ``name``; :func:`skip` when it is not installed."""
    __tracebackhide__ = True
    path = find_tool(name)
    if path is None:
        skip(f"{name} is required ({install_hint})")
    return path


def require_file(path: Path, install_hint: str) -> Path:
    """``path``, which an installed package provides; :func:`skip` when it is missing."""
    __tracebackhide__ = True
    if not path.exists():
        skip(f"{path} is required ({install_hint})")
    return path


def seed_examples() -> Path:
    """The users' seed examples: ../shared/seed-examples beside the project when present
    (it is the source of truth), else the copy kept in tests/seed-examples."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "seed-examples"
    return shared if shared.is_dir() else Path(__file__).resolve().parent / "seed-examples"
