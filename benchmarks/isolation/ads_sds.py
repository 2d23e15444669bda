"""The hop client certificate over ADS (SDS Secret), and a 70 s control-plane outage.

    ip netns exec iso-a python benchmarks/isolation/ads_sds.py      (after ``lab.py up``)

A minimal SotW ADS server (grpc.aio, the envoy protos of the venv) stands in for the
control plane: it sends one sidecar Envoy the hop Cluster (client certificate by SDS over
ADS), the hop Listener on 127.0.0.1:16054, and the Secret, issued at start from the lab's
CA with a 6 h lifetime. Then:
1. the hop answers (a new connection per query, once a second);
2. the ADS server is stopped for 70 s; every query's connection is a full handshake with
   the certificate Envoy holds (the terminator resumes no session; with ISO_TICKET_KEYS=1
   the ticket keys are rotated twice 20 s in, to the same effect);
3. the server comes back with a freshly issued certificate (a restarted control plane knows
   nothing of the old one): how long until the sidecar uses it, and queries meanwhile.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.message
import grpc
from cryptography import x509
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format
from google.protobuf.any_pb2 import Any as AnyPb

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from benchmarks.isolation import lab, pki  # noqa: E402

PORT_ADS, PORT_HOP, ADMIN = 18000, 16054, 9903
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
SDS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def resources(version: str) -> dict[str, list[AnyPb]]:
    ca, ca_key = pki.load_ca(lab.WORK / "pki")
    cert, key = pki.issue_client_cert(ca, ca_key, tenant="a", namespace="team-a", pod="web-1",
                                      lifetime=datetime.timedelta(hours=6))
    tls = lab.upstream_tls(sni_name=lab.sni("a"), client_secret=None)
    tls["typed_config"]["common_tls_context"]["tls_certificate_sds_secret_configs"] = [
        {"name": "hop-client", "sds_config": {"ads": {}, "resource_api_version": "V3"}}]
    cluster = lab.static_cluster("tenant_resolver", lab.RES_IP, lab.TERMINATOR_PORT,
                                 transport_socket=tls)
    listener = lab.hop_listener(PORT_HOP, "tenant_resolver")
    secret = {"name": "hop-client", "tls_certificate": {
        "certificate_chain": {"inline_string": cert.decode()},
        "private_key": {"inline_string": key.decode()}}}
    out: dict[str, list[AnyPb]] = {}
    for type_url, msg, body in ((CDS, cluster_pb2.Cluster(), cluster),
                                (LDS, listener_pb2.Listener(), listener),
                                (SDS, secret_pb2.Secret(), secret)):
        json_format.ParseDict(body, msg)
        packed = AnyPb()
        packed.Pack(msg)
        out[type_url] = [packed]
    print(f"   [ads] version {version}: client certificate serial "
          f"{x509.load_pem_x509_certificate(cert).serial_number:x}", flush=True)
    return out


class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, version: str) -> None:
        self.version = version
        self.resources = resources(version)

    async def StreamAggregatedResources(  # noqa: N802 - the gRPC method's name
            self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest],
            context: Any) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        nonce = 0
        async for req in requests:
            if req.version_info == self.version or req.type_url not in self.resources:
                continue  # an ACK (or a type we do not serve)
            nonce += 1
            yield discovery_pb2.DiscoveryResponse(
                version_info=self.version, type_url=req.type_url, nonce=str(nonce),
                resources=self.resources[req.type_url])


async def serve(version: str) -> grpc.aio.Server:
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(Ads(version), server)
    server.add_insecure_port(f"127.0.0.1:{PORT_ADS}")
    await server.start()
    return server


def envoy_bootstrap() -> Path:
    boot = {"node": {"id": "iso-a-ads-sidecar", "cluster": "a"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": ADMIN}}},
            "dynamic_resources": {
                "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                               "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]},
                "cds_config": {"ads": {}, "resource_api_version": "V3"},
                "lds_config": {"ads": {}, "resource_api_version": "V3"}},
            "static_resources": {"clusters": [lab.static_cluster(
                "xds", "127.0.0.1", PORT_ADS, typed_extension_protocol_options={
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3"
                                 ".HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}}}})]}}
    path = lab.WORK / "iso-a" / "ads-envoy.json"
    path.write_text(json.dumps(boot))
    return path


def client_serial() -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/certs", timeout=1) as r:
            certs = json.loads(r.read())["certificates"]
    except OSError:
        return ""
    for cert in certs:
        for c in cert.get("cert_chain", []):
            if c.get("subject_alt_names"):
                return str(c["serial_number"]).lower()
    return ""


def ask() -> bool:
    wire = dns.message.make_query("a.test", "TXT").to_wire()
    try:
        with socket.create_connection(("127.0.0.1", PORT_HOP), timeout=2) as s:
            s.sendall(len(wire).to_bytes(2, "big") + wire)
            head = s.recv(2)
            if len(head) < 2:
                return False
            body = s.recv(int.from_bytes(head, "big"))
            return b"resolver of tenant a" in body
    except OSError:
        return False


async def probe(seconds: float, label: str) -> None:
    ok = bad = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if ask():
            ok += 1
        else:
            bad += 1
        await asyncio.sleep(1)
    print(f"   {label}: {ok} answered, {bad} failed (a new connection each)", flush=True)


async def main() -> None:
    envoy = subprocess.Popen(lab.envoy_argv(envoy_bootstrap(), "ads-sidecar"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        server = await serve("1")
        t0 = time.monotonic()
        while not ask():
            if time.monotonic() - t0 > 15:
                raise SystemExit("the ADS-configured hop never answered")
            await asyncio.sleep(0.05)
        print(f"1. hop configured over ADS answers {time.monotonic() - t0:.2f} s after the "
              f"server started; sidecar /certs serial {client_serial()}", flush=True)
        await probe(5, "before the outage (5 s)")
        await server.stop(grace=None)
        print("2. ADS server stopped (70 s)", flush=True)
        await probe(20, "outage 0-20 s")
        if os.environ.get("ISO_TICKET_KEYS"):
            for _ in range(2):
                lab.rotate_ticket_keys(["a"])
                await asyncio.sleep(0.5)
            print("   terminator ticket keys rotated twice: from now on full handshakes",
                  flush=True)
        await probe(49, "outage 21-70 s")
        print(f"   sidecar /certs serial during the outage {client_serial()}", flush=True)
        before = client_serial()
        t1 = time.monotonic()
        server = await serve("2")
        print("3. ADS server back with a new certificate", flush=True)
        while client_serial() == before:
            if time.monotonic() - t1 > 60:
                print("   the sidecar did not take the new certificate within 60 s")
                break
            await asyncio.sleep(0.05)
        else:
            print(f"   the sidecar uses the new serial {client_serial()} "
                  f"{time.monotonic() - t1:.2f} s after the server came back", flush=True)
        await probe(5, "after the return (5 s)")
        await server.stop(grace=None)
    finally:
        envoy.terminate()
        envoy.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
