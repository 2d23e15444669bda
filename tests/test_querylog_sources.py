"""The query log says who decided a name (a rule, the policy server, its failure mode) and
what the server said (issue 20): a name the server allowed is not logged as denied by
``defaultAction DENY``, a whitelisted name the server vetoes is logged as denied."""

from __future__ import annotations

from dataclasses import asdict

from controlplane.core.model import DefaultAction
from controlplane.policy.selection import CompiledPolicy
from controlplane.telemetry.querylog import QueryLog
from tests.factories import policy

SERVER = {"allowed.example.com": (True, "server"), "vetoed.example.com": (False, "server"),
          "revoked.example.com": (False, "server")}


def _log() -> QueryLog:
    compiled = {"t": CompiledPolicy.of(policy("t", {}, default_action=DefaultAction.DENY,
                                              whitelist=("vetoed.example.com",),
                                              blacklist=("*.bad.example",))),
                "plain": CompiledPolicy.of(policy("plain", {},
                                                  default_action=DefaultAction.DENY))}

    def verdict(tenant: str, name: str) -> tuple[bool, str] | None:
        if tenant != "t":
            return None  # no policy server
        return SERVER.get(name, (False, "failure mode closed"))
    return QueryLog(lambda: compiled, clock=lambda: 1.0, server_verdict=verdict)


def _one(qlog: QueryLog, name: str, rcode: str, tenant: str = "t") -> dict[str, object] | None:
    record = qlog.classify(tenant=tenant, node="n", name=name, qtype="A", rcode=rcode)
    return None if record is None else asdict(record)


def test_server_decisions_are_logged_as_the_server_made_them() -> None:
    qlog = _log()
    assert _one(qlog, "allowed.example.com", "NOERROR") is None  # allowed: not kept
    vetoed = _one(qlog, "vetoed.example.com", "NXDOMAIN")
    assert vetoed is not None
    assert (vetoed["action"], vetoed["source"], vetoed["verdict"]) == ("deny", "server", "deny")
    assert vetoed["rule"] == "policy server: deny"
    unknown = _one(qlog, "new.example.com", "NXDOMAIN")  # no decision: the failure mode
    assert unknown is not None
    assert (unknown["action"], unknown["source"], unknown["verdict"]) == (
        "deny", "failure mode", "")
    # answered NOERROR under an allow the server has revoked since: it was allowed
    assert _one(qlog, "revoked.example.com", "NOERROR") is None
    blocked = _one(qlog, "x.bad.example", "NXDOMAIN")  # a blacklisted name is never asked
    assert blocked is not None and blocked["source"] == "rule"
    assert blocked["rule"].startswith("blacklist")  # type: ignore[union-attr]
    plain = _one(qlog, "www.example.com", "NXDOMAIN", tenant="plain")
    assert plain is not None and (plain["source"], plain["verdict"]) == ("rule", "")
    assert qlog.sources[("t", "server", "deny")] == 1
    assert qlog.sources[("t", "server", "allow")] == 2
    assert qlog.sources[("t", "failure mode", "deny")] == 1
    assert qlog.sources[("t", "rule", "deny")] == 1
