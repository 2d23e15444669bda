"""The one exception tree of the control plane, split by fault.

- ``InputError`` (a value, not raised across loops): user input that cannot be
  used -- a broken YAML file, an invalid object. It names the object
  (kind/namespace/name), where it came from and why. Sources and the parser
  return these; they are shown in the log and in ``GET /api/v1/errors``.
- ``ControlPlaneError``: base of everything raised by this package.
  - ``ConfigError``: bad settings or command-line arguments (exit code 2).
  - ``RejectedByEnvoy``: Envoy NACKed a response (kept per node, never resent).
  - ``InternalError``: a bug; the process logs it and exits non-zero.

Raised errors are chained with ``from`` so the original cause stays visible.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class InputError:
    """A piece of user input that was rejected, with the object it concerns."""

    kind: str
    namespace: str
    name: str
    reason: str
    origin: str = ""  # e.g. "examples/demo.yaml:12" or "kubernetes"
    generation: int = 0  # metadata.generation of the rejected object, when known

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
        }


class ControlPlaneError(Exception):
    """Base class for exceptions raised by the control plane."""


class ConfigError(ControlPlaneError):
    """Settings or command-line arguments that cannot be used."""


class RejectedByEnvoy(ControlPlaneError):
    """Envoy rejected (NACKed) a configuration we sent."""


class InternalError(ControlPlaneError):
    """A bug in the control plane."""
