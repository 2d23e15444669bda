"""RBAC as the API server evaluates it, for the fake API server's SubjectAccessReviews.

A subset, faithful for what it covers: ClusterRoles and Roles with ``rules``;
ClusterRoleBindings and RoleBindings whose subjects are Users, Groups or
ServiceAccounts; non-resource URLs (exact, or a prefix ending in ``*``) only
through ClusterRoleBindings; resource rules with apiGroups, resources
(``resource/subresource``), resourceNames and verbs, where ``*`` matches all.
Aggregated ClusterRoles are not evaluated.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _subject_matches(subject: dict[str, Any], user: str, groups: Iterable[str]) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return bool(subject.get("name") == user)
    if kind == "Group":
        return subject.get("name") in set(groups)
    if kind == "ServiceAccount":
        return user == f"system:serviceaccount:{subject.get('namespace')}:{subject.get('name')}"
    return False


def _matches(patterns: Iterable[str], value: str) -> bool:
    return any(p == "*" or p == value for p in patterns)


def _url_matches(patterns: Iterable[str], path: str) -> bool:
    for p in patterns:
        if p == "*" or p == path or (p.endswith("*") and path.startswith(p[:-1])):
            return True
    return False


def _rule_allows(rule: dict[str, Any], spec: dict[str, Any]) -> bool:
    verbs = rule.get("verbs") or []
    nra = spec.get("nonResourceAttributes")
    if nra is not None:
        return _matches(verbs, nra.get("verb", "")) and _url_matches(
            rule.get("nonResourceURLs") or [], nra.get("path", ""))
    ra = spec.get("resourceAttributes") or {}
    resource = ra.get("resource", "")
    if ra.get("subresource"):
        resource = f"{resource}/{ra['subresource']}"
    names = rule.get("resourceNames") or []
    return (_matches(verbs, ra.get("verb", ""))
            and _matches(rule.get("apiGroups") or [], ra.get("group", ""))
            and _matches(rule.get("resources") or [], resource)
            and (not names or ra.get("name", "") in names))


def authorize(objects: list[dict[str, Any]], spec: dict[str, Any]) -> tuple[bool, str]:
    """(allowed, reason) of a SubjectAccessReview ``spec`` against RBAC ``objects``."""
    user = str(spec.get("user") or "")
    groups = list(spec.get("groups") or [])
    roles = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("ClusterRole", "Role")}
    namespace = (spec.get("resourceAttributes") or {}).get("namespace", "")
    for binding in objects:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        bound_ns = binding["metadata"].get("namespace", "")
        if binding["kind"] == "RoleBinding" and (
                "nonResourceAttributes" in spec or bound_ns != namespace):
            continue
        if not any(_subject_matches(s, user, groups) for s in binding.get("subjects") or []):
            continue
        ref = binding["roleRef"]
        role = roles.get((ref["kind"], bound_ns if ref["kind"] == "Role" else "", ref["name"]))
        for rule in (role or {}).get("rules") or []:
            if _rule_allows(rule, spec):
                return True, (f'RBAC: allowed by {binding["kind"]} "{binding["metadata"]["name"]}"'
                              f' of {ref["kind"]} "{ref["name"]}" to {user}')
    return False, ""
