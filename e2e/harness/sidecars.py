"""Sidecars for the e2e tests: an Envoy of the project's bootstrap that flushes its stats
every second, so the stats sink sees counts within a test's patience."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from controlplane._kit.localrun import Envoy

FLUSH = "1s"  # the tests' stats flush interval (Envoy's default, and the bootstrap's: 5 s)


@dataclass
class FastFlushEnvoy(Envoy):
    """An Envoy of the project's bootstrap (stats sink on), flushing every second."""

    def write_bootstrap(self) -> Path:
        path = super().write_bootstrap()
        config = yaml.safe_load(path.read_text())
        assert config["stats_sinks"], "the bootstrap streams the DNS counters by default"
        config["stats_flush_interval"] = FLUSH
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path
