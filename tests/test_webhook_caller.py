"""The injection log trusts only the API server (injection/caller.py): its client
certificate, verified by the webhook's TLS server against ``--webhook-client-ca``, or its
bearer token, reviewed by the fake API server's TokenReview (tests/fakes/kube.py, the
real wire protocol, through the real ``KubeIdentityApi``). Anyone else is answered the
same, and listed apart as unverified, with why."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from controlplane._kit.localrun import free_port, wait_for
from controlplane.cli import build_parser
from controlplane.cli.serve_settings import webhook_settings
from controlplane.core.errors import ConfigError
from controlplane.core.settings import InjectionConfig
from controlplane.identity.certs import make_ca, make_ca_and_server
from controlplane.injection.admission import review
from controlplane.injection.caller import Caller, CallerCheck
from controlplane.injection.webhook import (
    InjectionLog,
    WebhookTls,
    create_webhook_app,
    run_webhook,
)
from controlplane.kube.identity import KubeIdentityApi
from controlplane.kube.runner import api_client
from tests.factories import client_certificate, jwt
from tests.fakes.kube import FakeKube

REVIEWS = Path(__file__).resolve().parent / "admission"
CONFIG = InjectionConfig(cluster_dns="10.96.0.10")
SERVER = "dns-controlplane-webhook.dns-system.svc"
APISERVER = "kube-apiserver"  # the user name the API server's credentials carry
APISERVER_TOKEN = "apiserver-webhook-token"  # what its kubeconfig would hold
POD_TOKEN = jwt("acme", "web-1")  # a pod's own, valid token (made once: it holds a time)


def seed() -> dict[str, Any]:
    return dict(json.loads((REVIEWS / "deployment-pod.json").read_text()))


@pytest.fixture
def identity_api(kube: FakeKube, tmp_path: Path) -> KubeIdentityApi:
    kube.add_token(APISERVER_TOKEN, username=APISERVER)
    kube.add_pod_token(POD_TOKEN, "acme", "web-1")
    return KubeIdentityApi(api_client(str(kube.kubeconfig(tmp_path)), None), timeout=2.0)


def identify(check: CallerCheck, *, cn: str = "", token: str = "") -> Caller:
    peer = {"subject": ((("commonName", cn),),)} if cn else None
    return asyncio.run(check.identify(peer_cert=peer,
                                      authorization=f"Bearer {token}" if token else ""))


# -- who counts as the API server --------------------------------------------------------
def test_without_configuration_nobody_is_verified() -> None:
    caller = identify(CallerCheck(), cn=APISERVER, token=APISERVER_TOKEN)
    assert not caller.verified and caller.why == "not-configured"
    assert "--webhook-caller-user" in caller.detail


def test_client_certificate_of_the_api_server_user() -> None:
    check = CallerCheck(users=[APISERVER], client_ca=True)
    assert identify(check, cn=APISERVER) == Caller(True, "client-certificate", APISERVER)
    other = identify(check, cn="system:node:worker-1")  # a certificate of the same CA
    assert (other.verified, other.why, other.user) == (False, "certificate-user",
                                                       "system:node:worker-1")
    none = identify(check)
    assert (none.verified, none.why) == (False, "no-credentials")


@pytest.mark.parametrize(("token", "verified", "why"), [
    (APISERVER_TOKEN, True, ""),
    (POD_TOKEN, False, "token-user"),  # valid, but any pod has one
    ("invented", False, "token-refused"),
    ("", False, "no-credentials"),
])
def test_tokens_reviewed_with_tokenreview(identity_api: KubeIdentityApi, token: str,
                                          verified: bool, why: str) -> None:
    check = CallerCheck(users=[APISERVER], api=identity_api)
    caller = identify(check, token=token)
    assert (caller.verified, caller.why) == (verified, why), caller
    if verified:
        assert (caller.by, caller.user) == ("token", APISERVER)


def test_a_certificate_of_another_user_falls_back_to_the_token(
        identity_api: KubeIdentityApi) -> None:
    check = CallerCheck(users=[APISERVER], client_ca=True, api=identity_api)
    assert identify(check, cn="someone", token=APISERVER_TOKEN).verified
    assert identify(check, cn="someone").why == "certificate-user"


def test_reviews_are_cached_and_unavailability_is_said(kube: FakeKube,
                                                       identity_api: KubeIdentityApi) -> None:
    check = CallerCheck(users=[APISERVER], api=identity_api)

    async def twice() -> list[Caller]:
        return [await check.identify(peer_cert=None, authorization=f"Bearer {t}")
                for t in (APISERVER_TOKEN, APISERVER_TOKEN, "invented", "invented")]

    callers = asyncio.run(twice())
    assert [c.verified for c in callers] == [True, True, False, False]
    assert kube.token_review_count() == 2 and check.reviews == 2
    kube.down()
    down = identify(check, token="another")
    assert (down.verified, down.why) == (False, "token-unavailable")
    assert "TokenReview" in down.detail
    assert identify(check, token=APISERVER_TOKEN).verified  # cached: still proven


class _Held:
    """``KubeIdentityApi`` whose reviews wait for ``release`` (a review in flight)."""

    def __init__(self, api: KubeIdentityApi) -> None:
        self.api = api
        self.release = threading.Event()
        self.started = threading.Event()

    def review(self, token: str, audiences: Sequence[str]) -> dict[str, Any]:
        self.started.set()
        self.release.wait(10)
        return self.api.review(token, audiences)

    def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.api.read_pod(namespace, name)


def test_a_flood_of_tokens_costs_at_most_concurrency_reviews(
        kube: FakeKube, identity_api: KubeIdentityApi) -> None:
    held = _Held(identity_api)
    check = CallerCheck(users=[APISERVER], api=held, concurrency=1)

    async def flood() -> tuple[Caller, list[Caller]]:
        first = asyncio.ensure_future(check.identify(peer_cert=None,
                                                     authorization="Bearer invented-0"))
        await asyncio.to_thread(held.started.wait, 10)
        rest = [await check.identify(peer_cert=None, authorization=f"Bearer invented-{i}")
                for i in range(1, 50)]
        held.release.set()
        return await first, rest

    first, rest = asyncio.run(flood())
    assert first.why == "token-refused"
    assert {c.why for c in rest} == {"busy"}
    assert kube.token_review_count() == 1


# -- the log keeps verified entries apart -------------------------------------------------
def test_unverified_floods_cannot_push_verified_entries_out() -> None:
    injections = InjectionLog(CONFIG, keep=10)
    body = seed()
    _, decision = review(body, CONFIG)
    injections.record(decision, 0.0, Caller(True, "client-certificate", APISERVER))
    for _ in range(500):
        injections.record(decision, 1.0, Caller(False, why="no-credentials"))
    verified = injections.summary(caller="verified")["recent"]
    assert len(verified) == 1 and verified[0]["caller"]["user"] == APISERVER
    everything = injections.summary()
    assert len(everything["recent"]) == 11 and everything["recent"][-1]["caller"]["verified"]
    assert everything["unverified"] == {"no-credentials": 500}
    assert {(c["caller"], c["count"]) for c in everything["counts"]} == {
        ("verified", 1), ("unverified", 500)}
    families = {f.name: f for f in injections.collect()}
    samples = {tuple(sorted(s.labels.items())): s.value
               for s in families["dnscp_injection"].samples if s.name.endswith("_total")}
    assert samples[(("caller", "verified"), ("reason", "native"), ("result", "injected"))] == 1
    assert samples[(("caller", "unverified"), ("reason", "native"),
                    ("result", "injected"))] == 500


# -- over TLS: the server asks for a client certificate and verifies it ------------------
@contextmanager
def served(tmp_path: Path, check: CallerCheck, client_ca: Path | None
           ) -> Iterator[tuple[int, Path, InjectionLog]]:
    """The webhook's real HTTPS server on a free port, in a thread of its own."""
    ca, cert, key = make_ca_and_server(SERVER)
    for name, pem in (("ca.crt", ca), ("tls.crt", cert), ("tls.key", key)):
        (tmp_path / name).write_bytes(pem)
    injections = InjectionLog(CONFIG)
    app = create_webhook_app(CONFIG, injections, check)
    port = free_port()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    tls = WebhookTls(tmp_path / "tls.crt", tmp_path / "tls.key", None)
    thread = threading.Thread(target=loop.run_until_complete, args=(run_webhook(
        host="127.0.0.1", port=port, tls=tls, app=app, stop=stop, client_ca=client_ca),))
    thread.start()
    try:
        wait_for(lambda: _listening(port), timeout=10, what="the webhook port")
        yield port, tmp_path / "ca.crt", injections
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def post(port: int, ca: Path, body: bytes, *, cert: tuple[Path, Path] | None = None,
         token: str = "") -> tuple[int, Any]:
    context = ssl.create_default_context(cafile=str(ca))
    if cert:
        context.load_cert_chain(*cert)
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    conn.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                    server_hostname=SERVER)
    try:
        headers = {"Content-Type": "application/json",
                   **({"Authorization": f"Bearer {token}"} if token else {})}
        conn.request("POST", "/inject", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_over_tls_only_the_api_servers_certificate_is_verified(tmp_path: Path) -> None:
    client_ca, client_ca_key = make_ca(common_name="apiserver client CA")
    other_ca, other_ca_key = make_ca(common_name="someone else's CA")
    (tmp_path / "client-ca.crt").write_bytes(client_ca)
    creds = {}
    for who, (ca, ca_key, cn) in {"apiserver": (client_ca, client_ca_key, APISERVER),
                                  "node": (client_ca, client_ca_key, "system:node:w1"),
                                  "forged": (other_ca, other_ca_key, APISERVER)}.items():
        cert, key = client_certificate(ca, ca_key, cn)
        (tmp_path / f"{who}.crt").write_bytes(cert)
        (tmp_path / f"{who}.key").write_bytes(key)
        creds[who] = (tmp_path / f"{who}.crt", tmp_path / f"{who}.key")
    body = json.dumps(seed()).encode()
    expected = review(seed(), CONFIG)[0]
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    check = CallerCheck(users=[APISERVER], client_ca=True)
    with served(server_dir, check, tmp_path / "client-ca.crt") as (port, ca, injections):
        # Every caller the handshake admits gets the same answer.
        assert post(port, ca, body, cert=creds["apiserver"]) == (200, expected)
        assert post(port, ca, body) == (200, expected)
        assert post(port, ca, body, cert=creds["node"]) == (200, expected)
        # A certificate the client CA did not sign: the handshake fails, nothing is logged.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            post(port, ca, body, cert=creds["forged"])
        # Recorded once each answer is sent (the answer never waits for a review).
        recent = wait_for(lambda: len(injections.summary()["recent"]) == 3 and
                          injections.summary()["recent"], timeout=10, what="three entries")
        callers = [(e["caller"]["verified"], e["caller"]["why"], e["caller"]["user"])
                   for e in recent]
    assert sorted(callers) == [(False, "certificate-user", "system:node:w1"),
                               (False, "no-credentials", ""), (True, "", APISERVER)]


# -- flags ---------------------------------------------------------------------------------
def _settings(tmp_path: Path, *flags: str) -> Any:
    args = build_parser().parse_args(["serve", "--source", str(tmp_path), "--webhook-address",
                                      "127.0.0.1:9443", "--webhook-cluster-dns",
                                      "10.96.0.10", *flags])
    return webhook_settings(args, zone="cluster.local")


def test_flags(tmp_path: Path) -> None:
    ca, _ = make_ca()
    (tmp_path / "ca.crt").write_bytes(ca)
    (tmp_path / "junk.crt").write_text("not a certificate")
    s = _settings(tmp_path)  # today's deploy: nothing asked, every entry unverified
    assert (s.client_ca, s.caller_tokenreview, s.caller_users) == ("", False, ())
    s = _settings(tmp_path, "--webhook-client-ca", str(tmp_path / "ca.crt"),
                  "--webhook-caller-tokenreview", "--webhook-caller-user", "a,b",
                  "--webhook-caller-user", "c", "--webhook-caller-audience", "webhook")
    assert s.caller_users == ("a", "b", "c") and s.caller_audiences == ("webhook",)
    refusals = [
        (["--webhook-client-ca", str(tmp_path / "ca.crt")],
         "--webhook-client-ca: needs --webhook-caller-user"),
        (["--webhook-caller-tokenreview"], "--webhook-caller-tokenreview: needs"),
        (["--webhook-caller-user", "a"], "add --webhook-client-ca FILE and/or"),
        (["--webhook-caller-tokenreview", "--webhook-caller-user", "a",
          "--webhook-caller-audience", ""], None),
        (["--webhook-client-ca", str(tmp_path / "ca.crt"), "--webhook-caller-user", "a",
          "--webhook-caller-audience", "x"], "add --webhook-caller-tokenreview"),
        (["--webhook-client-ca", str(tmp_path / "junk.crt"), "--webhook-caller-user", "a"],
         "not a CA bundle that can be loaded"),
        (["--webhook-client-ca", str(tmp_path / "none.crt"), "--webhook-caller-user", "a"],
         "not a CA bundle that can be loaded"),
    ]
    for flags, message in refusals:
        if message is None:
            _settings(tmp_path, *flags)
            continue
        with pytest.raises(ConfigError) as err:
            _settings(tmp_path, *flags)
        assert message in str(err.value), (flags, str(err.value))
