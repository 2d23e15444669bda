"""Policy selection and name classification: table-driven, plus properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.core.errors import BadPattern
from controlplane.core.model import DefaultAction, DnsPolicy, LabelSelector, Requirement, Workload
from controlplane.core.names import Pattern, parse_pattern
from controlplane.policy.selection import Action, CompiledPolicy, select_policy
from tests.factories import policy


def workload(namespace: str = "payments", **labels: str) -> Workload:
    return Workload(node_id="n1", namespace=namespace, labels=tuple(sorted(labels.items())))


SELECTION_CASES = [
    # (description, ns labels, pod labels, policies, expected policy, expected conflicts)
    ("no policy", {"env": "a"}, {}, [], None, ()),
    ("namespace match", {"tenant": "acme"}, {},
     [policy("acme", {"tenant": "acme"}), policy("foo", {"tenant": "foo"})], "acme", ()),
    ("namespace mismatch", {"tenant": "bar"}, {}, [policy("acme", {"tenant": "acme"})], None, ()),
    ("selector beats namespace-only", {"workload": "payments"}, {"app": "payment-gateway"},
     [policy("ns-wide", {"workload": "payments"}),
      policy("gw", {"workload": "payments"}, pod_labels={"app": "payment-gateway"})], "gw", ()),
    ("selector that does not match falls back", {"workload": "payments"}, {"app": "other"},
     [policy("ns-wide", {"workload": "payments"}),
      policy("gw", {"workload": "payments"}, pod_labels={"app": "payment-gateway"})],
     "ns-wide", ()),
    ("tie breaks by name and is a conflict", {"t": "x"}, {},
     [policy("zeta", {"t": "x"}), policy("alpha", {"t": "x"})], "alpha", ("zeta",)),
    ("empty namespaceSelector selects all", {"anything": "1"}, {}, [policy("all", {})], "all", ()),
    ("lower rank is not a conflict", {"t": "x"}, {"app": "a"},
     [policy("b-ns", {"t": "x"}), policy("a-sel", {"t": "x"}, pod_labels={"app": "a"})],
     "a-sel", ()),
]


@pytest.mark.parametrize(("ns_labels", "pod_labels", "policies", "expected", "conflicts"),
                         [c[1:] for c in SELECTION_CASES], ids=[c[0] for c in SELECTION_CASES])
def test_select_policy(ns_labels: dict[str, str], pod_labels: dict[str, str],
                       policies: list[DnsPolicy], expected: str | None,
                       conflicts: tuple[str, ...]) -> None:
    sel = select_policy(workload(**pod_labels), ns_labels, policies)
    assert (sel.policy.name if sel.policy else None) == expected
    assert sel.conflicts == conflicts


def test_workload_without_namespace_gets_no_policy() -> None:
    sel = select_policy(Workload(node_id="x"), {}, [policy("all", {})])
    assert sel.policy is None


def test_match_expressions() -> None:
    sel = LabelSelector(match_expressions=(
        Requirement("env", "In", ("prod", "staging")),
        Requirement("legacy", "DoesNotExist"),
        Requirement("team", "NotIn", ("red",)),
        Requirement("tier", "Exists"),
    ))
    assert sel.matches({"env": "prod", "tier": "1", "team": "blue"})
    assert not sel.matches({"env": "dev", "tier": "1"})
    assert not sel.matches({"env": "prod", "tier": "1", "legacy": "y"})
    assert not sel.matches({"env": "prod", "tier": "1", "team": "red"})
    assert not sel.matches({"env": "prod"})


FILTERING = policy("dns-policy", {"workload": "payments"}, whitelist=(
    "*.payments.svc.cluster.local",), blacklist=("*.foo.com",),
    default_action=DefaultAction.WARN)
DEMO_ACME = policy("acme", {"tenant": "acme"},
                   whitelist=("*.acme.com", "*.acme.svc.cluster.local"),
                   default_action=DefaultAction.DENY)
MIXED = policy("mixed", {}, whitelist=("good.foo.com", "*.ok.foo.com"),
               blacklist=("*.foo.com", "bad.example.com"), default_action=DefaultAction.ALLOW)

CLASSIFY_CASES = [
    (FILTERING, "api.payments.svc.cluster.local", Action.ALLOW, "whitelist *.payments.svc.cluster.local"),
    (FILTERING, "a.b.payments.svc.cluster.local", Action.ALLOW, "whitelist *.payments.svc.cluster.local"),
    (FILTERING, "payments.svc.cluster.local", Action.WARN, "defaultAction WARN"),
    (FILTERING, "x.foo.com", Action.DENY, "blacklist *.foo.com"),
    (FILTERING, "deep.x.foo.com", Action.DENY, "blacklist *.foo.com"),
    (FILTERING, "foo.com", Action.WARN, "defaultAction WARN"),
    (FILTERING, "notfoo.com", Action.WARN, "defaultAction WARN"),
    (FILTERING, "google.com", Action.WARN, "defaultAction WARN"),
    (DEMO_ACME, "httpbin.acme.com", Action.ALLOW, "whitelist *.acme.com"),
    (DEMO_ACME, "httpbin.foo.com", Action.DENY, "defaultAction DENY"),
    (DEMO_ACME, "httpbin.acme.svc.cluster.local", Action.ALLOW, "whitelist *.acme.svc.cluster.local"),
    (DEMO_ACME, "httpbin.foo.svc.cluster.local", Action.DENY, "defaultAction DENY"),
    (DEMO_ACME, "acme.com", Action.DENY, "defaultAction DENY"),
    (MIXED, "good.foo.com", Action.ALLOW, "whitelist good.foo.com"),
    (MIXED, "a.ok.foo.com", Action.ALLOW, "whitelist *.ok.foo.com"),
    (MIXED, "evil.foo.com", Action.DENY, "blacklist *.foo.com"),
    (MIXED, "bad.example.com", Action.DENY, "blacklist bad.example.com"),
    (MIXED, "x.bad.example.com", Action.ALLOW, "defaultAction ALLOW"),
    (MIXED, "example.com", Action.ALLOW, "defaultAction ALLOW"),
]


@pytest.mark.parametrize(("pol", "name", "action", "rule"), CLASSIFY_CASES,
                         ids=[f"{c[0].name}:{c[1]}" for c in CLASSIFY_CASES])
def test_classify(pol: DnsPolicy, name: str, action: Action, rule: str) -> None:
    decision = CompiledPolicy.of(pol).classify(name)
    assert (decision.action, decision.rule) == (action, rule)


def test_wildcard_host_is_allowed_only_when_covered() -> None:
    deny = CompiledPolicy.of(policy("p", {}, whitelist=("*.a.wild.com",),
                                    default_action=DefaultAction.DENY))
    assert deny.classify_pattern(Pattern("*.wild.com")).action is Action.DENY
    assert deny.classify_pattern(Pattern("*.x.a.wild.com")).action is Action.ALLOW
    allow = CompiledPolicy.of(policy("p", {}, blacklist=("*.wild.com",)))
    assert allow.classify_pattern(Pattern("*.a.wild.com")).action is Action.DENY
    assert allow.classify_pattern(Pattern("*.other.com")).action is Action.ALLOW


def test_effective_blacklist_and_shadowed_whitelist() -> None:
    c = CompiledPolicy.of(policy("p", {}, whitelist=("*.foo.com", "a.bar.com"),
                                 blacklist=("x.foo.com", "*.y.foo.com", "*.bar.com")))
    assert [str(p) for p in c.effective_blacklist()] == ["*.bar.com"]
    assert [(str(w), str(b)) for w, b in c.shadowed_whitelist()] == [("a.bar.com", "*.bar.com")]


@pytest.mark.parametrize(("raw", "ok"), [
    ("*.payments.svc.cluster.local", True), ("api.example.com", True), ("API.Example.COM.", True),
    ("_http._tcp.x.com", True), ("foo.*.com", False), ("*", False), ("*.", False),
    ("a..b", False), ("-a.com", False), ("*.*.com", False), (7, False), ("a" * 64 + ".com", False),
])
def test_parse_pattern(raw: object, ok: bool) -> None:
    if not ok:
        with pytest.raises(BadPattern, match="pattern"):
            parse_pattern(raw)
        return
    result = parse_pattern(raw)
    assert result.text == result.text.lower()


labels = st.text(alphabet="abcxyz", min_size=1, max_size=3)
names = st.lists(labels, min_size=1, max_size=4).map(".".join)
patterns = st.one_of(names, names.map(lambda n: "*." + n)).map(Pattern)


@given(a=patterns, b=patterns, name=names)
def test_covers_is_sound(a: Pattern, b: Pattern, name: str) -> None:
    """If a covers b, every name b matches is matched by a."""
    if a.covers(b) and b.matches(name):
        assert a.matches(name)


@given(white=st.lists(patterns, max_size=3), black=st.lists(patterns, max_size=3),
       default=st.sampled_from(list(DefaultAction)), name=names)
def test_precedence_property(white: list[Pattern], black: list[Pattern],
                             default: DefaultAction, name: str) -> None:
    """whitelist > blacklist > defaultAction, for any policy and name."""
    pol = CompiledPolicy(tuple(white), tuple(black), default)
    decision = pol.classify(name)
    if any(p.matches(name) for p in white):
        assert decision.action is Action.ALLOW
    elif any(p.matches(name) for p in black):
        assert decision.action is Action.DENY
    else:
        assert decision.action.value == default.value.lower()


@given(white=st.lists(patterns, max_size=3), black=st.lists(patterns, max_size=3),
       default=st.sampled_from(list(DefaultAction)), data=st.data())
def test_one_policy_classifies_many_names_as_fresh_ones_do(
        white: list[Pattern], black: list[Pattern], default: DefaultAction,
        data: st.DataObject) -> None:
    """The decisions a policy keeps by suffix give each name what a fresh policy (nothing
    kept) gives it: exact entries, the longest wildcard, the default. The names: the
    patterns' own, their siblings and children, and others."""
    near = [n for p in white + black for n in (p.suffix, f"a.{p.suffix}", f"x.{p.suffix}",
                                               f"a.x.{p.suffix}", p.suffix.partition(".")[2])
            if n]
    pool = st.one_of(names, st.sampled_from(near)) if near else names
    pol = CompiledPolicy(tuple(white), tuple(black), default)
    for name in data.draw(st.lists(pool, max_size=12)):
        assert pol.classify(name) == CompiledPolicy(tuple(white), tuple(black),
                                                    default).classify(name)
