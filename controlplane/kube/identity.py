"""The Kubernetes calls behind sidecar identity: TokenReview, and reading the token's Pod.

Blocking calls through the ``kubernetes`` client (run them in a thread). What the
API server answers comes back as the JSON it sent (read raw: the client's models
insist on fields a TokenReview answer need not echo, such as ``spec.token``); when it cannot answer
(down, timing out, refusing the control plane's own credentials or RBAC), the
call raises ``AuthUnavailable`` with the reason, so the stream is refused with
UNAVAILABLE and retried instead of being told its token is bad.

RBAC: ``create`` on ``tokenreviews`` (authentication.k8s.io) and ``get`` on
``pods`` (deploy/rbac.yaml).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controlplane.core.errors import AuthUnavailable


class KubeIdentityApi:
    def __init__(self, api: k8s.ApiClient, *, timeout: float = 5.0) -> None:
        self.api = api
        self.timeout = timeout

    def review(self, token: str, audiences: Sequence[str]) -> dict[str, Any]:
        """The ``status`` of a TokenReview of ``token`` for ``audiences``."""
        body = k8s.V1TokenReview(
            api_version="authentication.k8s.io/v1", kind="TokenReview",
            spec=k8s.V1TokenReviewSpec(token=token, audiences=list(audiences) or None))
        try:
            resp = k8s.AuthenticationV1Api(self.api).create_token_review(
                body, _request_timeout=self.timeout, _preload_content=False)
            status = json.loads(resp.data).get("status") or {}  # type: ignore[attr-defined]
        except ApiException as exc:
            raise AuthUnavailable(_reason("TokenReview", exc)) from exc
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise AuthUnavailable(f"TokenReview failed: the API server is unreachable "
                                  f"({type(exc).__name__})") from exc
        return dict(status)

    def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Pod ``namespace/name`` as JSON, or None when it does not exist."""
        try:
            resp = k8s.CoreV1Api(self.api).read_namespaced_pod(
                name, namespace, _request_timeout=self.timeout, _preload_content=False)
            pod = json.loads(resp.data)  # type: ignore[attr-defined]
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise AuthUnavailable(_reason(f"reading pod {namespace}/{name}", exc)) from exc
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise AuthUnavailable(f"reading pod {namespace}/{name} failed: the API server is "
                                  f"unreachable ({type(exc).__name__})") from exc
        return dict(pod)


def _reason(what: str, exc: ApiException) -> str:
    if not exc.status:  # raised before any answer (TLS)
        return f"{what} failed: the API server is unreachable ({exc.reason})"
    hint = ""
    if exc.status == 403:
        hint = " (RBAC: the control plane needs create on tokenreviews and get on pods)"
    return f"{what} failed: the API server answered {exc.status} {exc.reason}{hint}"
