"""Where the e2e tests find the repository's examples and the users' seed examples."""

from __future__ import annotations

from pathlib import Path

from tests.tools import seed_examples

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SEEDS = seed_examples()
