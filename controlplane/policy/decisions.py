"""External policy decisions (``spec.policy.server``): the question, the answer, the cache.

Pure: no I/O, the clock is passed in. The gRPC client and the loops that feed the
cache live in ``policy_client.py``.

The protocol is Envoy's external authorization API,
``envoy.service.auth.v3.Authorization/Check``, so policy engines that already serve it
(OPA's Envoy plugin first) decide DNS names unchanged. A DNS question is asked as:

- ``attributes.request.http.host``: the queried name, lower case, no trailing dot;
- ``attributes.request.http.method``: ``DNS``; ``protocol``: ``dns``;
- ``attributes.request.http.path``: ``/<TYPE>`` (``/A``), or ``/`` for a name of the
  table (decided for every type at once);
- ``attributes.request.http.headers``: ``x-dns-name``, ``x-dns-type``, ``x-dns-tenant``,
  ``x-dns-namespace``;
- ``attributes.source.labels``: the pod's labels, when the sidecar is known;
  ``source.principal``: ``spiffe://<zone>/ns/<namespace>/sa/<serviceaccount>`` when known;
  ``source.service``: the node (sidecar) id, when known;
- ``attributes.context_extensions``: ``dns.name``, ``dns.type``, ``dns.tenant``,
  ``dns.namespace``, ``dns.namespaces`` (comma-separated), ``dns.node``.

What the control plane knows of the asking workload is per tenant (``docs/policy-server.md``,
"Who asks"): the namespaces the policy selects (``dns.namespaces``; ``dns.namespace`` when
it selects exactly one) and the labels its pod ``selector`` requires, which every pod of
the tenant carries (``source.labels``). Every query of a tenant asks the same question about
a name, so decisions are cached per (tenant, name). Per-pod identity (a pod's own labels,
service account, node) cannot be asked: the tenant's view and resolver, and their caches,
are shared by all its pods.

The answer: ``status.code`` 0 (OK) allows, 7 (PERMISSION_DENIED) or 16
(UNAUTHENTICATED) denies; any other code, or a body that is not a CheckResponse, is an
error (the failure mode decides, and the policy reports it). The decision's lifetime is
``dynamic_metadata["dns.ttl_seconds"]`` (or ``["ttl_seconds"]``) when given, else the
policy's ``decisionTtlSeconds``. ``dynamic_metadata["dns.per_type"]: true`` says the
decision holds for the asked type only: it is cached per (name, type) (``typed_key``), and
the other types of the name are asked on their own; otherwise a decision holds for every
type of the name. OPA returns ``dynamic_metadata`` from a Rego rule that
returns an object (see ``examples/policy-server/dns.rego``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from envoy.service.auth.v3 import external_auth_pb2

from controlplane.core.errors import BadDecision
from controlplane.core.model import DefaultAction, DnsPolicy, FailureMode

OK, PERMISSION_DENIED, UNAUTHENTICATED = 0, 7, 16
TABLE_TYPE = "*"  # a table name is decided for every type at once


@dataclass(frozen=True, slots=True)
class Question:
    tenant: str
    name: str  # lower case, no trailing dot
    qtype: str = TABLE_TYPE
    namespace: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    service_account: str = ""
    node: str = ""
    zone: str = "cluster.local"
    namespaces: tuple[str, ...] = ()  # every namespace the tenant's policy selects


@dataclass(frozen=True, slots=True)
class ExternalDecision:
    allow: bool
    expires_at: float
    decided_at: float
    source: str  # "server", or "failure mode closed|open: <why>"
    per_type: bool = False  # the server decided this (name, type) only (dns.per_type)

    @property
    def from_server(self) -> bool:
        return self.source == "server"

    def as_json(self, now: float) -> dict[str, object]:
        return {"decision": "allow" if self.allow else "deny", "source": self.source,
                "expires_in_seconds": round(max(0.0, self.expires_at - now), 1)}


def failure_mode(policy: DnsPolicy) -> FailureMode:
    """The policy's failure mode: as written, else closed under DENY and open otherwise.

    A tenant that denies by default has said that an unknown name is a risk: an outage
    of its policy server must not open it. A tenant that allows by default has said that
    availability comes first: an outage must not take its DNS away.
    """
    server = policy.policy_server
    if server is not None and server.failure_mode is not None:
        return server.failure_mode
    return FailureMode.CLOSED if policy.default_action is DefaultAction.DENY else FailureMode.OPEN


def check_request(q: Question) -> external_auth_pb2.CheckRequest:
    req = external_auth_pb2.CheckRequest()
    attrs = req.attributes
    http = attrs.request.http
    http.host = q.name
    http.method = "DNS"
    http.path = "/" if q.qtype == TABLE_TYPE else f"/{q.qtype}"
    http.protocol = "dns"
    http.headers.update({"x-dns-name": q.name, "x-dns-type": q.qtype,
                         "x-dns-tenant": q.tenant, "x-dns-namespace": q.namespace})
    attrs.source.labels.update(dict(q.labels))
    if q.namespace and q.service_account:
        attrs.source.principal = f"spiffe://{q.zone}/ns/{q.namespace}/sa/{q.service_account}"
    if q.node:
        attrs.source.service = q.node
    if q.namespaces:
        http.headers["x-dns-namespaces"] = ",".join(q.namespaces)
    attrs.context_extensions.update({"dns.name": q.name, "dns.type": q.qtype,
                                     "dns.tenant": q.tenant, "dns.namespace": q.namespace,
                                     "dns.namespaces": ",".join(q.namespaces),
                                     "dns.node": q.node})
    return req


def decision_from_response(resp: external_auth_pb2.CheckResponse, *, now: float,
                           default_ttl: float) -> ExternalDecision:
    """The decision the answer carries; ``BadDecision`` says why it cannot be used."""
    code = resp.status.code
    if code == OK:
        allow = True
    elif code in (PERMISSION_DENIED, UNAUTHENTICATED):
        allow = False
    else:
        raise BadDecision(f"the policy server answered status {code}, which is neither OK "
                          "nor a denial")
    ttl = default_ttl
    meta = resp.dynamic_metadata.fields
    for key in ("dns.ttl_seconds", "ttl_seconds"):
        if key in meta:
            value = meta[key]
            if value.WhichOneof("kind") != "number_value" or not 0 <= value.number_value <= 86400:
                raise BadDecision(f"dynamic_metadata {key} must be a number of seconds "
                                  "(0-86400)")
            ttl = value.number_value
            break
    per_type = False
    if "dns.per_type" in meta:
        flag = meta["dns.per_type"]
        if flag.WhichOneof("kind") != "bool_value":
            raise BadDecision("dynamic_metadata dns.per_type must be true or false")
        per_type = flag.bool_value
    return ExternalDecision(allow=allow, expires_at=now + ttl, decided_at=now, source="server",
                            per_type=per_type)


def typed_key(name: str, qtype: str) -> str:
    """The cache key of a decision the server made for one type of a name only."""
    return f"{name} {qtype}"


class DecisionCache:
    """(tenant, name) -> decision, with lifetimes; bounded, oldest evicted first."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], ExternalDecision] = OrderedDict()

    def get(self, tenant: str, name: str, now: float) -> ExternalDecision | None:
        """A decision that still lives."""
        d = self._entries.get((tenant, name))
        return d if d is not None and d.expires_at > now else None

    def last(self, tenant: str, name: str) -> ExternalDecision | None:
        """The last decision, alive or not."""
        return self._entries.get((tenant, name))

    def put(self, tenant: str, name: str, decision: ExternalDecision) -> bool:
        """Store; True when the answer (allow or deny) changed."""
        key = (tenant, name)
        old = self._entries.pop(key, None)
        self._entries[key] = decision
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return old is None or old.allow != decision.allow

    def tenant(self, tenant: str) -> Iterator[tuple[str, ExternalDecision]]:
        for (t, name), d in self._entries.items():
            if t == tenant:
                yield name, d

    def drop_tenant(self, tenant: str) -> None:
        for key in [k for k in self._entries if k[0] == tenant]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


def table_allows(decisions: Mapping[str, ExternalDecision], name: str,
                 mode: FailureMode) -> bool:
    """Whether a name of the table is answered: the server's decision, or, until there is
    one, the failure mode (closed: left out until allowed)."""
    d = decisions.get(name)
    if d is None:
        return mode is FailureMode.OPEN
    return d.allow
