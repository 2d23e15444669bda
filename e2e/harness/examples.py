"""The repository's examples as the e2e tests use them: the demo cluster's objects for the
fake API server, and edits to a private copy of examples/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from controlplane._kit.localrun import Dnsmasq
from e2e.harness.paths import EXAMPLES


def demo_objects() -> list[dict[str, Any]]:
    """examples/demo-two-tenants.yaml as the fake API server holds it: its ServiceEntries in
    our own API group (Istio is not installed in the fake cluster)."""
    docs = []
    for doc in yaml.safe_load_all((EXAMPLES / "demo-two-tenants.yaml").read_text()):
        if doc["kind"] == "ServiceEntry":
            doc["apiVersion"] = "networking.example.com/v1alpha1"
        docs.append(doc)
    return docs


def point_globex_at(manifests: Path, upstream: Dnsmasq) -> None:
    path = manifests / "globex.yaml"
    path.write_text(path.read_text().replace("127.0.0.1:15353", f"127.0.0.1:{upstream.port}"))
