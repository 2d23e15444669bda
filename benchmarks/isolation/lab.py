"""The isolation lab: pods as network namespaces, the real Envoy, unbound and kresd.

    python benchmarks/isolation/lab.py up [--tenants N]   # as root; WORK=/tmp/isolation-lab
    python benchmarks/isolation/lab.py down

Layout (one bridge, 10.251.0.0/24; each "pod" is a network namespace):

  iso-res 10.251.0.1  the resolver pod: unbound per tenant on 127.0.0.1 only (a: 5301,
                      b: 5302, then 5303...), the terminator Envoy on 10.251.0.1:853 (one
                      filter chain per tenant, chosen by SNI <t>.tenant-resolver.dns-controlplane,
                      client certificate required, URI SAN prefix spiffe://dns-controlplane/
                      tenant/<t>/), and for comparison today's exposed unbound ("today":
                      plain 10.251.0.1:5353, DoT 10.251.0.1:8853, server-authenticated only).
  iso-a 10.251.0.2    tenant a's pod: its sidecar Envoy (hop listeners 127.0.0.1:15054 mTLS,
                      15154 today's TLS hop, 15254 today's plain hop; client certificate by
                      file-based SDS, swapped by rename) and its kresd front on 127.0.0.1:53
                      (controlplane.translate.front.kresd_front_config, resolver over TCP).
  iso-b 10.251.0.3    tenant b's pod: the same for tenant b.
  iso-x 10.251.0.4    a pod that is nobody's sidecar: no Envoy, only test processes.

The terminator's listener and clusters come from files (LDS/CDS path_config_source with a
watched directory), as the resolver pool would write them; ``add-tenants`` rewrites them.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from benchmarks.isolation import pki  # noqa: E402
from controlplane.dns.views import Upstream  # noqa: E402
from controlplane.translate.front import kresd_front_config  # noqa: E402

WORK = Path(os.environ.get("WORK", "/tmp/isolation-lab"))
ENVOY = os.environ.get("ENVOY", "/work/main/.venv/bin/envoy")
BRIDGE = "br-iso"
PODS = {"iso-res": "10.251.0.1", "iso-a": "10.251.0.2", "iso-b": "10.251.0.3",
        "iso-x": "10.251.0.4"}
RES_IP = PODS["iso-res"]
TERMINATOR_PORT = 853
TODAY_PLAIN, TODAY_TLS = 5353, 8853
HOP_MTLS, HOP_TODAY_TLS, HOP_TODAY_PLAIN = 15054, 15154, 15254
SAN_FORMAT = ("[%START_TIME%] %DOWNSTREAM_PEER_URI_SAN% serial=%DOWNSTREAM_PEER_SERIAL% "
              "cert_end=%DOWNSTREAM_PEER_CERT_V_END% from %DOWNSTREAM_REMOTE_ADDRESS% "
              "sni=%REQUESTED_SERVER_NAME% up=%BYTES_RECEIVED% down=%BYTES_SENT% "
              "ms=%DURATION%\n")


def tenant_names(count: int) -> list[str]:
    return ["a", "b", *[f"t{i:04d}" for i in range(3, count + 1)]]


def unbound_port(index: int) -> int:
    return 5301 + index


def sni(tenant: str) -> str:
    return f"{tenant}.{pki.SERVER_NAME}"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, text=True, capture_output=True)


def netns_up() -> None:
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "link", "set", BRIDGE, "up")
    for i, (ns, ip) in enumerate(PODS.items()):
        sh("ip", "netns", "add", ns)
        host, pod = f"vh{i}-iso", f"vp{i}-iso"
        sh("ip", "link", "add", host, "type", "veth", "peer", "name", pod)
        sh("ip", "link", "set", pod, "netns", ns)
        sh("ip", "link", "set", host, "master", BRIDGE)
        sh("ip", "link", "set", host, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", pod)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", pod, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")


def netns_down() -> None:
    for ns in PODS:
        sh("ip", "netns", "del", ns, check=False)
    sh("ip", "link", "del", BRIDGE, check=False)


def unbound_conf(directory: Path, tenant: str, interfaces: list[str], *,
                 access: str = "127.0.0.0/8", tls: bool = False) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["server:", '  username: ""', '  chroot: ""', f'  directory: "{directory}"',
             '  pidfile: ""', "  use-syslog: no", "  verbosity: 0", "  num-threads: 1",
             "  do-ip6: no", "  incoming-num-tcp: 100", f"  access-control: {access} allow",
             '  local-zone: "." static',
             f'  local-zone: "{tenant}.test." redirect',
             f'  local-data: "{tenant}.test. 60 IN A 10.0.0.{1 + len(tenant) % 200}"',
             f'  local-data: \'{tenant}.test. 60 IN TXT "resolver of tenant {tenant}"\'']
    lines += [f"  interface: {i}" for i in interfaces]
    if tls:
        lines += [f"  tls-port: {TODAY_TLS}", f'  tls-service-key: "{WORK}/pki/server.key"',
                  f'  tls-service-pem: "{WORK}/pki/server.crt"']
    lines += ["remote-control:", "  control-enable: no"]
    conf = directory / "unbound.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _any(type_name: str, **fields: Any) -> dict[str, Any]:
    return {"@type": f"type.googleapis.com/{type_name}", **fields}


def path_source(path: Path) -> dict[str, Any]:
    return {"path_config_source": {"path": str(path),
                                   "watched_directory": {"path": str(path.parent)}},
            "resource_api_version": "V3"}


TLS13 = {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"}
TLS = "envoy.transport_sockets.tls"
TCP_PROXY = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def terminator_chain(tenant: str, sds_dir: Path, log: Path) -> dict[str, Any]:
    tls = _any("envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
               require_client_certificate=True,
               common_tls_context={
                   "tls_params": TLS13,
                   "tls_certificate_sds_secret_configs": [
                       {"name": "server", "sds_config": path_source(sds_dir / "server.json")}],
                   "combined_validation_context": {
                       "default_validation_context": {"match_typed_subject_alt_names": [
                           {"san_type": "URI",
                            "matcher": {"prefix": pki.tenant_prefix(tenant)}}]},
                       "validation_context_sds_secret_config": {
                           "name": "hop-ca", "sds_config": path_source(sds_dir / "ca.json")}}})
    # The design: no TLS session resumption (a resumed session outlives its certificate).
    # ISO_RESUME=1: Envoy's default (resumption on); ISO_SESSION_TIMEOUT=S: sessions live S s;
    # ISO_TICKET_KEYS=1: ticket keys by SDS (rotate-tickets); ISO_MAX_CONN_S=S: the
    # terminator closes every connection after S seconds (max_downstream_connection_duration).
    if os.environ.get("ISO_SESSION_TIMEOUT"):
        tls["session_timeout"] = f"{os.environ['ISO_SESSION_TIMEOUT']}s"
    if os.environ.get("ISO_TICKET_KEYS"):  # keys by SDS, rotated by rotate_ticket_keys
        tls["session_ticket_keys_sds_secret_config"] = {
            "name": f"tickets:{tenant}", "sds_config": path_source(sds_dir / f"tickets-{tenant}.json")}
    if not os.environ.get("ISO_RESUME") and not os.environ.get("ISO_TICKET_KEYS"):
        tls["disable_stateless_session_resumption"] = True
        tls["disable_stateful_session_resumption"] = True
    limit = ({"max_downstream_connection_duration": f"{os.environ['ISO_MAX_CONN_S']}s"}
             if os.environ.get("ISO_MAX_CONN_S") else {})
    proxy = _any(TCP_PROXY, stat_prefix=f"tenant_{tenant}", cluster=f"resolver:{tenant}", **limit,
                 access_log=[{"name": "envoy.access_loggers.file", "typed_config": _any(
                     "envoy.extensions.access_loggers.file.v3.FileAccessLog", path=str(log),
                     log_format={"text_format_source": {"inline_string": SAN_FORMAT}})}])
    return {"name": f"tenant:{tenant}",
            "filter_chain_match": {"server_names": [sni(tenant)]},
            "transport_socket": {"name": TLS, "typed_config": tls},
            "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}]}


def static_cluster(name: str, host: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": host,
                                                              "port_value": port}}}}]}]},
            **extra}


def write_atomic(path: Path, body: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=1))
    tmp.replace(path)


def write_terminator_resources(tenants: list[str], version: str) -> None:
    d = WORK / "terminator"
    if os.environ.get("ISO_TICKET_KEYS"):
        missing = [t for t in tenants if not (d / "sds" / f"tickets-{t}.json").exists()]
        if missing:
            rotate_ticket_keys(missing)
    chains = [terminator_chain(t, d / "sds", d / "access.log") for t in tenants]
    listener = _any("envoy.config.listener.v3.Listener", name="tenant-hop",
                    address={"socket_address": {"address": RES_IP,
                                                "port_value": TERMINATOR_PORT}},
                    listener_filters=[{"name": "envoy.filters.listener.tls_inspector",
                                       "typed_config": _any(
                                           "envoy.extensions.filters.listener.tls_inspector"
                                           ".v3.TlsInspector")}],
                    filter_chains=chains)
    clusters = [_any("envoy.config.cluster.v3.Cluster",
                     **static_cluster(f"resolver:{t}", "127.0.0.1", unbound_port(i)))
                for i, t in enumerate(tenants)]
    write_atomic(d / "cds" / "cds.json", {"version_info": version, "resources": clusters})
    write_atomic(d / "lds" / "lds.json", {"version_info": version, "resources": [listener]})


def rotate_ticket_keys(tenants: list[str]) -> None:
    """A new ticket key first (encrypts), the previous one kept second (still decrypts): a
    session outlives at most two rotations."""
    d = WORK / "terminator" / "sds"
    for t in tenants:
        path = d / f"tickets-{t}.json"
        keys = [{"inline_bytes": base64.b64encode(os.urandom(80)).decode()}]
        if path.exists():
            old = json.loads(path.read_text())["resources"][0]["session_ticket_keys"]["keys"]
            keys.append(old[0])
        write_atomic(path, {"resources": [_any(
            "envoy.extensions.transport_sockets.tls.v3.Secret", name=f"tickets:{t}",
            session_ticket_keys={"keys": keys})]})


def secret_file(path: Path, name: str, *, cert: Path | None = None, key: Path | None = None,
                ca: Path | None = None) -> None:
    secret: dict[str, Any] = {"name": name}
    if ca is not None:
        secret["validation_context"] = {"trusted_ca": {"inline_string": ca.read_text()}}
    else:
        assert cert is not None and key is not None
        secret["tls_certificate"] = {"certificate_chain": {"inline_string": cert.read_text()},
                                     "private_key": {"inline_string": key.read_text()}}
    write_atomic(path, {"resources": [
        _any("envoy.extensions.transport_sockets.tls.v3.Secret", **secret)]})


def terminator_bootstrap() -> Path:
    d = WORK / "terminator"
    for sub in ("sds", "lds", "cds"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    p = WORK / "pki"
    secret_file(d / "sds" / "server.json", "server", cert=p / "server.crt", key=p / "server.key")
    secret_file(d / "sds" / "ca.json", "hop-ca", ca=p / "ca.crt")
    boot = {"node": {"id": "terminator", "cluster": "tenant-resolvers"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": 9901}}},
            "dynamic_resources": {"lds_config": path_source(d / "lds" / "lds.json"),
                                  "cds_config": path_source(d / "cds" / "cds.json")}}
    out = d / "envoy.json"
    out.write_text(json.dumps(boot, indent=1))
    return out


def upstream_tls(*, sni_name: str, client_secret: Path | None) -> dict[str, Any]:
    common: dict[str, Any] = {
        "tls_params": TLS13,
        "validation_context": {
            "trusted_ca": {"filename": str(WORK / "pki" / "ca.crt")},
            "match_typed_subject_alt_names": [{"san_type": "DNS",
                                               "matcher": {"exact": pki.SERVER_NAME}}]}}
    if client_secret is not None:
        common["tls_certificate_sds_secret_configs"] = [
            {"name": "hop-client", "sds_config": path_source(client_secret)}]
    return {"name": TLS, "typed_config": _any(
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        sni=sni_name, common_tls_context=common)}


def hop_listener(port: int, cluster: str) -> dict[str, Any]:
    return {"name": f"hop:{port}", "address": {"socket_address": {"address": "127.0.0.1",
                                                                   "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy",
                                            "typed_config": _any(TCP_PROXY, stat_prefix=cluster,
                                                                 cluster=cluster)}]}]}


def sidecar_bootstrap(pod: str, tenant: str) -> Path:
    d = WORK / pod
    (d / "sds").mkdir(parents=True, exist_ok=True)
    p = WORK / "pki"
    client = d / "sds" / "hop-client.json"
    secret_file(client, "hop-client", cert=p / f"{tenant}.crt", key=p / f"{tenant}.key")
    boot = {"node": {"id": f"{pod}-sidecar", "cluster": tenant},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": 9902}}},
            "static_resources": {
                "listeners": [hop_listener(HOP_MTLS, "tenant_resolver"),
                              hop_listener(HOP_TODAY_TLS, "today_tls"),
                              hop_listener(HOP_TODAY_PLAIN, "today_plain")],
                "clusters": [
                    static_cluster("tenant_resolver", RES_IP, TERMINATOR_PORT,
                                   transport_socket=upstream_tls(sni_name=sni(tenant),
                                                                 client_secret=client)),
                    static_cluster("today_tls", RES_IP, TODAY_TLS,
                                   transport_socket=upstream_tls(sni_name=pki.SERVER_NAME,
                                                                 client_secret=None)),
                    static_cluster("today_plain", RES_IP, TODAY_PLAIN)]}}
    out = d / "envoy.json"
    out.write_text(json.dumps(boot, indent=1))
    return out


def kresd_config(pod: str) -> Path:
    d = WORK / pod
    (d / "kresd-cache").mkdir(parents=True, exist_ok=True)
    (d / "kresd-run").mkdir(parents=True, exist_ok=True)
    lua = kresd_front_config(
        listen=(Upstream("127.0.0.1", 53),), envoy=Upstream("127.0.0.1", 15053),
        set_url="http://127.0.0.1:15055/envoy-set",
        resolvers=(Upstream("127.0.0.1", HOP_MTLS),), resolver_tcp=True,
        cache_dir=str(d / "kresd-cache"))
    out = d / "kresd.lua"
    out.write_text(lua)
    return out


def start(name: str, ns: str, argv: list[str]) -> int:
    log = open(WORK / "logs" / f"{name}.log", "w")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    pids = json.loads((WORK / "pids.json").read_text()) if (WORK / "pids.json").exists() else {}
    pids[name] = proc.pid
    (WORK / "pids.json").write_text(json.dumps(pids, indent=1))
    return proc.pid


def envoy_argv(config: Path, name: str) -> list[str]:
    return [ENVOY, "-c", str(config), "--concurrency", "1", "--disable-hot-restart",
            "--log-level", "warn", "--service-node", name, "--service-cluster", name]


def up(count: int) -> None:
    if WORK.exists():
        shutil.rmtree(WORK)
    (WORK / "logs").mkdir(parents=True)
    pki.main(WORK / "pki")
    netns_up()
    tenants = tenant_names(count)
    for i, t in enumerate(tenants):
        conf = unbound_conf(WORK / f"unbound-{t}", t, [f"127.0.0.1@{unbound_port(i)}"])
        start(f"unbound-{t}", "iso-res", ["unbound", "-d", "-c", str(conf)])
    today = unbound_conf(WORK / "unbound-today", "a",
                         [f"{RES_IP}@{TODAY_PLAIN}", f"{RES_IP}@{TODAY_TLS}"],
                         access="10.251.0.0/24", tls=True)
    start("unbound-today", "iso-res", ["unbound", "-d", "-c", str(today)])
    boot = terminator_bootstrap()
    write_terminator_resources(tenants, "1")
    start("terminator", "iso-res", envoy_argv(boot, "terminator"))
    for pod, tenant in (("iso-a", "a"), ("iso-b", "b")):
        start(f"sidecar-{tenant}", pod, envoy_argv(sidecar_bootstrap(pod, tenant),
                                                    f"sidecar-{tenant}"))
        start(f"kresd-{tenant}", pod, ["kresd", "-n", "-c", str(kresd_config(pod)),
                                       str(WORK / pod / "kresd-run")])
    wait_ready()


def wait_ready(timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    checks = [("iso-res", 9901), ("iso-a", 9902), ("iso-b", 9902)]
    while checks and time.monotonic() < deadline:
        ns, port = checks[0]
        r = sh("ip", "netns", "exec", ns, "curl", "-s", f"http://127.0.0.1:{port}/ready",
               check=False)
        if r.stdout.strip() == "LIVE":
            checks.pop(0)
        else:
            time.sleep(0.1)
    if checks:
        raise SystemExit(f"not ready: {checks}")
    r = sh("ip", "netns", "exec", "iso-res", "curl", "-s",
           "http://127.0.0.1:9901/listeners", check=False)
    print("terminator listeners:", r.stdout.strip())


def down() -> None:
    pids_file = WORK / "pids.json"
    if pids_file.exists():
        for name, pid in json.loads(pids_file.read_text()).items():
            try:
                os.killpg(pid, signal.SIGTERM)  # its own session: ip netns exec + the child
            except ProcessLookupError:
                continue
            print("stopped", name, pid)
        pids_file.unlink()
    for extra in WORK.glob("iso-a/kresd-*/pid"):  # front_latency.sh's kresds
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(extra.read_text()), signal.SIGTERM)
        extra.unlink()
    netns_down()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["up", "down", "add-tenants", "rotate-tickets"])
    parser.add_argument("--tenants", type=int, default=2)
    args = parser.parse_args()
    if args.action == "up":
        up(args.tenants)
    elif args.action == "rotate-tickets":
        rotate_ticket_keys(tenant_names(args.tenants))
    elif args.action == "add-tenants":
        write_terminator_resources(tenant_names(args.tenants), str(time.time()))
    else:
        down()


if __name__ == "__main__":
    main()
