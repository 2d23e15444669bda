"""pytest fixtures that tests/ and e2e/ share: the fake Kubernetes API server.

``tests/conftest.py`` and ``e2e/conftest.py`` import them by name, so every test module
below either directory sees one version. A module that needs other API groups overrides
``kube_resources``; one that needs objects in the cluster from the start overrides
``kube_objects``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes.kube import CORE, OURS, FakeKube, Resource

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def kube_resources() -> list[Resource]:
    """The API groups the fake API server serves (Istio's ServiceEntry is not among them)."""
    return CORE + OURS


@pytest.fixture
def kube_objects() -> list[dict[str, Any]]:
    """The objects the cluster holds when a test starts (none)."""
    return []


@pytest.fixture
def kube(kube_resources: list[Resource], kube_objects: list[dict[str, Any]]
         ) -> Iterator[FakeKube]:
    """A fake API server on a free port holding ``kube_objects``, with a watch bookmark
    every 0.2 s; stopped after the test."""
    k = FakeKube(resources=kube_resources, bookmark_interval=0.2).start()
    for obj in kube_objects:
        k.apply(obj)
    yield k
    k.stop()


def _binding(name: str, role: str, subject: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role},
            "subjects": [subject]}


@pytest.fixture
def admin_kube(kube: FakeKube) -> FakeKube:
    """``kube`` with deploy/admin-access.yaml applied and the admin API's callers:
    ``tenant-token`` (acme's ServiceAccount), ``prom-token`` (Prometheus), ``op-token``
    (alice, bound to the admin reader), ``acme-team-token`` (bob, may read acme's views
    only), ``aud-token`` (carol, a reader whose token names the audience)."""
    kube.add_service_account_token("tenant-token", "acme", "default")
    kube.add_service_account_token("prom-token", "monitoring", "prometheus-k8s")
    kube.add_token("op-token", username="alice", groups=("ops",))
    kube.add_token("acme-team-token", username="bob", groups=("acme-admins",))
    kube.add_token("aud-token", username="carol", audiences=("dns-controlplane",))
    admin_access = [d for d in yaml.safe_load_all(
        (ROOT / "deploy" / "admin-access.yaml").read_text()) if d]
    team_role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                 "metadata": {"name": "acme-dns-view"},
                 "rules": [{"nonResourceURLs": ["/api/v1/views/acme/*"], "verbs": ["get"]}]}
    kube.apply_rbac(*admin_access, team_role,
                    # as the README tells operators: kubectl create clusterrolebinding ...
                    _binding("alice-dns-admin", "dns-controlplane-admin-reader",
                             {"kind": "User", "name": "alice"}),
                    _binding("acme-admins-dns", "acme-dns-view",
                             {"kind": "Group", "name": "acme-admins"}),
                    _binding("carol-dns-admin", "dns-controlplane-admin-reader",
                             {"kind": "User", "name": "carol"}))
    return kube
