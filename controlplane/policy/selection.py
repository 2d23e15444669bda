"""Which DnsPolicy applies to a workload, and what it says about a name.

Pure functions over model objects: no I/O, no clock. The densest tests of the
project live in ``tests/test_policy.py``.

Selection: a policy applies to a workload when its ``namespaceSelector``
matches the labels of the workload's namespace and, if it has a ``selector``,
that selector matches the workload's pod labels. A policy with a ``selector``
beats one without. Among equals the policy whose name sorts first wins and
the others are reported as conflicts.

Classification of one name: ``whitelist`` (allow) > ``blacklist`` (deny) >
``defaultAction``. WARN answers like ALLOW (the query is only logged).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from controlplane.core.model import DefaultAction, DnsPolicy, LabelSelector, Workload
from controlplane.core.names import Pattern


class Action(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    WARN = "warn"

    @property
    def answers(self) -> bool:
        return self is not Action.DENY


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    rule: str  # e.g. "whitelist *.acme.com", "blacklist x.com", "defaultAction DENY"


@dataclass(frozen=True, slots=True)
class Selection:
    policy: DnsPolicy | None
    conflicts: tuple[str, ...] = ()  # names of other policies that also matched


def select_policy(
    workload: Workload,
    namespace_labels: Mapping[str, str],
    policies: Iterable[DnsPolicy],
) -> Selection:
    """The policy for ``workload`` (None when no policy selects it)."""
    pod_labels = workload.label_map
    best: list[tuple[int, str, DnsPolicy]] = []
    for policy in policies:
        if not workload.namespace or not policy.namespace_selector.matches(namespace_labels):
            continue
        if policy.selector is not None:
            if not policy.selector.matches(pod_labels):
                continue
            rank = 0
        else:
            rank = 1
        best.append((rank, policy.name, policy))
    if not best:
        return Selection(None)
    best.sort(key=lambda t: (t[0], t[1]))
    top_rank = best[0][0]
    conflicts = tuple(name for rank, name, _ in best[1:] if rank == top_rank)
    return Selection(best[0][2], conflicts)


def could_match(selector: LabelSelector, fixed: Mapping[str, str]) -> bool:
    """Whether some label set that holds ``fixed`` (and any other labels) matches
    ``selector``: what a caller who must claim ``fixed`` but may add labels can reach."""
    for key, value in selector.match_labels:
        if key in fixed and fixed[key] != value:
            return False
    for req in selector.match_expressions:
        if req.key not in fixed:
            if req.operator == "In" and not req.values:
                return False
            continue  # a claim can add it (In, Exists) or leave it out (NotIn, DoesNotExist)
        value = fixed[req.key]
        if req.operator == "In" and value not in req.values:
            return False
        if req.operator == "NotIn" and value in req.values:
            return False
        if req.operator == "DoesNotExist":
            return False
    return True


def reachable_tenants(namespace: str, namespace_labels: Mapping[str, str],
                      fixed: Mapping[str, str], policies: Iterable[DnsPolicy]) -> list[str]:
    """The tenants (policy names) a workload of ``namespace`` could be given when it must
    claim the labels ``fixed`` but may claim more (a static token's labels): the policy
    that selects exactly ``fixed``, and every policy whose pod selector some larger claim
    matches. More than one means the credential does not name one tenant."""
    policies = list(policies)
    exact = select_policy(Workload(node_id="", namespace=namespace,
                                   labels=tuple(sorted(fixed.items()))),
                          namespace_labels, policies).policy
    out = {exact.name} if exact is not None else set()
    here = [p for p in policies if namespace and p.namespace_selector.matches(namespace_labels)]
    for policy in here:
        if policy.selector is not None and could_match(policy.selector, fixed):
            out.add(policy.name)
    # A claim escapes a pod selector that ``fixed`` matches by adding a label it excludes
    # (NotIn, DoesNotExist); escaping all of them reaches the namespace-wide policy.
    matched = [p.selector for p in here if p.selector is not None and p.selector.matches(fixed)]
    if all(any(r.operator in ("NotIn", "DoesNotExist") and r.key not in fixed
               for r in selector.match_expressions) for selector in matched):
        plain = sorted(p.name for p in here if p.selector is None)
        if plain:
            out.add(plain[0])
    return sorted(out)


def static_token_problem(*, namespace: str, namespace_labels: Mapping[str, str],
                         labels: Mapping[str, str], tenant: str,
                         policies: Iterable[DnsPolicy]) -> str | None:
    """Why a static token cannot stand for one tenant here, or None.

    A token naming ``tenant`` needs that DnsPolicy, able to select a workload of its
    namespace (with its labels, if it binds labels). A token with labels (bound exactly)
    gets the policy those labels select: one at most. A token with neither lets its
    node's labels choose, so it is refused where they could choose more than one."""
    policies = list(policies)
    if tenant:
        policy = next((p for p in policies if p.tenant == tenant), None)
        if policy is None:
            return f"its tenant {tenant!r} has no DnsPolicy"
        if not policy.namespace_selector.matches(namespace_labels):
            return (f"DnsPolicy {tenant!r} does not select namespace {namespace!r}, the "
                    f"token's")
        if labels:
            chosen = select_policy(Workload(node_id="", namespace=namespace,
                                            labels=tuple(sorted(labels.items()))),
                                   namespace_labels, policies).policy
            if chosen is None or chosen.tenant != tenant:
                got = f"DnsPolicy {chosen.name!r}" if chosen is not None else "no DnsPolicy"
                return (f"its labels {dict(labels)} in namespace {namespace!r} get "
                        f"{got}, not {tenant!r}")
        elif policy.selector is not None and not could_match(policy.selector, {}):
            return f"DnsPolicy {tenant!r} selects no workload"
        return None
    if labels:
        return None  # bound exactly: one policy at most
    tenants = reachable_tenants(namespace, namespace_labels, {}, policies)
    if len(tenants) > 1:
        return (f"without labels or a tenant it could get the view of any of the tenants "
                f"{', '.join(tenants)} (namespace {namespace!r}): name one with 'tenant:' "
                f"or give it labels that select one")
    return None


_ACTION_OF_DEFAULT = {
    DefaultAction.ALLOW: Action.ALLOW,
    DefaultAction.DENY: Action.DENY,
    DefaultAction.WARN: Action.WARN,
}


_UNKNOWN = Pattern("")  # not in a memo (a memo holds patterns and None)


class _Matcher:
    """Exact names and ``*.suffix`` patterns, matched by walking a name's labels.

    A name matches an exact entry, else the *longest* wildcard suffix it lies
    under: O(labels) dictionary lookups instead of one test per pattern. The
    wildcard found for a suffix is kept (at most ``_MEMO`` suffixes), so the names of one
    namespace walk its labels once between them.
    """

    __slots__ = ("exact", "suffixes", "_below_memo", "decisions")
    _MEMO = 4096

    def __init__(self, patterns: tuple[Pattern, ...], action: Action, rule: str) -> None:
        self.exact = {p.text: p for p in patterns if not p.is_wildcard}
        self.suffixes = {p.suffix: p for p in patterns if p.is_wildcard}
        self._below_memo: dict[str, Pattern | None] = {}
        # The decision of each pattern (by its text), one object shared by the names it
        # decides: ``Decision(action, f"{rule} {p}")`` made once, not once per name.
        self.decisions = {p.text: Decision(action, f"{rule} {p}") for p in patterns}

    def match(self, name: str) -> Pattern | None:
        hit = self.exact.get(name)
        if hit is not None or not self.suffixes:
            return hit
        pos = name.find(".")
        if pos == -1:
            return None
        suffix = name[pos + 1:]
        hit = self._below_memo.get(suffix, _UNKNOWN)  # _below's memo, without the call
        return self._below(suffix) if hit is _UNKNOWN else hit

    def _below(self, suffix: str) -> Pattern | None:
        """The wildcard of ``suffix`` itself, else of the longest suffix of it."""
        memo = self._below_memo
        if suffix in memo:
            return memo[suffix]
        hit = self.suffixes.get(suffix)
        if hit is None:
            pos = suffix.find(".")
            hit = self._below(suffix[pos + 1:]) if pos != -1 else None
        if len(memo) < self._MEMO:
            memo[suffix] = hit
        return hit


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """A policy with its patterns parsed, ready to classify many names."""

    whitelist: tuple[Pattern, ...]
    blacklist: tuple[Pattern, ...]
    default: DefaultAction
    _white: _Matcher = field(init=False, repr=False, compare=False)
    _black: _Matcher = field(init=False, repr=False, compare=False)
    _default: Decision = field(init=False, repr=False, compare=False)
    # The exact names of both lists, and the decision for a name no exact entry names, by
    # the suffix after its first label (at most _Matcher._MEMO): what the wildcards give it.
    _exact: frozenset[str] = field(init=False, repr=False, compare=False)
    _by_parent: dict[str, Decision] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_white", _Matcher(self.whitelist, Action.ALLOW, "whitelist"))
        object.__setattr__(self, "_black", _Matcher(self.blacklist, Action.DENY, "blacklist"))
        object.__setattr__(self, "_exact", frozenset(self._white.exact) | set(self._black.exact))
        object.__setattr__(self, "_by_parent", {})
        object.__setattr__(self, "_default", Decision(
            _ACTION_OF_DEFAULT[self.default], f"defaultAction {self.default.value}"))

    @classmethod
    def of(cls, policy: DnsPolicy) -> CompiledPolicy:
        return cls(
            whitelist=tuple(Pattern(p) for p in policy.whitelist),
            blacklist=tuple(Pattern(p) for p in policy.blacklist),
            default=policy.default_action,
        )

    def _decide(self, hit: Callable[[Pattern], bool]) -> Decision:
        for p in self.whitelist:
            if hit(p):
                return Decision(Action.ALLOW, f"whitelist {p}")
        for p in self.blacklist:
            if hit(p):
                return Decision(Action.DENY, f"blacklist {p}")
        return self._default

    def classify(self, name: str) -> Decision:
        """Decide for one concrete (lower-case) name: exact beats the longest wildcard.

        A name no exact entry names is decided by the wildcards over the suffix after its
        first label alone: that decision is kept by suffix, so the names of a namespace
        share one lookup (a wide tenant classifies 100,000 names at a full build)."""
        if name not in self._exact:
            pos = name.find(".")
            if pos != -1:
                parent = name[pos + 1:]
                memo = self._by_parent
                d = memo.get(parent)
                if d is None:
                    d = self._classify(name)
                    if len(memo) < _Matcher._MEMO:  # noqa: SLF001 - one bound for both memos
                        memo[parent] = d
                return d
        return self._classify(name)

    def _classify(self, name: str) -> Decision:
        """``classify`` without the memo."""
        p = self._white.match(name)
        if p is not None:
            return self._white.decisions[p.text]  # Decision(Action.ALLOW, f"whitelist {p}")
        p = self._black.match(name)
        if p is not None:
            return self._black.decisions[p.text]  # Decision(Action.DENY, f"blacklist {p}")
        return self._default

    def classify_below(self, suffix: str) -> Decision:
        """Decide for a name strictly below ``suffix`` that no exact entry and no longer
        wildcard names: only wildcards whose suffix is ``suffix`` or above it apply."""
        return self.classify(f"*.{suffix}" if suffix else "*")

    def resolver_triggers(self, *, skip: Callable[[str], bool] = lambda _: False
                          ) -> tuple[tuple[str, Decision], ...]:
        """The policy for names outside the table, as triggers for a resolver that picks the
        most specific one (RPZ): an exact name beats ``*.suffix``, a longer suffix beats a
        shorter one, and ``*`` alone covers every name no other trigger covers.

        RPZ picks by specificity while a policy picks whitelist > blacklist > default,
        so each trigger carries the policy's decision for the names it is the most
        specific trigger of: for an exact name, its own decision; for ``*.s``, the
        decision for a name below ``s`` that no exact entry names. An exact name ``e``
        also gets ``*.e``: names below an exact trigger would otherwise fall in its zone
        with no action (measured on unbound 1.17). ``skip`` leaves names out (the
        cluster zone, which the resolver answers itself).
        """
        out: dict[str, Decision] = {}
        if self.default is DefaultAction.DENY:
            out["*"] = self._default
        for p in self.whitelist + self.blacklist:
            name = p.suffix if p.is_wildcard else p.text
            if skip(name):
                continue
            # unbound matches the triggers as DNS wildcards (RFC 4592): ``*.s`` only
            # applies where ``s`` is the closest existing ancestor, and every ancestor of
            # a trigger exists in the zone. So every ancestor gets its own exact and
            # wildcard trigger, each with the policy's decision (measured: with ``*`` and
            # ``*.acme.com`` alone, ``www.example.com`` escaped ``*`` through ``com.``).
            while name:
                out.setdefault(f"*.{name}", self.classify_below(name))
                out.setdefault(name, self.classify(name))
                name = name.partition(".")[2]
        return tuple(sorted(out.items()))

    def classify_pattern(self, pattern: Pattern) -> Decision:
        """Decide for a wildcard host (``*.x``): a rule decides only if it covers it whole.

        A wildcard host that is only partly whitelisted is decided by the
        blacklist and defaultAction: under DENY it is left out (fail closed).
        """
        if not pattern.is_wildcard:
            return self.classify(pattern.text)
        return self._decide(lambda p: p.covers(pattern))

    def effective_blacklist(self) -> tuple[Pattern, ...]:
        """Blacklist patterns that still deny something once the whitelist is applied."""
        return tuple(b for b in self.blacklist if not any(w.covers(b) for w in self.whitelist))

    def shadowed_whitelist(self) -> tuple[tuple[Pattern, Pattern], ...]:
        """(whitelist, blacklist) pairs where the whitelisted names lie under a denied wildcard.

        With forwarding on, Envoy can only deny a whole wildcard: an external
        name there cannot be forwarded selectively, so it is denied (fail closed).
        """
        out = []
        for w in self.whitelist:
            for b in self.effective_blacklist():
                if b.is_wildcard and b.covers(w) and not w.covers(b):
                    out.append((w, b))
        return tuple(out)
