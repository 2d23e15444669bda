"""Who may ask for which view: bearer tokens bound to a namespace (and pod labels).

A token file (``serve --auth-tokens FILE``) lists the tokens:

    tokens:
    - name: acme-sidecars        # for logs
      token: "s3cr3t..."         # or  sha256: "<hex digest of the token>"
      namespace: acme
      labels: {app: payments}    # optional: the pod labels the sidecar must claim

Every ADS stream must send ``authorization: Bearer <token>``; the node's
``NAMESPACE`` must be the token's namespace and its ``LABELS`` must include the
token's labels, else the stream ends with PERMISSION_DENIED before any
resource is sent. So a sidecar cannot obtain another tenant's view by lying in
its node metadata. Without a token file the server must be started with
``--insecure``, which it logs loudly.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from controlplane.errors import ConfigError
from controlplane.model import Labels, Workload, labels_of


@dataclass(frozen=True)
class Identity:
    name: str
    namespace: str
    labels: Labels = ()


@dataclass(frozen=True)
class _Token:
    digest: bytes
    identity: Identity


class TokenAuthenticator:
    def __init__(self, tokens: Iterable[_Token]) -> None:
        self._tokens = list(tokens)

    @classmethod
    def from_file(cls, path: Path) -> TokenAuthenticator:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"--auth-tokens {path}: {exc}") from exc
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
            tokens.append(_Token(digest, Identity(
                name=str(e.get("name") or f"tokens[{i}]"), namespace=e["namespace"],
                labels=labels_of({str(k): str(v) for k, v in labels.items()}))))
        return cls(tokens)

    def authenticate(self, metadata: Iterable[tuple[str, Any]]) -> Identity | None:
        header = next((str(v) for k, v in metadata if k.lower() == "authorization"), "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        digest = hashlib.sha256(token.strip().encode()).digest()
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
    for key, value in identity.labels:
        if claimed.get(key) != value:
            return (f"token {identity.name!r} requires pod label {key}={value}, which node "
                    f"{workload.node_id!r} does not claim")
    return None
