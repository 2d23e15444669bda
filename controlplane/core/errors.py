"""The one exception tree of the control plane, and how errors travel.

::

    Exception
     └── ControlPlaneError         base of every exception this package raises
          ├── ConfigError          settings, flags or a file a flag names: ``flag`` and
          │                        ``reason``; ``controlplane serve`` exits with code 2
          ├── InvalidValue         (also a ValueError) a value from user input that cannot
          │    │                   be used; ``str(exc)`` is the reason, said for a person
          │    ├── BadAddress      not HOST[:PORT] (core.names.split_host_port)
          │    ├── BadPattern      not a name or ``*.suffix`` (core.names.parse_pattern)
          │    ├── InvalidField    a manifest field (core.manifests: becomes an InputError)
          │    ├── BadUpstream     an address that is neither an IP nor a Service name
          │    │    │              (dns.views.resolve_upstream)
          │    │    └── MissingService  a Service name whose Service does not exist (yet)
          │    │                   or has no cluster IP
          │    ├── NoTlsName       TLS to an IP address without a name to verify
          │    │                   (dns.views, policyserver.client)
          │    ├── BadDecision     a policy server's answer that cannot be used
          │    │                   (policy.decisions.decision_from_response)
          │    ├── BadReview       a body that is not an AdmissionReview (HTTP 400,
          │    │                   injection.admission)
          │    └── WireError       a DNS message the zones' primary cannot read, or a
          │                        zone line it cannot send (resolvers.zone_wire)
          ├── ProtocolError        an xDS client broke the protocol; its stream ends with
          │                        ``code`` (xds.protocol)
          ├── Unauthenticated      credentials that prove no identity: UNAUTHENTICATED
          ├── AuthUnavailable      credentials that cannot be checked now (the API server
          │                        is down): UNAVAILABLE, the client retries
          ├── ResolverError        (also a RuntimeError) a tenant resolver could not be
          │    │                   started or changed (resolvers.pool)
          │    ├── PortTaken       a port chosen for a resolver was bound by another
          │    │                   process first: the pool retries on new ports
          │    └── SpawnError      the resolver host (``controlplane resolver-host``) did
          │                        not start a process: not running, or the start failed
          ├── WatchExpired         a Kubernetes watch's resourceVersion is gone (HTTP 410):
          │                        relist (sources.kubernetes)
          └── FaultInjected        test-only: ``serve --fault-crash-task NAME`` crashes that
                                   supervised thread or task (runtime.supervise)

Conventions:

- Functions that cannot do what they are asked raise one of these (never return a
  message in place of a result); callers catch the narrowest class they handle.
  Raised errors are chained with ``from`` so the original cause stays visible.
- ``InputError`` is a value, not an exception: a user object that was rejected (a
  broken YAML file, an invalid DnsPolicy), naming the object (kind/namespace/name),
  where it came from and why. Sources and the parser return these; they are shown in
  the log, in ``GET /api/v1/errors`` and in DnsPolicy status. Rejected input is data,
  not control flow: the rest of the input keeps serving.
- Validation predicates return ``str | None`` ("the problem, or None"):
  ``core.names.name_problem``, ``injection.sidecar.config_problem``,
  ``identity.auth.authorize`` (why an identity may not speak for a workload); and
  ``list[str]`` of problems: ``kube.leadership.LeaseTimings.problems``. Callers that
  cannot go on turn the problem into one of the exceptions above (``ConfigError`` at
  start, ``InputError`` for a manifest).
- A view that cannot forward keeps serving and carries the reason in its notes
  (``dns.views.build_tenant_view`` returns ``(view, error or None)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class InputError:
    """A piece of user input that was rejected, with the object it concerns."""

    kind: str
    namespace: str
    name: str
    reason: str
    origin: str = ""  # e.g. "examples/demo.yaml:12" or "kubernetes"
    generation: int = 0  # metadata.generation of the rejected object, when known
    # The lines around the fault, numbered, with a caret under the column (files only);
    # not part of the error's identity.
    snippet: str = field(default="", compare=False)

    @property
    def object_ref(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"

    def __str__(self) -> str:
        at = f" ({self.origin})" if self.origin else ""
        return f"{self.object_ref}{at}: {self.reason}"

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "origin": self.origin,
            "reason": self.reason,
            "message": str(self),
            "snippet": self.snippet,
        }


class ControlPlaneError(Exception):
    """Base class for exceptions raised by the control plane."""


class ConfigError(ControlPlaneError):
    """Settings, command-line arguments or a file they name that cannot be used.

    ``flag`` is the command-line option at fault ("" when none applies), ``reason``
    why; ``str(exc)`` is ``"flag: reason"``."""

    def __init__(self, reason: str, *, flag: str = "") -> None:
        super().__init__(f"{flag}: {reason}" if flag else reason)
        self.flag = flag
        self.reason = reason

    def at(self, flag: str) -> ConfigError:
        """This error, blamed on ``flag`` unless it already names one."""
        return self if self.flag else ConfigError(self.reason, flag=flag)


class InvalidValue(ControlPlaneError, ValueError):
    """A value from user input that cannot be used; ``str(exc)`` says why."""


class BadAddress(InvalidValue):
    """Text that is not ``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""


class BadPattern(InvalidValue):
    """Text that is not a DNS name or a ``*.suffix`` pattern."""


class InvalidField(InvalidValue):
    """A field of a manifest that cannot be used (reported as an ``InputError``)."""


class BadUpstream(InvalidValue):
    """A server address that is neither an IP address nor a Service name."""


class MissingService(BadUpstream):
    """A Service name whose Service does not exist (yet) or has no cluster IP."""


class NoTlsName(InvalidValue):
    """TLS to a server given by IP address, without a name to verify its certificate."""


class BadDecision(InvalidValue):
    """A policy server's answer that is neither a decision nor a denial."""


class BadReview(InvalidValue):
    """The request body is not an AdmissionReview this webhook can answer (HTTP 400)."""


class WireError(InvalidValue):
    """A DNS message that cannot be read, or a zone line that cannot be written."""


class ProtocolError(ControlPlaneError):
    """An xDS client broke the protocol; the stream ends with ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # a grpc.StatusCode name, e.g. "INVALID_ARGUMENT"


class Unauthenticated(ControlPlaneError):
    """The stream's credentials prove no identity (missing, unknown, expired, wrong
    audience): bad input, the stream ends with UNAUTHENTICATED."""


class AuthUnavailable(ControlPlaneError):
    """The credentials cannot be checked now (the TokenReview API is down): the stream
    ends with UNAVAILABLE and the client retries."""


class ResolverError(ControlPlaneError, RuntimeError):
    """A tenant resolver could not be started or changed."""


class PortTaken(ResolverError):
    """A port chosen for a resolver was bound by another process first."""


class SpawnError(ResolverError):
    """The resolver host did not start a process (not running, or the start failed)."""


class WatchExpired(ControlPlaneError):
    """A Kubernetes watch's resourceVersion is too old (HTTP 410): relist."""


class FaultInjected(ControlPlaneError):
    """Test-only: raised in the supervised thread or task ``--fault-crash-task`` names."""
