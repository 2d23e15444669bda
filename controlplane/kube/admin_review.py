"""The admin API's reviews through the ``kubernetes`` client (admin_auth.py decides).

The TokenReview is the sidecar identity's call (``KubeIdentityApi.review``,
kube_identity.py); the SubjectAccessReview is read the same way, as the JSON
the API server sent. When the API server cannot answer, both raise
``AuthUnavailable`` with the reason. RBAC: ``create`` on ``tokenreviews`` and
``subjectaccessreviews`` (deploy/rbac.yaml).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controlplane.core.errors import AuthUnavailable
from controlplane.identity.admin_auth import TokenResult, User
from controlplane.kube.identity import KubeIdentityApi


class KubeReviewer:
    """``Reviewer`` (admin_auth.py) for a cluster; blocking calls."""

    def __init__(self, api: Any, *, audiences: Sequence[str] = (), timeout: float = 5.0
                 ) -> None:
        self.api = api
        self.audiences = tuple(audiences)
        self.timeout = timeout

    def review_token(self, token: str) -> TokenResult:
        status = KubeIdentityApi(self.api, timeout=self.timeout).review(token, self.audiences)
        user = status.get("user") or {}
        if not status.get("authenticated") or not user.get("username"):
            return TokenResult(None, str(status.get("error") or "unauthenticated"))
        audiences = list(status.get("audiences") or ())
        if self.audiences and not set(audiences) & set(self.audiences):
            return TokenResult(None, f"token audiences {audiences} are not "
                               f"{list(self.audiences)}")
        extra = tuple(sorted((str(k), tuple(str(x) for x in v))
                             for k, v in (user.get("extra") or {}).items()))
        return TokenResult(User(name=str(user["username"]), uid=str(user.get("uid") or ""),
                                groups=tuple(str(g) for g in user.get("groups") or ()),
                                extra=extra))

    def review_access(self, user: User, *, verb: str, path: str) -> tuple[bool, str]:
        spec = k8s.V1SubjectAccessReviewSpec(
            user=user.name, uid=user.uid or None, groups=list(user.groups) or None,
            extra={k: list(v) for k, v in user.extra} or None,
            non_resource_attributes=k8s.V1NonResourceAttributes(path=path, verb=verb))
        body = k8s.V1SubjectAccessReview(api_version="authorization.k8s.io/v1",
                                         kind="SubjectAccessReview", spec=spec)
        try:
            resp: Any = k8s.AuthorizationV1Api(self.api).create_subject_access_review(
                body, _request_timeout=self.timeout, _preload_content=False)
            status = json.loads(resp.data).get("status") or {}
        except ApiException as exc:
            hint = (" (RBAC: the control plane needs create on subjectaccessreviews)"
                    if exc.status == 403 else "")
            raise AuthUnavailable(f"SubjectAccessReview failed: the API server answered "
                                  f"{exc.status} {exc.reason}{hint}") from exc
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise AuthUnavailable(f"SubjectAccessReview failed: the API server is "
                                  f"unreachable ({type(exc).__name__})") from exc
        reason = str(status.get("reason") or "")
        if status.get("evaluationError"):
            reason = f"{reason}; evaluation error: {status['evaluationError']}".lstrip("; ")
        return bool(status.get("allowed")) and not status.get("denied"), reason
