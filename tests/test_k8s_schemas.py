"""What we ship or patch, checked against the real Kubernetes schemas (kubernetes-validate).

Every document under deploy/ (the plain files, no kustomize needed), the rendered
kustomization, the CRDs in api/, the native objects of examples/ and the seed examples,
and every pod the injection webhook patches (the fixtures of tests/admission after the
JSON patch: native and legacy sidecar modes, DNS front on and off) validate against the
strict schemas of one fixed Kubernetes version, ``K8S_VERSION``: the newest the tool ships
offline (kubernetes-validate 1.37.0 ships 1.37). Strict: an unknown field is an error,
as ``kubectl apply --validate=strict`` makes it.

Custom resources: DnsPolicy and ServiceEntry validate with ``jsonschema`` against the
openAPIV3Schema of their CRD in api/. The tool has no schema for ServiceMonitor
(prometheus-operator) or cert-manager's Issuer and Certificate, and none ships offline
here: those are listed in ``NO_OFFLINE_SCHEMA`` and counted, so a new kind without a
schema fails instead of passing unchecked.

Each check can fail: the ``test_broken_*`` tests feed deliberately broken copies.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, all_versions, latest_version
from packaging.version import Version

from controlplane.core.settings import InjectionConfig
from controlplane.injection.admission import review
from tests.kustomize import rendered
from tests.tools import seed_examples

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
API = ROOT / "api"
ADMISSION = Path(__file__).resolve().parent / "admission"

K8S_VERSION = "1.37.0"  # the newest schema set kubernetes-validate ships (offline)

# Kinds whose CRD is ours: validated against api/*-crd.yaml with jsonschema. Istio's
# ServiceEntries (which the control plane reads with the same parser) are checked against
# our ServiceEntry CRD: Istio's own CRD does not ship offline, ours holds what we read.
OUR_CRDS = {("networking.example.com/v1alpha1", "DnsPolicy"): "DnsPolicy",
            ("networking.example.com/v1alpha1", "ServiceEntry"): "ServiceEntry",
            ("networking.istio.io/v1alpha3", "ServiceEntry"): "ServiceEntry",
            ("networking.istio.io/v1beta1", "ServiceEntry"): "ServiceEntry",
            ("networking.istio.io/v1", "ServiceEntry"): "ServiceEntry"}
# Kinds no schema is available for offline (the tool does not ship CRDs of other projects).
NO_OFFLINE_SCHEMA = {("monitoring.coreos.com/v1", "ServiceMonitor"),
                     ("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate")}
# Not Kubernetes objects: kustomize's own files (kustomization.yaml, Components).
NOT_OBJECTS = {"kustomize.config.k8s.io/v1beta1", "kustomize.config.k8s.io/v1alpha1"}


def crd_schemas() -> dict[str, dict[str, Any]]:
    """kind -> the openAPIV3Schema of its CRD in api/ (each has one version)."""
    out = {}
    for path in sorted(API.glob("*-crd.yaml")):
        crd = yaml.safe_load(path.read_text())
        (version,) = crd["spec"]["versions"]
        out[crd["spec"]["names"]["kind"]] = dict(version["schema"]["openAPIV3Schema"])
    return out


def check(doc: dict[str, Any]) -> str:
    """Validate one object; the schema it was checked with ("kubernetes 1.37", "api/ CRD")
    or "no offline schema". Raises ``jsonschema.ValidationError`` when it does not fit."""
    key = (doc["apiVersion"], doc["kind"])
    if key in OUR_CRDS:
        jsonschema.validate(doc, crd_schemas()[OUR_CRDS[key]])
        return "api/ CRD"
    try:
        version = kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except SchemaNotFoundError:
        assert key in NO_OFFLINE_SCHEMA, f"no schema for {key}: add its CRD or list it"
        return "no offline schema"
    return f"kubernetes {version}"


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml")
                  if all(d.get("apiVersion") not in NOT_OBJECTS and "kind" in d
                         for d in yaml_documents(p)))


def test_the_version_is_shipped_offline() -> None:
    """Fixed on purpose (1.37, the newest kubernetes-validate 1.37.0 ships): a newer tool
    changes nothing until this line does."""
    assert K8S_VERSION.rsplit(".", 1)[0] in {v.rsplit(".", 1)[0] for v in all_versions()}
    assert Version(latest_version()) >= Version(K8S_VERSION)


@pytest.mark.parametrize("path", deploy_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_deploy_file_validates(path: Path) -> None:
    for doc in yaml_documents(path):
        check(doc)


def test_every_plain_deploy_file_is_checked() -> None:
    """Only kustomize's own files are left out (kustomization.yaml, patches)."""
    left_out = sorted(str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*.yaml")
                      if p not in deploy_files())
    assert all(d.get("apiVersion") in NOT_OBJECTS or "kind" not in d
               for name in left_out for d in yaml_documents(DEPLOY / name)), left_out
    assert "kustomization.yaml" in left_out


def test_rendered_kustomization_validates() -> None:
    """What `kubectl apply -k deploy/` sends, the Deployment patch applied."""
    used: dict[str, int] = {}
    for doc in rendered():
        how = check(doc)
        used[how] = used.get(how, 0) + 1
    assert "api/ CRD" not in used and used["kubernetes 1.37"] >= 15
    # ServiceMonitor x2, cert-manager Issuer/Certificate x2 each for xds-tls and webhook
    assert used["no offline schema"] == 10


@pytest.mark.parametrize("path", sorted(API.glob("*-crd.yaml")), ids=lambda p: p.name)
def test_crds_validate(path: Path) -> None:
    (crd,) = yaml_documents(path)
    assert check(crd) == "kubernetes 1.37"


def example_files() -> list[Path]:
    return sorted([*ROOT.joinpath("examples").glob("*.yaml"),
                   *(p for p in seed_examples().glob("*.yaml") if not p.name.startswith("bad-"))])


@pytest.mark.parametrize("path", example_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_examples_validate(path: Path) -> None:
    """DnsPolicies and ServiceEntries against api/, Namespaces and Services as 1.37 has them."""
    for doc in yaml_documents(path):
        check(doc)


def test_examples_hold_our_kinds() -> None:
    kinds = [d["kind"] for p in example_files() for d in yaml_documents(p)]
    assert kinds.count("DnsPolicy") >= 8 and kinds.count("ServiceEntry") >= 3
    assert "Service" in kinds and "Namespace" in kinds


# --- the pods the webhook patches ----------------------------------------------------

CONFIGS = {
    "native-front": InjectionConfig(cluster_dns="10.96.0.10"),
    "native-nofront": InjectionConfig(cluster_dns="10.96.0.10", front=False),
    "legacy-front": InjectionConfig(cluster_dns="10.96.0.10", mode="legacy"),
    "legacy-nofront": InjectionConfig(cluster_dns="10.96.0.10", mode="legacy", front=False),
}
FIXTURES = sorted(p.stem for p in ADMISSION.glob("*.json"))


def patched_pod(fixture: str, config: InjectionConfig) -> tuple[dict[str, Any], bool]:
    """(the pod after the webhook's JSON patch, whether there was a patch)."""
    body = json.loads((ADMISSION / f"{fixture}.json").read_text())
    out, _ = review(body, config)
    response = out["response"]
    pod = copy.deepcopy(body["request"]["object"])
    pod.setdefault("apiVersion", "v1")
    pod.setdefault("kind", "Pod")
    if "patch" not in response:
        return pod, False
    ops = json.loads(base64.b64decode(response["patch"]))
    return dict(jsonpatch.apply_patch(pod, ops)), True


def all_pods() -> Iterator[tuple[str, str, dict[str, Any], bool]]:
    for fixture in FIXTURES:
        for mode, config in CONFIGS.items():
            pod, injected = patched_pod(fixture, config)
            yield fixture, mode, pod, injected


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("mode", sorted(CONFIGS))
def test_injected_pod_validates(fixture: str, mode: str) -> None:
    body = json.loads((ADMISSION / f"{fixture}.json").read_text())
    original = {"apiVersion": "v1", "kind": "Pod", **body["request"]["object"]}
    assert check(original) == "kubernetes 1.37"  # the fixture itself is a valid pod
    pod, _ = patched_pod(fixture, CONFIGS[mode])
    assert check(pod) == "kubernetes 1.37"


def test_the_pods_checked_are_injected_ones() -> None:
    """Every mode patches the Deployment pod (host-network is skipped: no patch)."""
    injected = {(fixture, mode) for fixture, mode, _, done in all_pods() if done}
    assert {("deployment-pod", mode) for mode in CONFIGS} <= injected
    assert {("own-dnsconfig", mode) for mode in CONFIGS} <= injected
    pod, _ = patched_pod("deployment-pod", CONFIGS["native-front"])
    assert [c["name"] for c in pod["spec"]["initContainers"]][:2] == ["dns-sidecar", "dns-front"]
    pod, _ = patched_pod("deployment-pod", CONFIGS["legacy-nofront"])
    assert pod["spec"]["containers"][0]["name"] == "dns-sidecar"


# --- every check above can fail --------------------------------------------------------

def _deployment() -> dict[str, Any]:
    (dep,) = yaml_documents(DEPLOY / "deployment.yaml")
    return dep


def _broken_field(doc: dict[str, Any]) -> None:
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["argz"] = container.pop("args")  # a typo: strict rejects unknown fields


def _broken_type(doc: dict[str, Any]) -> None:
    doc["spec"]["replicas"] = "two"


def _broken_required(doc: dict[str, Any]) -> None:
    del doc["spec"]["template"]["spec"]["containers"][0]["name"]


@pytest.mark.parametrize("breaks", [_broken_field, _broken_type, _broken_required])
def test_broken_deployment_fails(breaks: Any) -> None:
    dep = _deployment()
    check(dep)  # the shipped one passes
    broken = copy.deepcopy(dep)
    breaks(broken)
    with pytest.raises(jsonschema.ValidationError):
        check(broken)


def test_broken_networkpolicy_fails() -> None:
    (policy,) = yaml_documents(DEPLOY / "networkpolicy.yaml")
    broken = copy.deepcopy(policy)
    broken["spec"]["ingress"][0]["ports"][0]["protocol"] = {"name": "TCP"}
    with pytest.raises(jsonschema.ValidationError):
        check(broken)


BROKEN_FRONT = {
    "misspelt field": lambda c: c.update(restartPolicyy=c.pop("restartPolicy")),
    "port as text": lambda c: c.update(ports=[{"containerPort": "fifteen"}]),
    "no image pull policy of that name": lambda c: c.update(imagePullPolicy=["Always"]),
}


@pytest.mark.parametrize("breaks", list(BROKEN_FRONT.values()), ids=list(BROKEN_FRONT))
def test_broken_injected_pod_fails(breaks: Any) -> None:
    """A patch that wrote a misspelt field or a wrong type into the front would be caught."""
    pod, _ = patched_pod("deployment-pod", CONFIGS["native-front"])
    broken = copy.deepcopy(pod)
    front = broken["spec"]["initContainers"][1]
    assert front["name"] == "dns-front"
    breaks(front)
    with pytest.raises(jsonschema.ValidationError):
        check(broken)


def test_broken_dnspolicy_fails() -> None:
    (doc,) = [d for p in example_files() for d in yaml_documents(p)
              if d["kind"] == "DnsPolicy"][:1]
    broken = copy.deepcopy(doc)
    broken["spec"]["policy"] = {"defaultAction": "BLOCK"}
    with pytest.raises(jsonschema.ValidationError):
        check(broken)


def test_unknown_kind_without_a_schema_fails() -> None:
    with pytest.raises(AssertionError, match="no schema for"):
        check({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}})
