"""Versions: equal for equal content on every replica and hash seed, new for new content."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
from tests.golden_support import load_inventory
from controlplane.hub.hub import Hub
from controlplane.core.settings import Settings
from controlplane.core.model import Workload
from pathlib import Path
hub = Hub(Settings())
hub.set_inventory(load_inventory(Path({examples!r})))
for ns in ("acme", "foo", "globex"):
    conn = hub.open(peer=ns)
    conn.workload = Workload(node_id=ns, namespace=ns)
    hub._assign(conn)
hub._refresh_snapshots()
print(json.dumps(sorted([str(s.key), {{t: ts.version for t, ts in s.types.items()}}]
                        for s in hub.cache.snapshots())))
"""


def versions(seed: str, examples: Path) -> object:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(ROOT),
                                                              examples=str(examples))],
                         capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    return json.loads(out.stdout)


def test_same_input_same_versions_across_processes_and_hash_seeds(tmp_path: Path) -> None:
    a = versions("1", ROOT / "examples")
    b = versions("4242", ROOT / "examples")
    assert a == b and len(a) == 3  # type: ignore[arg-type]


def test_changed_input_changes_only_the_affected_view(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(ROOT / "examples", tmp_path / "ex")
    before = dict(versions("1", tmp_path / "ex"))  # type: ignore[arg-type]
    (tmp_path / "ex" / "new.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: new, namespace: acme}\n"
        "spec: {clusterIP: 10.1.2.3}\n")
    after = dict(versions("2", tmp_path / "ex"))  # type: ignore[arg-type]
    changed = {k.split("@")[0] for k in before if before[k] != after[k]}
    # acme sees the new Service; globex denies it in its tenant resolver (unknown cluster
    # names get NXDOMAIN there), so its Envoy resources do not change, nor do foo's.
    assert changed == {"acme"}
