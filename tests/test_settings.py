"""Settings groups validate themselves; the CLI takes its defaults from them and reports
every unusable flag as one line; every exception of the package sits in one tree."""

from __future__ import annotations

import ast
import dataclasses
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import controlplane
from controlplane.cli import main
from controlplane.cli.flags import build_parser
from controlplane.cli.serve_settings import serve_settings
from controlplane.core import errors
from controlplane.core.errors import ConfigError, ControlPlaneError
from controlplane.core.settings import (
    AdminSettings,
    AuthSettings,
    DnsSettings,
    PolicyServerSettings,
    ResolverLifetime,
    ResolverSettings,
    Role,
    Settings,
    StatsSettings,
    WebhookSettings,
    XdsSettings,
)


@pytest.mark.parametrize(("make", "flag"), [
    (lambda: DnsSettings(answer_ttl_seconds=29), "--answer-ttl"),
    (lambda: DnsSettings(ttl_by_kind={"pod": 10}), "--ttl"),
    (lambda: DnsSettings(ttl_by_kind={"nope": 60}), "--ttl"),
    (lambda: DnsSettings(max_answers=9), "--max-answers"),
    (lambda: DnsSettings(max_answers=0), "--max-answers"),
    (lambda: DnsSettings(vip_range="not-a-cidr"), "--vip-range"),
    (lambda: XdsSettings(port=70000), "--xds-address"),
    (lambda: XdsSettings(tls_dir="/tls", plaintext=True), "--xds-tls-dir"),
    (lambda: XdsSettings(drain_seconds=-1), "--drain-seconds"),
    (lambda: AdminSettings(port=-1), "--admin-address"),
    (lambda: ResolverSettings(listen_host="0.0.0.0"), "--resolver-listen"),
    (lambda: PolicyServerSettings(client_cert="c.pem"), "--policy-server-client-cert"),
    (lambda: AuthSettings(audiences=()), "--auth-audience"),
    (lambda: WebhookSettings(port=65536), "--webhook-address"),
    (lambda: StatsSettings(max_age_seconds=0), "--sidecar-stats-max-age"),
])
def test_groups_refuse_what_cannot_work(make: Callable[[], object], flag: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.flag == flag and info.value.reason
    assert str(info.value) == f"{flag}: {info.value.reason}"


def test_the_cli_defaults_are_the_settings_defaults() -> None:
    args = build_parser().parse_args(["serve", "--source", "examples", "--insecure"])
    got = serve_settings(args)
    # What the flags above ask for beyond the defaults: no token (so plaintext ADS), and
    # the webhook's defaults read from this machine (its namespace, its resolv.conf).
    assert got.auth == AuthSettings(insecure=True)
    assert got.xds == XdsSettings(plaintext=True)
    want = Settings()
    for group in ("dns", "admin", "resolvers", "policy_server", "stats"):
        assert getattr(got, group) == getattr(want, group), group
    assert dataclasses.replace(got.webhook, injection=want.webhook.injection,
                               server_name="") == want.webhook


def test_the_resolvers_role_needs_no_ads_flags() -> None:
    """--role resolvers: no token, TLS or plaintext choice for an ADS it does not serve."""
    args = build_parser().parse_args([
        "serve", "--source", "examples", "--role", "resolvers", "--resolver-dir", "/tmp/r",
        "--resolver-lifetime", "persistent"])
    got = serve_settings(args)
    assert got.role is Role.RESOLVERS and got.auth == AuthSettings()
    assert got.resolvers.lifetime is ResolverLifetime.PERSISTENT
    plain = serve_settings(build_parser().parse_args(["serve", "--source", "examples",
                                                      "--insecure"]))
    assert plain.role is Role.CONTROLPLANE


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """``main(["serve", ...])`` points the root logger at this test's captured stderr."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(("args", "line"), [
    (["--insecure", "--max-answers", "9"], "--max-answers: is between 1 and 8"),
    (["--insecure", "--ttl", "pod=x"], "--ttl: pod=x: the kind is one of"),
    (["--insecure", "--vip-range", "x"], "--vip-range: 'x' is not a CIDR"),
    (["--xds-plaintext"], "--auth-tokens: give --auth-tokens FILE"),
    (["--insecure", "--upstream-ca-bundle", "/nonexistent"],
     "--upstream-ca-bundle: /nonexistent: no such file"),
    (["--insecure", "--resolver-listen", "0.0.0.0"],
     "--resolver-listen: 0.0.0.0 needs --resolver-advertise"),
    (["--insecure", "--hop-cert-lifetime", "12"],
     "--hop-cert-lifetime: '12' is not a duration like 12h"),
    (["--insecure", "--hop-cert-lifetime", "5m"], "--hop-cert-lifetime: must be at least 10m"),
    (["--insecure", "--resolver-hop-port", "70000"],
     "--resolver-hop-port: port 70000 is not 1-65535"),
    (["--insecure", "--resolver-hop", "nope"], "--resolver-hop: invalid choice: 'nope'"),
    (["--insecure", "--policy-server-client-cert", "pyproject.toml"],
     "--policy-server-client-cert: goes with --policy-server-client-key"),
    # What argparse itself rejects reads the same way (no usage block, one line).
    (["--insecure", "--xds-address", "1.2.3.4:0"], "--xds-address: '1.2.3.4:0' is not HOST:PORT"),
    (["--insecure", "--default-view", "nope"], "--default-view: invalid choice: 'nope'"),
    (["--insecure", "--answer-ttl", "x"], "--answer-ttl: invalid int value: 'x'"),
    (["--insecure", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    # --role resolvers serves no sidecar: what only a control plane uses is refused
    (["--role", "resolvers", "--insecure"], "--insecure: --insecure is for --role controlplane"),
    (["--role", "resolvers", "--xds-plaintext"], "--xds-plaintext: --xds-plaintext is for"),
    (["--role", "resolvers", "--leader-identity", "p"], "--leader-identity: --leader-identity"),
    (["--role", "resolvers", "--webhook-address", "127.0.0.1:9443"], "--webhook-address:"),
    (["--role", "resolvers", "--resolver-dir", "/tmp/x", "--resolver-lifetime", "persistent",
      "--tenant-resolvers", "none"], "--tenant-resolvers: --role resolvers runs the tenant"),
    (["--role", "resolvers"], "--resolver-lifetime: --role resolvers keeps the resolvers"),
    (["--role", "nope"], "--role: invalid choice: 'nope'"),
])
def test_serve_reports_one_line_and_exits_2(args: list[str], line: str,
                                            capsys: pytest.CaptureFixture[str],
                                            keep_logging: None) -> None:
    assert main(["serve", "--source", "examples", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"controlplane: error: {line}"), err


def _exception_classes() -> Iterator[tuple[str, str]]:
    """(module path, class name) of every exception class defined in the package; the
    local-run kit (``_kit``, never imported by product code) keeps its own."""
    root = Path(controlplane.__file__).parent
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] == "_kit":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception"))
                                                 or b.id in _TREE)
                    for b in node.bases):
                yield str(path.relative_to(root)), node.name


_TREE = {name for name, value in vars(errors).items()
         if isinstance(value, type) and issubclass(value, ControlPlaneError)}


def test_one_exception_tree() -> None:
    """Every exception class lives in core/errors.py, under ControlPlaneError, and is
    drawn in its docstring."""
    found = list(_exception_classes())
    assert found and all(module == "core/errors.py" for module, _ in found), found
    doc = errors.__doc__ or ""
    for _, name in found:
        assert name in _TREE, name
        assert f"── {name}" in doc, f"{name} is not drawn in core/errors.py's docstring"


@pytest.mark.parametrize(("argv", "line"), [
    (["serve"], "the following arguments are required: --source"),
    (["bootstrap"], "the following arguments are required: --node-id, --namespace"),
    (["nope"], "command: invalid choice: 'nope'"),
])
def test_parse_errors_are_one_config_error_line(argv: list[str], line: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"controlplane: error: {line}"), err
