"""Process-lifetime tenant resolvers die with a SIGKILLed control plane, also those started
and restarted after its first load: every start happens on the one resolver thread
(app.py), and ``setpriv --pdeathsig KILL`` follows the thread that started a process."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

from controlplane._kit.localrun import ControlPlane, wait_for


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def resolver_pids(cp: ControlPlane) -> dict[str, int]:
    return {str(r["tenant"]): int(r["pid"]) for r in cp.get("/api/v1/resolvers")["resolvers"]}


def test_resolvers_die_with_a_killed_control_plane(
        manifests: Path, start_control_plane: Callable[..., ControlPlane]) -> None:
    cp = start_control_plane(manifests)
    first = wait_for(lambda: resolver_pids(cp) or None, timeout=30, what="tenant resolvers")
    # one more tenant after the first load, and one resolver killed: started again by
    # supervision (both on the resolver thread, later than the first load's starts)
    (manifests / "late.yaml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: late, labels: {tenant: late}}\n"
        "---\napiVersion: networking.example.com/v1alpha1\nkind: DnsPolicy\n"
        "metadata: {name: late}\nspec:\n  namespaceSelector: {matchLabels: {tenant: late}}\n"
        "  server: {address: '127.0.0.1:5399'}\n  policy: {defaultAction: ALLOW}\n")
    killed_tenant, killed_pid = sorted(first.items())[0]
    os.kill(killed_pid, signal.SIGKILL)
    pids = wait_for(lambda: (lambda p: p if "late" in p and p.get(killed_tenant) not in
                             (None, killed_pid) else None)(resolver_pids(cp)),
                    timeout=30, what="the late tenant's resolver and the restarted one")
    assert all(alive(pid) for pid in pids.values())
    assert cp.process is not None
    os.kill(cp.process.pid, signal.SIGKILL)
    wait_for(lambda: not any(alive(pid) for pid in pids.values()), timeout=10,
             what="every tenant resolver gone with the control plane")
