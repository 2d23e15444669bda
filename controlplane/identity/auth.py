"""Who may ask for which view: bearer tokens bound to a tenant, or a namespace and labels.

A token file (``serve --auth-tokens FILE``) lists the tokens:

    tokens:
    - name: acme-sidecars        # for logs
      token: "s3cr3t..."         # or  sha256: "<hex digest of the token>"
      namespace: acme
      tenant: acme               # optional: the one tenant (DnsPolicy) it stands for
      labels: {app: payments}    # optional: the workload's labels, exactly
      nodes: [billing-vm-1.acme] # optional: the node ids it may speak for (default:
                                 # any "<name>.<namespace>" that no other token lists,
                                 # at most --sidecar-max-nodes of them at once)

Every ADS stream must send ``authorization: Bearer <token>``; the node's
``NAMESPACE`` must be the token's namespace, else the stream ends with
PERMISSION_DENIED before any resource is sent. A token with ``labels`` is bound to
them as a pod token is to its pod's: the view is chosen with the token's labels, and
a node claiming a label the token does not have, or another value, is refused. A
token with ``tenant`` gets that tenant's view whatever its node claims, and its
stats and query-log reports count for that tenant only. A token with neither lets
its node's labels choose the view, which is allowed only where they can choose one
tenant at most (checked at load and after every configuration change:
``policy.selection.static_token_problem``). Without a token file the server must be
started with ``--insecure``, which it logs loudly.

Every way of proving who a stream speaks for is an ``Authenticator``: static
tokens here, Kubernetes ServiceAccount tokens checked with TokenReview in
``controlplane/identity/tokenreview.py``, or both (``FirstOf``). The ADS driver awaits
``identify(metadata)`` and gets an ``Identity``, or ``Unauthenticated`` (bad
credentials: the stream ends with UNAUTHENTICATED) or ``AuthUnavailable`` (the
credentials cannot be checked now: UNAVAILABLE, and Envoy retries).

A node id is bound to the identity that presents it (``node_refusal``): a pod's token
speaks only for ``<pod>.<namespace>`` (the node id the injector gives its sidecar), a
static token for the node ids it lists, or else for node ids ``<name>.<namespace>`` of
its namespace. The same check guards every channel a sidecar writes to: ADS, the stats
sink and the query log.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import yaml

from controlplane.core.errors import AuthUnavailable, ConfigError, Unauthenticated
from controlplane.core.model import Labels, Workload, labels_of


@dataclass(frozen=True)
class Identity:
    name: str
    namespace: str
    labels: Labels = ()
    # True when ``labels`` are all of the pod's labels, read from the API (a token bound
    # to a pod): the stream is bound to them (its view is chosen with these, not with
    # the node's claims), and a node claiming a label the pod does not have, or another
    # value, is refused. False (static tokens): the node must claim at least these.
    bind_labels: bool = False
    # The pod a pod token is bound to (TokenReview): its sidecar's node id must be
    # ``<pod>.<namespace>``. "" for static tokens.
    pod: str = ""
    # Static tokens: the node ids (fnmatch patterns) the token may speak for; empty: any
    # ``<name>.<namespace>``.
    nodes: tuple[str, ...] = ()
    # Static tokens: the one tenant (DnsPolicy) the token stands for; "": chosen by the
    # namespace and labels.
    tenant: str = ""
    # Static tokens without ``nodes``: the node ids other tokens list (theirs only).
    reserved: tuple[tuple[str, str], ...] = ()  # (pattern, the token that lists it)

    @property
    def key(self) -> str:
        """Who this is, for per-caller caps: one pod, or one static token."""
        return f"pod {self.namespace}/{self.pod}" if self.pod else static_token_key(self.name)


def static_token_key(name: str) -> str:
    """``Identity.key`` of the static token named ``name``."""
    return f"token {name}"


def pod_node_id(pod: str, namespace: str) -> str:
    """The node id the injector gives a pod's sidecar (``injection/sidecar.py``)."""
    return f"{pod}.{namespace}"


def node_refusal(identity: Identity, node_id: str) -> str | None:
    """Why ``identity`` may not speak for the node ``node_id``, or None."""
    if identity.pod:
        expected = pod_node_id(identity.pod, identity.namespace)
        if node_id != expected:
            return (f"{identity.name} speaks for node {expected!r} only, not for "
                    f"{node_id!r}")
        return None
    if identity.nodes:
        if not any(fnmatch.fnmatchcase(node_id, pattern) for pattern in identity.nodes):
            return (f"token {identity.name!r} speaks for nodes {list(identity.nodes)}, not "
                    f"for {node_id!r}")
        return None
    for pattern, owner in identity.reserved:
        if fnmatch.fnmatchcase(node_id, pattern):
            return (f"token {identity.name!r} may not speak for node {node_id!r}: token "
                    f"{owner!r} lists it under nodes:")
    name, dot, namespace = node_id.rpartition(".")
    if not dot or not name or namespace != identity.namespace:
        return (f"token {identity.name!r} speaks for node ids '<name>.{identity.namespace}', "
                f"not for {node_id!r}")
    return None


def tenant_refusal(identity: Identity, tenant: str) -> str | None:
    """Why ``identity`` may not report for ``tenant``, or None."""
    if identity.tenant and tenant != identity.tenant:
        return (f"token {identity.name!r} stands for tenant {identity.tenant!r}, not for "
                f"{tenant!r}")
    return None


Metadata = Sequence[tuple[str, Any]]


class Authenticator(Protocol):
    """Who a stream speaks for, from its gRPC metadata."""

    async def identify(self, metadata: Metadata) -> Identity:
        """The identity, or raise ``Unauthenticated`` / ``AuthUnavailable``."""
        ...


def bearer_token(metadata: Metadata) -> str:
    """The token of ``authorization: Bearer <token>``, or ""."""
    header = next((str(v) for k, v in metadata if k.lower() == "authorization"), "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


MISSING_TOKEN = "a valid 'authorization: Bearer <token>' is required"


class FirstOf:
    """Several authenticators: the first identity wins (static tokens first: cheap,
    and a VM's secret is never sent to the API server). If none proves one, any
    ``AuthUnavailable`` wins (the token may be valid), else the last refusal."""

    def __init__(self, authenticators: Sequence[Authenticator]) -> None:
        self.authenticators = list(authenticators)

    async def identify(self, metadata: Metadata) -> Identity:
        unavailable: AuthUnavailable | None = None
        refused = Unauthenticated(MISSING_TOKEN)
        for authenticator in self.authenticators:
            try:
                return await authenticator.identify(metadata)
            except AuthUnavailable as exc:
                unavailable = exc
            except Unauthenticated as exc:
                refused = exc
        raise unavailable or refused


@dataclass(frozen=True)
class _Token:
    digest: bytes
    identity: Identity


class TokenAuthenticator:
    def __init__(self, tokens: Iterable[_Token]) -> None:
        self._tokens = list(tokens)
        # token name -> why it is refused now (set after every configuration change:
        # its tenant is gone, or it could get more than one tenant's view).
        self.refused: dict[str, str] = {}

    @property
    def identities(self) -> list[Identity]:
        """What each token stands for (no secrets)."""
        return [t.identity for t in self._tokens]

    @classmethod
    def from_file(cls, path: Path) -> TokenAuthenticator:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(flag="--auth-tokens", reason=f"{path}: {exc}") from exc
        return cls.from_data(data, source=str(path))

    @classmethod
    def from_data(cls, data: Any, *, source: str = "tokens") -> TokenAuthenticator:
        entries = data.get("tokens") if isinstance(data, Mapping) else None
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{source}: expected 'tokens:' with at least one entry")
        tokens = []
        for i, e in enumerate(entries):
            if not isinstance(e, Mapping) or not isinstance(e.get("namespace"), str):
                raise ConfigError(f"{source}: tokens[{i}] needs a namespace")
            if isinstance(e.get("token"), str) and e["token"]:
                digest = hashlib.sha256(e["token"].encode()).digest()
            elif isinstance(e.get("sha256"), str):
                try:
                    digest = bytes.fromhex(e["sha256"])
                except ValueError as exc:
                    raise ConfigError(f"{source}: tokens[{i}].sha256 is not hex") from exc
            else:
                raise ConfigError(f"{source}: tokens[{i}] needs token or sha256")
            labels = e.get("labels") or {}
            if not isinstance(labels, Mapping):
                raise ConfigError(f"{source}: tokens[{i}].labels must be a mapping")
            nodes = e.get("nodes") or []
            if not isinstance(nodes, list) or not all(isinstance(n, str) and n
                                                      for n in nodes):
                raise ConfigError(f"{source}: tokens[{i}].nodes must be a list of node ids")
            tenant = e.get("tenant", "")
            if not isinstance(tenant, str) or ("tenant" in e and not tenant):
                raise ConfigError(f"{source}: tokens[{i}].tenant must be a DnsPolicy name")
            tokens.append(_Token(digest, Identity(
                name=str(e.get("name") or f"tokens[{i}]"), namespace=e["namespace"],
                labels=labels_of({str(k): str(v) for k, v in labels.items()}),
                bind_labels=bool(labels), nodes=tuple(nodes), tenant=tenant)))
        listed = tuple((pattern, t.identity.name) for t in tokens
                       for pattern in t.identity.nodes)
        return cls(_Token(t.digest, replace(t.identity, reserved=tuple(
            (p, owner) for p, owner in listed if owner != t.identity.name)))
            if not t.identity.nodes else t for t in tokens)

    def replace(self, other: TokenAuthenticator) -> set[str]:
        """Take the tokens of ``other`` (the file read again); returns the names of the
        tokens that are gone or changed (secret, namespace, labels, nodes, tenant): the
        streams opened with them must end. A refusal stays until the next check."""
        old = {t.identity.name: t for t in self._tokens}
        new = {t.identity.name: t for t in other._tokens}
        self._tokens = list(other._tokens)  # one assignment: identify() sees old or new
        self.refused = {name: why for name, why in self.refused.items() if name in new}
        return {name for name, token in old.items() if new.get(name) != token}

    async def identify(self, metadata: Metadata) -> Identity:
        identity = self.authenticate(metadata)
        if identity is None:
            raise Unauthenticated(MISSING_TOKEN)
        refused = self.refused.get(identity.name)
        if refused:
            raise Unauthenticated(f"token {identity.name!r} is refused: {refused}")
        return identity

    def authenticate(self, metadata: Iterable[tuple[str, Any]]) -> Identity | None:
        token = bearer_token(tuple(metadata))
        if not token:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        match = None
        for t in self._tokens:  # compare against all, in constant time each
            if hmac.compare_digest(t.digest, digest):
                match = t.identity
        return match


def authorize(identity: Identity, workload: Workload) -> str | None:
    """Why ``identity`` may not speak for ``workload``, or None."""
    if workload.namespace != identity.namespace:
        return (f"token {identity.name!r} is for namespace {identity.namespace!r}, but node "
                f"{workload.node_id!r} claims namespace {workload.namespace!r}")
    claimed = dict(workload.labels)
    if identity.bind_labels:  # a claim may leave labels out (they are bound), never lie
        actual = dict(identity.labels)
        for key in sorted(claimed):
            if claimed[key] != actual.get(key):
                who = identity.name if identity.pod else f"token {identity.name!r}"
                return (f"{who} has {_label(key, actual)}, but node "
                        f"{workload.node_id!r} claims {_label(key, claimed)}")
        return None
    for key, value in identity.labels:
        if claimed.get(key) != value:
            return (f"token {identity.name!r} requires pod label {key}={value}, which node "
                    f"{workload.node_id!r} does not claim")
    return None


def _label(key: str, labels: Mapping[str, str]) -> str:
    return f"label {key}={labels[key]}" if key in labels else f"no label {key!r}"
