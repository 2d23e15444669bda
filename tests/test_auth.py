"""Bearer tokens bound to namespaces and labels."""

from __future__ import annotations

import hashlib

import pytest

from controlplane.cli import main
from controlplane.core.errors import ConfigError
from controlplane.core.model import Workload
from controlplane.identity.auth import Identity, TokenAuthenticator, authorize

AUTH = TokenAuthenticator.from_data({"tokens": [
    {"name": "acme", "token": "acme-secret", "namespace": "acme"},
    {"name": "gw", "sha256": hashlib.sha256(b"gw-secret").hexdigest(), "namespace": "pay",
     "labels": {"app": "gateway"}},
]})


@pytest.mark.parametrize(("metadata", "expected"), [
    ([("authorization", "Bearer acme-secret")], "acme"),
    ([("Authorization", "bearer acme-secret")], "acme"),
    ([("authorization", "Bearer gw-secret")], "gw"),
    ([("authorization", "Bearer wrong")], None),
    ([("authorization", "Basic acme-secret")], None),
    ([], None),
])
def test_authenticate(metadata: list[tuple[str, str]], expected: str | None) -> None:
    identity = AUTH.authenticate(metadata)
    assert (identity.name if identity else None) == expected


def test_authorize_binds_namespace_and_labels() -> None:
    acme = Identity("acme", "acme")
    assert authorize(acme, Workload("n", namespace="acme")) is None
    denied = authorize(acme, Workload("n", namespace="foo"))
    assert denied and "claims namespace 'foo'" in denied
    gw = Identity("gw", "pay", (("app", "gateway"),))
    assert authorize(gw, Workload("n", namespace="pay", labels=(("app", "gateway"),))) is None
    assert "requires pod label app=gateway" in str(
        authorize(gw, Workload("n", namespace="pay", labels=(("app", "other"),))))


@pytest.mark.parametrize("data", [None, {"tokens": []}, {"tokens": [{"token": "x"}]},
                                  {"tokens": [{"namespace": "a"}]},
                                  {"tokens": [{"namespace": "a", "sha256": "zz"}]}])
def test_bad_token_files(data: object) -> None:
    with pytest.raises(ConfigError):
        TokenAuthenticator.from_data(data)


def test_serve_refuses_to_start_without_auth_or_insecure(capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    assert main(["serve", "--source", "examples"]) == 2
    assert "--insecure" in capsys.readouterr().err
