"""Who writes status: the pure rules of leader election on a ``coordination.k8s.io/v1`` Lease.

Values in, values out; no clock, no network (``sources/leader.py`` is the
thread that talks to the API). The rules are those of client-go's
``leaderelection`` package, so a mixed fleet would behave the same:

- A lease is *expired* when its record has not changed for
  ``leaseDurationSeconds`` **by the observer's own clock**: a follower notes
  the local time at which it first saw each ``resourceVersion`` and never
  compares its clock with the ``renewTime`` another machine wrote. Clock skew
  between replicas therefore cannot make two leaders.
- An empty ``holderIdentity`` means released: anyone may take it at once.
- Every write carries the ``resourceVersion`` it read, so of two replicas
  racing for the same record the API server accepts one and answers 409 to
  the other.
- The leader renews every ``renew`` seconds and considers itself leader only
  until ``renew_deadline`` after its last successful renewal, which is
  shorter than ``leaseDurationSeconds``: a leader cut off from the API stops
  writing before anyone else may start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")


@dataclass(frozen=True, slots=True)
class LeaseTimings:
    """``duration`` > ``renew_deadline`` > ``renew`` > 0, and ``retry`` > 0 (seconds)."""

    duration: int = 15  # leaseDurationSeconds written into the lease
    renew_deadline: float = 10.0  # a leader that could not renew for this long steps down
    renew: float = 5.0  # how often the leader renews
    retry: float = 2.0  # how often a follower looks (times a jitter in [1, 1.2])

    def problems(self) -> list[str]:
        out = []
        if not 0 < self.renew < self.renew_deadline < self.duration:
            out.append(f"need 0 < renew ({self.renew}) < renew deadline "
                       f"({self.renew_deadline}) < lease duration ({self.duration})")
        if self.retry <= 0:
            out.append(f"the retry interval ({self.retry}) must be positive")
        return out


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The parts of a Lease that election reads."""

    holder: str = ""
    duration_seconds: int = 0
    acquire_time: str = ""
    renew_time: str = ""
    transitions: int = 0
    resource_version: str = ""


@dataclass(frozen=True, slots=True)
class Observation:
    """The last record seen (``None``: the lease does not exist) and since when, locally."""

    record: LeaseRecord | None
    since: float


class Action(StrEnum):
    CREATE = "create"  # no lease yet: create it, holding it
    RENEW = "renew"  # we hold it: write a new renewTime
    ACQUIRE = "acquire"  # released or expired: take it over
    FOLLOW = "follow"  # someone else holds a valid lease


def parse_lease(obj: dict[str, Any]) -> LeaseRecord:
    spec = obj.get("spec") or {}
    meta = obj.get("metadata") or {}
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
        acquire_time=str(spec.get("acquireTime") or ""),
        renew_time=str(spec.get("renewTime") or ""),
        transitions=int(spec.get("leaseTransitions") or 0),
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def observe(previous: Observation | None, record: LeaseRecord | None, now: float
            ) -> Observation:
    """Note ``record``; its clock starts when its resourceVersion is first seen."""
    if previous is not None and previous.record == record:
        return previous
    return Observation(record, now)


def expired(obs: Observation, now: float) -> bool:
    record = obs.record
    return record is None or now >= obs.since + record.duration_seconds


def decide(identity: str, obs: Observation, now: float) -> Action:
    record = obs.record
    if record is None:
        return Action.CREATE
    if record.holder == identity:
        return Action.RENEW
    if not record.holder or expired(obs, now):
        return Action.ACQUIRE
    return Action.FOLLOW


def lease_spec(identity: str, action: Action, record: LeaseRecord | None, *,
               duration: int, now: str) -> dict[str, Any]:
    """The spec to write for ``action`` (``now``: RFC 3339 with microseconds)."""
    if action is Action.FOLLOW:
        raise ValueError("a follower writes nothing")
    previous = record or LeaseRecord()
    taking = action is not Action.RENEW
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": duration,
        "acquireTime": now if taking or not previous.acquire_time else previous.acquire_time,
        "renewTime": now,
        # A transition is a change of holder; creating the lease is not one.
        "leaseTransitions": previous.transitions + (1 if action is Action.ACQUIRE else 0),
    }


def released_spec(record: LeaseRecord, *, now: str) -> dict[str, Any]:
    """What a leader that stops writes: no holder, so a follower takes over at once."""
    return {"holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": now,
            "renewTime": now, "leaseTransitions": record.transitions}
