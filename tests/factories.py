"""Factories the tests share: policies (model objects and manifests), pods, tokens, nodes.

One version of each, so a change to ``DnsPolicy`` or to the manifest's shape is made once.
Model objects come from ``policy``; what a user or the API server would hold (a YAML/JSON
document) from the ``*_manifest`` functions.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from controlplane.core.inventory import Inventory
from controlplane.core.model import DefaultAction, DnsPolicy, LabelSelector, Namespace, Service
from controlplane.hub.hub import Connection, Hub
from controlplane.translate.types import LISTENER_TYPE

POLICY_API = "networking.example.com/v1alpha1"
AUD = "dns-controlplane"  # the audience the sidecars' projected tokens carry


def _selector(labels: Mapping[str, str]) -> LabelSelector:
    return LabelSelector(match_labels=tuple(sorted(labels.items())))


def policy(name: str = "t", ns_labels: Mapping[str, str] | None = None, *,
           pod_labels: Mapping[str, str] | None = None, **fields: Any) -> DnsPolicy:
    """A DnsPolicy selecting namespaces with ``ns_labels`` (all when None) and, when given,
    pods with ``pod_labels``; ``fields`` are DnsPolicy's other fields."""
    if pod_labels is not None:
        fields["selector"] = _selector(pod_labels)
    return DnsPolicy(name=name, namespace_selector=_selector(ns_labels or {}), **fields)


def tenant_policy(name: str, tenant: str | None = None, **fields: Any) -> DnsPolicy:
    """``policy`` for the namespaces labelled ``tenant=<tenant>`` (``tenant`` defaults to
    the policy's name)."""
    return policy(name, {"tenant": tenant or name}, **fields)


def policy_manifest(name: str = "p", spec: Mapping[str, Any] | None = None, *,
                    tenant: str | None = None, action: str = "DENY") -> dict[str, Any]:
    """A DnsPolicy document; ``spec`` as given, else one selecting ``tenant=<tenant>``
    (default: the name) with ``defaultAction: action``."""
    if spec is None:
        spec = {"namespaceSelector": {"matchLabels": {"tenant": tenant or name}},
                "policy": {"defaultAction": action}}
    return {"apiVersion": POLICY_API, "kind": "DnsPolicy", "metadata": {"name": name},
            "spec": spec}


def pod_manifest(namespace: str, name: str, labels: Mapping[str, str], uid: str = ""
                 ) -> dict[str, Any]:
    """A Pod document as the API server holds it (one container)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels),
                         **({"uid": uid} if uid else {})},
            "spec": {"containers": [{"name": "app", "image": "app"}]}}


def jwt(namespace: str, pod: str, *, exp: float | None = None, salt: str = "") -> str:
    """A token shaped like a projected ServiceAccount token (its signature is the fake's
    business: TokenReview decides, the control plane never verifies it itself)."""
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    claims = {"aud": [AUD], "exp": int(exp if exp is not None else time.time() + 3600),
              "sub": f"system:serviceaccount:{namespace}:default",
              "kubernetes.io": {"namespace": namespace, "pod": {"name": pod}}, "jti": salt}
    return f"{part({'alg': 'RS256', 'kid': 'k'})}.{part(claims)}.c2lnbmF0dXJl{salt}"


def bearer(token: str) -> dict[str, str]:
    """The HTTP header that carries ``token``."""
    return {"Authorization": f"Bearer {token}"}


def inventory(extra: tuple[Any, ...] = ()) -> Inventory:
    """Two DENY tenants, acme and foo, each with one service and a whitelist of its own."""
    return Inventory.of([
        Namespace("acme", (("tenant", "acme"),)), Namespace("foo", (("tenant", "foo"),)),
        Service("acme", "web", cluster_ips=("10.0.0.1",)),
        Service("foo", "web", cluster_ips=("10.0.1.1",)),
        tenant_policy("acme", whitelist=("*.acme.svc.cluster.local",),
                      default_action=DefaultAction.DENY),
        tenant_policy("foo", whitelist=("*.foo.svc.cluster.local",),
                      default_action=DefaultAction.DENY),
        *extra,
    ])


def node(node_id: str, namespace: str | None, **meta: Any) -> base_pb2.Node:
    """An Envoy node with the sidecar's metadata (NAMESPACE when given)."""
    n = base_pb2.Node(id=node_id)
    fields: dict[str, Any] = dict(meta)
    if namespace is not None:
        fields["NAMESPACE"] = namespace
    n.metadata.CopyFrom(struct_pb2.Struct())
    n.metadata.update(fields)
    return n


def connect(hub: Hub, n: base_pb2.Node) -> Connection:
    """A connection of ``n`` to ``hub`` that has asked for listeners."""
    conn = hub.open(peer="test")
    conn.stream.receive(discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE, node=n))
    hub.attach(conn)
    return conn


def client_certificate(ca_pem: bytes, ca_key_pem: bytes, common_name: str
                       ) -> tuple[bytes, bytes]:
    """A TLS client certificate for the user ``common_name`` (Kubernetes reads a
    certificate's user from its CN), signed by the CA: (certificate PEM, key PEM). What
    the API server presents to a webhook when its AdmissionConfiguration kubeconfig
    names one."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
