"""One injected pod, run on this machine the way a kubelet would run it.

Run as root inside a fresh network namespace (``unshare --net``), which stands for the
pod's: only ``lo``, nothing else listening, ``net.ipv4.ip_unprivileged_port_start`` at
its default (1024) until the pod's sysctls are applied, and the injected addresses as
they are (the DNS listener on 127.0.0.1:53, admin 15000, stats 15090, the control
plane at ``dns-controlplane.dns-system.svc.cluster.local:18000``). In it:

1. "the cluster": a cluster DNS (dnsmasq) that knows the control plane's Service name,
   a forwarding tenant's own DNS server (dnsmasq), and the control plane (ADS over TLS
   with a certificate for the Service name, the webhook on HTTPS);
2. the Deployment-style AdmissionReview of ``tests/admission/deployment-pod.json`` is
   POSTed to the webhook over TLS (verified with the CA it made), its JSON patch
   applied with ``jsonpatch`` and the pod parsed with the ``kubernetes`` models;
3. the kubelet's part (the pod's eth0 with its IP, a veth here): the API server's name for the pod, the pod's sysctls written to
   /proc/sys, its resolv.conf rendered from the injected ``dnsConfig``;
4. the injected containers started from their own command, args (``$(POD_NAME)``
   expanded) and env (downward API values), as their ``securityContext`` says (uid and
   gid, no capabilities, no_new_privs, read-only root filesystem) with the pod's
   resolv.conf as /etc/resolv.conf: Envoy (the local binary stands for the image's),
   then its DNS front (``dns-front``: the local kresd stands for the image's; its
   ``emptyDir`` a fresh directory, writable, at the container's mount path);
5. each one's startup probe (native) or postStart hook (legacy) run as the kubelet runs
   them, the front started once Envoy's passed; then the application: a static musl
   client, a glibc client and getent resolve through it with the pod's resolv.conf, and
   a table name and an external name are asked over UDP and TCP.

Prints one JSON object with what happened on the last line of stdout.
``--no-sysctl`` skips step 3's sysctl (the negative control).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import jsonpatch

from controlplane._kit.localrun import ControlPlane, Process, http_text, rss_mb, wait_for
from controlplane.injection.front import FRONT_NAME
from controlplane.injection.sidecar import SIDECAR_NAME, resolv_conf
from controlplane.runtime.process import holds_port
from e2e.harness.realclients import AuthoritativeDnsmasq, Clients, run_client, run_getent
from tests.fakes.podsim import container_argv, container_env, parse_pod

ROOT = Path(__file__).resolve().parents[2]
REVIEW = ROOT / "tests" / "admission" / "deployment-pod.json"
XDS_NAME = "dns-controlplane.dns-system.svc.cluster.local"
WEBHOOK_NAME = "dns-controlplane-webhook.dns-system.svc"
WEBHOOK_PORT = 9443
POD_NAME_SUFFIX = "x2x9z"  # what the API server appends to generateName
POD_IP = "10.244.1.23"
WEB_IP = "10.96.7.10"
OTHER_TENANT_IP = "10.96.8.20"
EXTERNAL = "www.example.com"
EXTERNAL_IP = "203.0.113.10"
BLOCKED = "ads.tracker.example"


def manifests(tenant_server_port: int) -> str:
    return f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: acme, labels: {{tenant: acme, dns.example.com/inject: enabled}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: foo, labels: {{tenant: foo, dns.example.com/inject: enabled}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: acme}}
spec: {{clusterIP: {WEB_IP}, ports: [{{name: http, port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: billing, namespace: foo}}
spec: {{clusterIP: {OTHER_TENANT_IP}, ports: [{{name: http, port: 80}}]}}
---
apiVersion: networking.example.com/v1alpha1
kind: DnsPolicy
metadata: {{name: acme}}
spec:
  namespaceSelector: {{matchLabels: {{tenant: acme}}}}
  server: {{address: '127.0.0.1:{tenant_server_port}'}}
  policy:
    whitelist: ["*.acme.svc.cluster.local"]
    blacklist: ["*.svc.cluster.local", "*.tracker.example"]
    defaultAction: ALLOW
---
apiVersion: networking.example.com/v1alpha1
kind: DnsPolicy
metadata: {{name: foo}}
spec:
  namespaceSelector: {{matchLabels: {{tenant: foo}}}}
  policy:
    whitelist: ["*.foo.svc.cluster.local"]
    defaultAction: DENY
"""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def post_review(body: dict[str, Any], *, ca: Path, port: int) -> dict[str, Any]:
    """POST /inject over TLS, verifying the webhook's certificate for its Service name."""
    context = ssl.create_default_context(cafile=str(ca))
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn = http.client.HTTPSConnection(WEBHOOK_NAME, port, context=context, timeout=5)
    conn.sock = context.wrap_socket(raw, server_hostname=WEBHOOK_NAME)
    try:
        conn.request("POST", "/inject", body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"webhook answered {response.status}: {data!r}")
        return dict(json.loads(data))
    finally:
        conn.close()


def webhook_up(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def as_user(security: dict[str, Any]) -> list[str]:
    """setpriv for a container's securityContext: its uid/gid, no capabilities at all
    (drop ALL: bounding, inheritable and ambient sets), no_new_privs."""
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False and security["runAsNonRoot"] is True
    uid, gid = security["runAsUser"], security.get("runAsGroup", security["runAsUser"])
    assert uid != 0
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
            "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all",
            "--no-new-privs", "--"]


def empty_dirs(pod: dict[str, Any], container: dict[str, Any], workdir: Path
               ) -> dict[str, Path]:
    """The container's emptyDir volumes, made as the kubelet makes them (an empty
    directory anyone may write, mode 0777): mountPath -> dir."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    out = {}
    for mount in container.get("volumeMounts", []):
        if "emptyDir" not in volumes[mount["name"]]:
            continue
        directory = workdir / "volumes" / mount["name"]
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)
        out[mount["mountPath"]] = directory
    return out


def projected_tokens(pod: dict[str, Any], container: dict[str, Any], workdir: Path
                     ) -> dict[str, Path]:
    """The container's projected ServiceAccount token volumes, made as the kubelet makes
    them (a token file per source, readable by the container's user): mountPath -> dir."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    out = {}
    for mount in container.get("volumeMounts", []):
        sources = volumes[mount["name"]].get("projected", {}).get("sources", [])
        tokens = [s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s]
        if not tokens:
            continue
        directory = workdir / "volumes" / mount["name"]
        directory.mkdir(parents=True, exist_ok=True)
        for token in tokens:
            path = directory / token["path"]
            path.write_text(f"token-of-{pod['metadata']['name']}-for-{token['audience']}")
            path.chmod(volumes[mount["name"]]["projected"].get("defaultMode", 0o644))
        out[mount["mountPath"]] = directory
    return out


def container_command(argv: list[str], security: dict[str, Any], resolv: Path,
                      mounts: dict[str, Path], writable: dict[str, Path] | None = None
                      ) -> list[str]:
    """``argv`` in a mount namespace: the pod's resolv.conf, the volume ``mounts``
    (read-only, on a private /run), the ``writable`` ones (emptyDirs), and a read-only
    root when the container asks."""
    binds = "".join(f'mkdir -p "{target}" && mount --bind -o ro "{source}" "{target}" || '
                    "exit 94; " for target, source in mounts.items())
    if mounts:
        binds = "mount -t tmpfs tmpfs /run || exit 93; " + binds
    binds += "".join(f'mkdir -p "{target}" && mount --bind "{source}" "{target}" || '
                     "exit 92; " for target, source in (writable or {}).items())
    readonly = "mount -o remount,bind,ro / || exit 96; " if security.get(
        "readOnlyRootFilesystem") else ""
    script = ('mount --rbind / / || exit 95; ' + binds + readonly
              + 'mount --bind "$0" /etc/resolv.conf || exit 97; exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
            str(resolv), *as_user(security), *argv]


def in_container(pid: int, security: dict[str, Any], command: list[str],
                 timeout: float) -> subprocess.CompletedProcess[str]:
    """An exec probe or hook: ``command`` in the container's mount namespace, as its user."""
    return subprocess.run(["nsenter", f"--target={pid}", "--mount", "--",
                           *as_user(security), *command],
                          capture_output=True, text=True, timeout=timeout, check=False)


def dns_answer_type(name: str, rdtype: str, timeout: float = 3.0) -> tuple[str, list[str]]:
    try:
        r = dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=53,
                          timeout=timeout)
    except (OSError, dns.exception.DNSException) as exc:
        return f"error: {type(exc).__name__}", []
    return dns.rcode.to_text(r.rcode()), sorted(rd.to_text() for rrset in r.answer
                                                  for rd in rrset)


def dns_answer(name: str, timeout: float = 0.5) -> tuple[str, list[str]]:
    r = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=53, timeout=timeout)
    return dns.rcode.to_text(r.rcode()), sorted(rd.to_text() for rrset in r.answer
                                                  for rd in rrset)


def dns_tcp_answer(name: str, rdtype: str = "A", timeout: float = 3.0
                   ) -> tuple[str, list[str]]:
    """One query over TCP to the pod's DNS address; ("error: ...", []) when it fails."""
    try:
        r = dns.query.tcp(dns.message.make_query(name, rdtype), "127.0.0.1", port=53,
                          timeout=timeout)
    except (OSError, dns.exception.DNSException) as exc:
        return f"error: {type(exc).__name__}", []
    return dns.rcode.to_text(r.rcode()), sorted(rd.to_text() for rrset in r.answer
                                                  for rd in rrset)


FRONT_SET_WITH_PAIRS = re.compile(r'\[dns-front\] set "[^"]*": [1-9][0-9]* pairs')


def front_has_pairs(log: str) -> bool:
    """Whether the front's log shows a set with pairs (the first may be empty: a pair
    enters the set only after the control plane's settle time, table first)."""
    return FRONT_SET_WITH_PAIRS.search(log) is not None


def envoy_table_queries(tenant: str) -> int:
    """Envoy's per-tenant count of queries its DNS filter received (admin on 15000)."""
    stats = http_text("http://127.0.0.1:15000/stats?filter=dns_filter")
    for line in stats.splitlines():
        key, _, value = line.partition(": ")
        if key == f"dns_filter.tenant.{tenant}.downstream_rx_queries":
            return int(value)
    return 0


def gate(process: Process, container: dict[str, Any], mode: str,
         seconds: float) -> tuple[bool, dict[str, Any]]:
    """The kubelet's gate on a started container: its startup probe until it passes
    (native), or its postStart hook to completion (legacy). (passed, what was seen)."""
    security = container["securityContext"]
    if mode == "native":
        probe = container["startupProbe"]["exec"]["command"]
        failures = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not process.alive():
                return False, {"probe_failures_before_success": failures, "exited": True}
            if in_container(process.pid, security, probe, timeout=5).returncode == 0:
                return True, {"probe_failures_before_success": failures}
            failures += 1
            time.sleep(0.02)
        return False, {"probe_failures_before_success": failures}
    hook = container["lifecycle"]["postStart"]["exec"]["command"]
    result = in_container(process.pid, security, hook, timeout=seconds + 5)
    return result.returncode == 0, {"hook": {"exit": result.returncode,
                                             "stderr": result.stderr[-500:]}}


def user_of(pid: int) -> list[list[str]]:
    return [line.split()[1:3] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith(("Uid:", "CapEff:", "CapBnd:", "NoNewPrivs:"))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": args.mode, "sysctl": not args.no_sysctl}
    workdir = Path(args.workdir)
    # The pod's interfaces: lo, and eth0 with the pod IP (a veth whose peer stays here):
    # getaddrinfo with AI_ADDRCONFIG (getent) returns IPv4 only when a non-loopback
    # interface has an IPv4 address, as in every pod.
    for command in (["link", "set", "lo", "up"],
                    ["link", "add", "eth0", "type", "veth", "peer", "name", "node0"],
                    ["addr", "add", f"{POD_IP}/24", "dev", "eth0"],
                    ["link", "set", "eth0", "up"], ["link", "set", "node0", "up"]):
        subprocess.run(["ip", *command], check=True)
    started: list[Any] = []
    try:
        # 1. The cluster.
        cluster_dns = AuthoritativeDnsmasq({XDS_NAME: "127.0.0.1"}, workdir / "cluster-dns")
        started.append(cluster_dns.start())
        tenant_server = AuthoritativeDnsmasq({EXTERNAL: EXTERNAL_IP, BLOCKED: "203.0.113.66"},
                                             workdir / "tenant-server")
        started.append(tenant_server.start())
        tls = workdir / "xds-tls"
        subprocess.run([sys.executable, "-m", "controlplane", "xds-certs", "--dir", str(tls),
                        "--name", XDS_NAME], check=True, capture_output=True, timeout=60)
        source = workdir / "manifests"
        source.mkdir(parents=True)
        (source / "cluster.yaml").write_text(manifests(tenant_server.port))
        cp = ControlPlane(source, workdir, xds_port=18000, xds_tls_dir=tls, extra_args=[
            "--debounce", "0.02", "--webhook-address", f"127.0.0.1:{WEBHOOK_PORT}",
            "--webhook-cert-dir", str(workdir / "webhook-tls"),
            "--webhook-cluster-dns", f"127.0.0.1:{cluster_dns.port}",
            "--webhook-sidecar-mode", args.mode])
        started.append(cp)
        cp.start()
        wait_for(lambda: webhook_up(WEBHOOK_PORT), timeout=20, what="the webhook")

        # 2. Admission, over HTTPS.
        review = json.loads(REVIEW.read_text())
        before = copy.deepcopy(review["request"]["object"])
        answer = post_review(review, ca=workdir / "webhook-tls" / "ca.crt", port=WEBHOOK_PORT)
        response = answer["response"]
        assert response["uid"] == review["request"]["uid"] and response["allowed"] is True
        ops = json.loads(base64.b64decode(response["patch"]))
        pod = jsonpatch.apply_patch(before, ops)
        out["patch_ops"] = [f"{op['op']} {op['path']}" for op in ops]
        out["pod_before"], out["pod_after"] = before, copy.deepcopy(pod)

        # 3. The API server names the pod; the kubelet sets up its sandbox.
        pod["metadata"]["name"] = pod["metadata"]["generateName"] + POD_NAME_SUFFIX
        v1 = parse_pod(pod)
        sysctls = {s.name: s.value for s in v1.spec.security_context.sysctls or []}
        out["pod_sysctls"] = sysctls
        if not args.no_sysctl:
            for name, value in sysctls.items():
                Path("/proc/sys", *name.split(".")).write_text(value)
        out["unprivileged_port_start"] = int(
            Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
        resolv = workdir / "pod-resolv.conf"
        resolv.write_text(resolv_conf(pod["spec"]["dnsConfig"]))
        out["resolv_conf"] = resolv.read_text()

        # 4. The injected containers, as written.
        kind = "initContainers" if args.mode == "native" else "containers"
        sidecar = pod["spec"][kind][0]
        assert sidecar["name"] == SIDECAR_NAME
        front_spec = pod["spec"][kind][1] if pod["spec"][kind][1]["name"] == FRONT_NAME else None
        out["fronted"] = front_spec is not None
        argv = container_argv(sidecar, pod)
        env = container_env(sidecar, pod)
        out["env"] = env
        bootstrap = json.loads(argv[2])
        out["node_id_in_args"] = bootstrap["node"]["id"]
        out["node_metadata"] = bootstrap["node"]["metadata"]
        (ads,) = bootstrap["dynamic_resources"]["ads_config"]["grpc_services"]
        out["ads"] = {"target": ads["google_grpc"]["target_uri"],
                      "token_file": ads["google_grpc"]["call_credentials"][0]["from_plugin"][
                          "typed_config"]["secret_data"]["filename"]}
        assert argv[0] == "envoy"
        argv[0] = args.envoy  # the image's /usr/local/bin/envoy
        security = sidecar["securityContext"]
        mounts = projected_tokens(pod, sidecar, workdir)
        out["volume_mounts"] = sorted(mounts)
        command = container_command(argv, security, resolv, mounts)
        envoy = Process(SIDECAR_NAME, command, workdir / "sidecar.log",
                        env={**env, "PATH": "/usr/local/bin:/usr/bin:/bin"})
        started.append(envoy)
        t0 = time.monotonic()
        envoy.start()

        # 5. Start order: the probe (native) or the hook (legacy) gates the next container.
        ready, seen = gate(envoy, sidecar, args.mode, args.probe_seconds)
        out.update(seen)
        if not ready and seen.get("exited"):
            raise RuntimeError(f"the sidecar exited:\n{envoy.log()[-3000:]}")
        front: Process | None = None
        if ready and front_spec is not None:
            out["envoy_dns_listener_15053"] = holds_port(envoy.pid, 15053, udp=True)
            front_env = container_env(front_spec, pod)
            front_argv = container_argv(front_spec, pod)
            front_dirs = empty_dirs(pod, front_spec, workdir)
            out["front_volume_mounts"] = sorted(front_dirs)
            front = Process(FRONT_NAME, container_command(
                front_argv, front_spec["securityContext"], resolv, {}, front_dirs),
                workdir / "front.log",
                env={**front_env, "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin"})
            started.append(front)
            front.start()
            ready, seen = gate(front, front_spec, args.mode, args.probe_seconds)
            out["front_gate"] = seen
            out["front_listening"] = {proto: holds_port(front.pid, 53, udp=proto == "udp")
                                      for proto in ("udp", "tcp")}
            (config_dir,) = front_dirs.values()
            written = config_dir / "front.lua"
            out["front_config_loaded"] = (written.exists() and written.read_text()
                                          == front_env["DNS_FRONT_CONFIG"])
            out["front_log_tail"] = front.log()[-2000:]
            if front.alive():
                out["front_user"] = user_of(front.pid)
        t_ready = time.monotonic()
        out["ready"] = ready
        out["sidecar_start_to_ready_ms"] = round((t_ready - t0) * 1000, 1)
        if not ready:
            out["sidecar_log_tail"] = envoy.log()[-2000:]
            try:
                out["admin_ready"] = http_text("http://127.0.0.1:15000/ready").strip()
            except OSError as exc:
                out["admin_ready"] = f"error: {exc}"
            out["nodes"] = cp.get("/api/v1/nodes")
            return out
        # The application starts now: its very first query must be answered.
        out["first_answer"] = dns_answer_type("web.acme.svc.cluster.local", "A", timeout=2)
        out["sidecar_start_to_first_answer_ms"] = round((time.monotonic() - t0) * 1000, 1)

        # The application's resolvers, with the pod's resolv.conf.
        clients = Clients(musl=Path(args.musl), glibc=Path(args.glibc))
        names = ["web", "web.acme", "web.acme.svc.cluster.local", EXTERNAL, BLOCKED,
                 "billing.foo"]
        resolved: dict[str, dict[str, Any]] = {}
        # Only when the sidecar answers at all: on SERVFAIL musl retries until its timeout,
        # every client and name (the front without a set listener and hop from the
        # control plane answers SERVFAIL to everything).
        if out["first_answer"][0] == "NOERROR":
            for label, binary in clients.items():
                resolved[label] = {r.name: r.line() for r in run_client(binary, resolv, names,
                                                                        family=4)}
            resolved["getent"] = {r.name: r.line() for r in run_getent(resolv, names,
                                                                        family=4)}
        out["resolved"] = resolved
        out["tenant_server_asked"] = tenant_server.queries()
        out["cluster_dns_asked"] = cluster_dns.queries()

        # Over TCP (the front; Envoy has no TCP): a table name, and an external name,
        # which the front sends to the tenant resolver through Envoy's TCP hop.
        if front is not None:
            with contextlib.suppress(TimeoutError):  # the test says so: front_log_tail
                wait_for(lambda: front_has_pairs(front.log()), timeout=10,
                         what="a set with pairs in the front")
        table_before = envoy_table_queries("acme")
        out["tcp"] = {"web": dns_tcp_answer("web.acme.svc.cluster.local"),
                      "external": dns_tcp_answer(EXTERNAL)}
        out["udp_txt_external"] = dns_answer_type(EXTERNAL, "TXT")
        # Table names reach Envoy's table (its per-tenant counter: what the console reads).
        out["envoy_table_queries_for_tcp_web"] = envoy_table_queries("acme") - table_before

        def resolver_counted() -> dict[str, Any] | None:  # read by the control plane each second
            (res,) = [r for r in cp.get("/api/v1/resolvers")["resolvers"]
                      if r["tenant"] == "acme"]
            return dict(res) if res["stats"].get("total.num.queries", 0) > 0 else None

        try:
            resolver = wait_for(resolver_counted, timeout=10, what="tenant resolver statistics")
            out["tenant_resolver"] = {"tenant": resolver["tenant"],
                                      "queries": resolver["stats"]["total.num.queries"]}
        except TimeoutError:
            out["tenant_resolver"] = None
        out["nodes"] = [{"node_id": n.get("node_id"), "namespace": n.get("namespace"),
                         "labels": n.get("labels"), "tenant": n.get("tenant")}
                        for n in cp.get("/api/v1/nodes")]
        out["injection_api"] = cp.get("/api/v1/injection")
        out["metrics"] = [line for line in http_text(f"{cp.admin_url}/metrics").splitlines()
                          if line.startswith("dnscp_injection_total")]
        out["envoy_rss_mb"] = round(rss_mb(envoy.pid), 1)
        # Private (not shared with other processes, e.g. the binary's text other sidecars
        # on the node map too): what one more pod really costs.
        rollup = Path(f"/proc/{envoy.pid}/smaps_rollup").read_text().splitlines()
        private_kb = sum(int(line.split()[1]) for line in rollup
                         if line.startswith(("Private_Clean:", "Private_Dirty:")))
        out["envoy_private_mb"] = round(private_kb / 1024, 1)
        out["envoy_user"] = user_of(envoy.pid)
        if front is not None:
            out["front_rss_mb"] = round(rss_mb(front.pid), 1)
            rollup = Path(f"/proc/{front.pid}/smaps_rollup").read_text().splitlines()
            out["front_private_mb"] = round(sum(
                int(line.split()[1]) for line in rollup
                if line.startswith(("Private_Clean:", "Private_Dirty:"))) / 1024, 1)
            out["front_log_tail"] = front.log()[-2000:]
        return out
    finally:
        for proc in reversed(started):
            proc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--mode", choices=["native", "legacy"], default="native")
    parser.add_argument("--envoy", required=True, help="the Envoy binary (the image's)")
    parser.add_argument("--musl", required=True)
    parser.add_argument("--glibc", required=True)
    parser.add_argument("--no-sysctl", action="store_true")
    parser.add_argument("--probe-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (run inside unshare --net)", file=sys.stderr)
        return 2
    result = run(args)
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
