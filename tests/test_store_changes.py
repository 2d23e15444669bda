"""The store hands over what changed; files are parsed document by document."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
import yaml

from controlplane.core.errors import InputError
from controlplane.core.frozenmap import FrozenMap
from controlplane.core.inventory import Inventory, Key
from controlplane.core.manifests import parse_object
from controlplane.core.model import (
    DnsPolicy,
    LabelSelector,
    ModelObject,
    Namespace,
    Service,
    object_key,
)
from controlplane.sources.files import parse_text
from controlplane.store.store import Store

# -- FrozenMap -------------------------------------------------------------------------


def test_frozen_map_is_a_mapping_and_evolves_by_sharing() -> None:
    base = FrozenMap({(f"ns{i % 7}", f"s{i}"): i for i in range(5000)})
    assert len(base) == 5000 and base[("ns1", "s1")] == 1 and ("ns1", "s1") in base
    assert base.get(("x", "y")) is None and base.get(("x", "y"), 3) == 3
    assert dict(base.items()) == {(f"ns{i % 7}", f"s{i}"): i for i in range(5000)}
    assert sorted(base.values()) == list(range(5000)) and len(base.items()) == 5000
    new = base.evolve({("ns1", "s1"): -1, ("new", "n"): 9}, [("ns2", "s2"), ("absent", "a")])
    assert len(new) == 5000 and new[("ns1", "s1")] == -1 and ("ns2", "s2") not in new
    assert base[("ns1", "s1")] == 1 and ("ns2", "s2") in base  # the old one is unchanged
    shared = sum(a is b for a, b in zip(base._shards, new._shards, strict=True))  # noqa: SLF001
    assert shared >= len(base._shards) - 3  # noqa: SLF001 - only the touched shards copied
    assert new.changed_keys(base) == {("ns1", "s1"), ("new", "n"), ("ns2", "s2")}
    assert base.changed_keys(base) == set()
    expected = dict(base.items())
    expected.update({("ns1", "s1"): -1, ("new", "n"): 9})
    del expected[("ns2", "s2")]
    assert new == expected and new != base and FrozenMap(expected) == new
    with pytest.raises(TypeError):
        hash(new)


# -- Store: what changed ------------------------------------------------------------------

def svc(ns: str, name: str, ip: str) -> Service:
    return Service(ns, name, cluster_ips=(ip,))


def test_take_reports_the_changed_keys_and_keeps_identity_of_equal_objects() -> None:
    store = Store()
    a, b = svc("acme", "a", "10.0.0.1"), svc("acme", "b", "10.0.0.2")
    store.replace_origin("f1.yaml", [a, b, Namespace("acme", (("t", "x"),))], seen_at=5.0,
                         parse_seconds=0.25)
    batch = store.take()
    assert batch.changed == {("Service", "acme", "a"), ("Service", "acme", "b"),
                             ("Namespace", "", "acme")}
    assert batch.seen_at == 5.0 and batch.source_seconds["parse"] == 0.25
    assert store.take().changed == frozenset()  # nothing since
    # Re-read with an equal copy of a and a changed b: only b changed, a keeps its identity.
    store.replace_origin("f1.yaml", [dataclasses.replace(a), svc("acme", "b", "10.0.0.9"),
                                     Namespace("acme", (("t", "x"),))])
    batch = store.take()
    assert batch.changed == {("Service", "acme", "b")}
    assert batch.inventory.services[("acme", "a")] is a
    # One object at a time (the Kubernetes source): an equal object is no change.
    assert store.apply_object("k8s", ("Service", "acme", "c"), svc("acme", "c", "1.1.1.1"))
    assert not store.apply_object("k8s", ("Service", "acme", "c"), svc("acme", "c", "1.1.1.1"))
    assert store.take().changed == {("Service", "acme", "c")}
    assert store.delete_object("k8s", ("Service", "acme", "c"))
    batch = store.take()
    assert batch.changed == {("Service", "acme", "c")}
    assert ("acme", "c") not in batch.inventory.services
    store.remove_origin("f1.yaml")
    batch = store.take()
    assert batch.changed == {("Service", "acme", "a"), ("Service", "acme", "b"),
                             ("Namespace", "", "acme")}
    assert len(batch.inventory.services) == 0


def test_first_origin_wins_and_the_loser_becomes_winner_when_the_first_goes() -> None:
    store = Store()
    store.replace_origin("b.yaml", [svc("acme", "x", "10.0.0.2")])
    store.replace_origin("a.yaml", [svc("acme", "x", "10.0.0.1")])
    batch = store.take()
    assert batch.inventory.services[("acme", "x")].cluster_ips == ("10.0.0.1",)
    (err,) = batch.inventory.errors
    assert err.origin == "b.yaml" and "also defined in a.yaml, which wins" in err.reason
    assert batch.errors_changed
    store.remove_origin("a.yaml")
    batch = store.take()
    assert batch.changed == {("Service", "acme", "x")} and batch.inventory.errors == ()
    assert batch.inventory.services[("acme", "x")].cluster_ips == ("10.0.0.2",)


def _reference(origins: dict[str, list[Any]]) -> Inventory:
    """The store's semantics the simple way (the pre-incremental algorithm)."""
    seen: dict[Key, str] = {}
    objects: list[ModelObject] = []
    errors: list[InputError] = []
    for name in sorted(origins):
        errors.extend(r for r in origins[name] if isinstance(r, InputError))
        valid = {object_key(r): r for r in origins[name] if not isinstance(r, InputError)}
        for key, obj in sorted(valid.items()):
            if key in seen:
                errors.append(InputError(kind=key[0], namespace=key[1], name=key[2], origin=name,
                                         reason=f"also defined in {seen[key]}, which wins"))
                continue
            seen[key] = name
            objects.append(obj)
    return Inventory.of(objects, errors)


def test_store_matches_the_simple_merge_under_random_changes() -> None:
    rng = random.Random(11)
    store = Store()
    origins: dict[str, list[Any]] = {}
    previous = store.inventory()
    for step in range(400):
        origin = rng.choice(["a.yaml", "b.yaml", "c.yaml"])
        what = rng.randrange(5)
        if what == 0:
            store.remove_origin(origin)
            origins.pop(origin, None)
        else:
            objs: list[Any] = []
            for i in rng.sample(range(12), rng.randrange(6)):
                if rng.random() < 0.2:
                    objs.append(Namespace(f"ns{i}", (("t", str(rng.randrange(2))),)))
                elif rng.random() < 0.1:
                    objs.append(DnsPolicy(name=f"p{i}", namespace_selector=LabelSelector()))
                else:
                    objs.append(svc("acme", f"s{i}", f"10.0.0.{rng.randrange(1, 4)}"))
            store.replace_origin(origin, objs)
            origins[origin] = objs
        batch = store.take() if step % 3 else None
        inv = store.inventory() if batch is None else batch.inventory
        ref = _reference(origins)
        for field in ("namespaces", "services", "policies"):
            assert dict(getattr(inv, field)) == dict(getattr(ref, field)), (step, field)
        assert inv.errors == ref.errors, step
        if batch is not None:  # everything that differs from the last take is reported
            differs = {k for k in inv.changed_keys(previous) if previous.get(k) != inv.get(k)}
            assert differs <= set(batch.changed), step
            # (and only keys that changed since: some may have changed back meanwhile)
            previous = inv


# -- Files: one document at a time --------------------------------------------------------

def _whole(text: str) -> list[Any]:
    out = []
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            doc = loader.construct_document(node)
            if doc is not None:
                out.append(parse_object(doc, origin=f"f:{node.start_mark.line + 1}"))
    finally:
        loader.dispose()
    return out


DOCS = [
    "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: acme}\nspec: {clusterIP: "
    "10.0.0.1}\n",
    "# a comment only\n",
    "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: acme\n  labels: {tenant: acme}\n",
    "apiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: acme}\nspec:\n  clusterIP: "
    "10.0.0.2\n  ports:\n  - {name: http, port: 80}\n",
    "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: acme}\nspec: {clusterIP: "
    "nope}\n",
    "apiVersion: v1\nkind: Service\nmetadata: {name: c, namespace: acme}\nspec:\n  note: |\n"
    "    ---- not a document start\n    --- nor this\n  clusterIP: 10.0.0.3\n",
    "kind: Service\n  bad: [unclosed\n",
    "",
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\n",
]


def test_documents_parsed_one_by_one_equal_the_whole_file_parsed_at_once() -> None:
    rng = random.Random(3)
    cache: dict[str, Any] | None = None
    for _ in range(200):
        docs = [rng.choice(DOCS) for _ in range(rng.randrange(1, 8))]
        sep = rng.choice(["---\n", "--- \n", "---\n\n"])
        text = ("---\n" if rng.random() < 0.3 else "") + sep.join(docs)
        results, error, cache = parse_text(text, display="f", cache=cache)
        try:
            whole = _whole(text)
        except yaml.YAMLError as exc:
            mark = exc.problem_mark  # type: ignore[attr-defined]
            assert error is not None and error.origin == f"f:{mark.line + 1}", text
            continue
        assert error is None and results == whole, text


def test_a_yaml_error_in_a_later_document_names_its_line_in_the_file() -> None:
    text = DOCS[0] + "---\n" + DOCS[2] + "---\nkind: Service\n  bad: [unclosed\n"
    results, error, _ = parse_text(text, display="f.yaml")
    assert results == [] and error is not None
    with pytest.raises(yaml.YAMLError) as whole:
        list(yaml.safe_load_all(text))
    mark = whole.value.problem_mark  # type: ignore[attr-defined]
    assert error.origin == f"f.yaml:{mark.line + 1}"


def test_an_invalid_document_that_moves_keeps_the_right_line() -> None:
    _, _, cache = parse_text(DOCS[4], display="f")
    results, _, _ = parse_text(DOCS[0] + "---\n" + DOCS[4], display="f", cache=cache)
    err = next(r for r in results if isinstance(r, InputError))
    assert err.origin == "f:6"  # the cached error, re-placed where it now is
