"""The shape of an AdmissionReview, checked before the webhook reads it: pure, no I/O.

``check_review(body)`` raises ``BadReview`` naming the first field the webhook reads that
has the wrong JSON type, e.g. ``request.object.spec.dnsConfig.nameservers: expected a
list of strings, got an object``. The webhook answers such a body 400 with that reason
(``webhook.py``) instead of failing inside the decision (a ``TypeError`` was a 500) or
deciding on nonsense (a string of nameservers iterated character by character).

What is checked is exactly what ``admission`` reads: the review's ``request`` (uid,
namespace, name, kind, operation, subResource, dryRun) and, for a Pod CREATE, the pod's
metadata (name, generateName, labels, annotations) and the parts of its spec that the
decision looks at (containers and their names and ports, volumes' names, hostNetwork,
dnsPolicy, dnsConfig, securityContext.sysctls, restartPolicy). Everything else is
never read and is not checked. A field that is absent or ``null`` is absent, as the
API server's Go types make it (``omitempty``); a real API server's review always
passes, because it serialises typed objects.

Strings must be encodable as UTF-8: JSON's ``\\ud800`` escapes decode to a lone
surrogate, which the answer (it echoes the uid) or the admin API (it lists names)
could not encode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controlplane.core.errors import BadReview

CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _fail(path: str, expected: str, value: Any) -> BadReview:
    return BadReview(f"{path}: expected {expected}, got {_kind_of(value)}")


def _string(value: Any, path: str) -> None:
    """A string (or absent) that UTF-8 can encode."""
    if value is None:
        return
    if not isinstance(value, str):
        raise _fail(path, "a string", value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadReview(f"{path}: not valid Unicode (a lone surrogate escape)") from None


def _bool(value: Any, path: str) -> None:
    if value is not None and not isinstance(value, bool):
        raise _fail(path, "a boolean", value)


def _int(value: Any, path: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise _fail(path, "an integer", value)


def _object(value: Any, path: str) -> Mapping[str, Any]:
    """The object at ``path`` ({} when absent)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(path, "an object", value)
    return value


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(path, "a list", value)
    return value


def _strings(value: Any, path: str) -> None:
    for i, item in enumerate(_list(value, path)):
        if not isinstance(item, str):
            raise _fail(f"{path}[{i}]", "a string", item)
        _string(item, f"{path}[{i}]")


def _string_map(value: Any, path: str) -> None:
    for key, item in _object(value, path).items():
        _string(key, f"{path} (a key)")
        if not isinstance(item, str):
            raise _fail(f"{path}[{key!r}]", "a string", item)
        _string(item, f"{path}[{key!r}]")


def _objects(value: Any, path: str) -> list[tuple[str, Mapping[str, Any]]]:
    """(path, object) of each item of a list of objects."""
    out = []
    for i, item in enumerate(_list(value, path)):
        if not isinstance(item, Mapping):
            raise _fail(f"{path}[{i}]", "an object", item)
        out.append((f"{path}[{i}]", item))
    return out


def _name_value(item: Mapping[str, Any], path: str) -> None:
    _string(item.get("name"), f"{path}.name")
    _string(item.get("value"), f"{path}.value")


def check_pod(pod: Mapping[str, Any], path: str = "request.object") -> None:
    """The fields of a Pod that the decision reads. Its metadata must be there (every
    object the API server sends has it): the patch adds to it."""
    if not isinstance(pod.get("metadata"), Mapping):
        raise _fail(f"{path}.metadata", "an object", pod.get("metadata"))
    meta = _object(pod.get("metadata"), f"{path}.metadata")
    for key in ("name", "generateName", "namespace"):
        _string(meta.get(key), f"{path}.metadata.{key}")
    _string_map(meta.get("labels"), f"{path}.metadata.labels")
    _string_map(meta.get("annotations"), f"{path}.metadata.annotations")
    if pod.get("spec") is None:
        return  # a pod without a spec is skipped ("malformed"), as before
    spec = _object(pod.get("spec"), f"{path}.spec")
    at = f"{path}.spec"
    _bool(spec.get("hostNetwork"), f"{at}.hostNetwork")
    for key in ("dnsPolicy", "restartPolicy"):
        _string(spec.get(key), f"{at}.{key}")
    for kind in CONTAINER_LISTS:
        for c_path, container in _objects(spec.get(kind), f"{at}.{kind}"):
            _string(container.get("name"), f"{c_path}.name")
            for p_path, port in _objects(container.get("ports"), f"{c_path}.ports"):
                _int(port.get("containerPort"), f"{p_path}.containerPort")
                _string(port.get("protocol"), f"{p_path}.protocol")
    for v_path, volume in _objects(spec.get("volumes"), f"{at}.volumes"):
        _string(volume.get("name"), f"{v_path}.name")
    dns = _object(spec.get("dnsConfig"), f"{at}.dnsConfig")
    _strings(dns.get("nameservers"), f"{at}.dnsConfig.nameservers")
    _strings(dns.get("searches"), f"{at}.dnsConfig.searches")
    for o_path, option in _objects(dns.get("options"), f"{at}.dnsConfig.options"):
        _name_value(option, o_path)
    security = _object(spec.get("securityContext"), f"{at}.securityContext")
    for s_path, sysctl in _objects(security.get("sysctls"), f"{at}.securityContext.sysctls"):
        _name_value(sysctl, s_path)


def check_request(request: Mapping[str, Any]) -> None:
    """The fields of ``request`` that ``admission.review`` reads (not the object)."""
    uid = request.get("uid")
    if not uid:
        raise BadReview("request.uid: missing (the AdmissionReview has no request.uid)")
    if not isinstance(uid, str):
        raise _fail("request.uid", "a string", uid)
    for key in ("uid", "namespace", "name", "operation", "subResource"):
        _string(request.get(key), f"request.{key}")
    _bool(request.get("dryRun"), "request.dryRun")
    kind = _object(request.get("kind"), "request.kind")
    for key in ("group", "version", "kind"):
        _string(kind.get(key), f"request.kind.{key}")


def is_pod_create(request: Mapping[str, Any]) -> bool:
    """A CREATE of a core/v1 Pod (not a subresource): the only review that is injected."""
    kind = request.get("kind") or {}
    return (kind.get("group", "") == "" and kind.get("kind") == "Pod"
            and request.get("operation") == "CREATE" and not request.get("subResource"))


def check_review(body: Any, api_version: str) -> Mapping[str, Any]:
    """The ``request`` of a well-shaped AdmissionReview ``body``; ``BadReview`` otherwise."""
    if not isinstance(body, Mapping) or body.get("kind") != "AdmissionReview":
        raise BadReview("the body is not an AdmissionReview (kind: AdmissionReview)")
    if body.get("apiVersion") != api_version:
        version = body.get("apiVersion")
        shown = repr(version) if isinstance(version, str) else _kind_of(version)
        raise BadReview(f"apiVersion: AdmissionReview {shown[:80]} is not {api_version}")
    request = body.get("request")
    if not isinstance(request, Mapping):
        raise _fail("request", "an object", request)
    check_request(request)
    if is_pod_create(request):
        pod = request.get("object")
        if not isinstance(pod, Mapping):
            raise _fail("request.object", "an object (the Pod being created)", pod)
        check_pod(pod)
    return request
