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


def test_replace_names_the_tokens_gone_or_changed_and_new_ones_work_at_once() -> None:
    def tokens(*entries: dict[str, object]) -> TokenAuthenticator:
        return TokenAuthenticator.from_data({"tokens": list(entries)})
    a = {"name": "a", "token": "sa", "namespace": "n1"}
    b = {"name": "b", "token": "sb", "namespace": "n1"}
    c = {"name": "c", "token": "sc", "namespace": "n1"}
    auth = tokens(a, b, c)
    auth.refused = {"a": "its tenant is gone", "c": "two tenants"}
    gone = auth.replace(tokens(dict(a, token="sa2"), dict(b, namespace="n2"),
                               {"name": "d", "token": "sd", "namespace": "n1"}))
    assert gone == {"a", "b", "c"}  # new secret, new namespace, removed
    assert auth.refused == {"a": "its tenant is gone"}  # c is gone; a stays refused
    bearer = [("authorization", "Bearer sd")]
    got = auth.authenticate(bearer)
    assert got is not None and got.name == "d"
    assert auth.authenticate([("authorization", "Bearer sa")]) is None
    assert auth.replace(tokens(dict(a, token="sa2"))) == {"b", "d"}  # unchanged a stays
