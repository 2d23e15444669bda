"""Random and mutated manifests through the file source, the store and the hub.

The process never crashes, a file is applied whole or not at all, and every
rejection names its object.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controlplane.core.errors import InputError
from controlplane.core.settings import Settings
from controlplane.hub.hub import Hub
from controlplane.sources.files import FileSource
from controlplane.store.store import Store
from controlplane.translate import translate_view

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SEED_DOCS = [d for p in sorted(EXAMPLES.glob("*.yaml"))
             for d in yaml.safe_load_all(p.read_text()) if d]

junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=12),
              st.sampled_from(["*", "*.x.com", "foo.*.com", "10.0.0.300", "::1", "ALLOW",
                               "DENY", "", "None", "a" * 70])),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.text(max_size=8), children, max_size=3)),
    max_leaves=6)


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from(SEED_DOCS)))
    for _ in range(draw(st.integers(0, 3))):
        node: Any = doc
        path = []
        while isinstance(node, dict) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node, key=str)))
            path.append(key)
            if not isinstance(node[key], dict):
                break
            node = node[key]
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node, key=str)))
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                node[key] = draw(junk)
            elif action == "delete":
                del node[key]
            else:
                node[draw(st.text(min_size=1, max_size=6))] = draw(junk)
    return doc


documents = st.lists(st.one_of(mutated(), junk), min_size=1, max_size=4)


def _apply(root: Path, text: str, store: Store) -> None:
    (root / "f.yaml").write_text(text)
    FileSource(root, store, lambda: None).load_all()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=documents, broken=st.booleans(), cut=st.integers(0, 400))
# Found once by this test: an empty kind made an error that named no kind.
@example(docs=[{"apiVersion": "", "kind": "", "metadata": {"namespace": "acme"},
                "spec": {"hosts": ["httpbin.acme.com"]}}], broken=False, cut=0)
def test_random_manifests_never_crash_or_half_apply(docs: list[Any], broken: bool,
                                                    cut: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = Store()
        good = yaml.safe_dump_all(SEED_DOCS[:6])
        _apply(root, good, store)
        before = store.inventory()
        text = yaml.safe_dump_all(docs, allow_unicode=True)
        if broken:
            text = text[:cut] + "\n  : [unclosed\n"
        _apply(root, text, store)
        inv = store.inventory()
        hub = Hub(Settings())
        hub.set_inventory(inv)  # must not raise
        for view in hub.tenant_views.values():
            translate_view(view, host="127.0.0.1", port=15053)
        file_errors = [e for e in inv.errors if e.kind == "File"]
        if file_errors:
            # Unreadable file: everything it held before stays, nothing new is applied.
            assert (inv.services, inv.policies, inv.namespaces, inv.service_entries) == (
                before.services, before.policies, before.namespaces, before.service_entries)
            assert file_errors[0].origin.startswith(f"{root.name}/f.yaml")
        for e in inv.errors:
            assert isinstance(e, InputError)
            assert e.kind and e.origin and e.reason
            # Named objects are named; an unnamed document is pinned by file and line.
            assert e.name or (e.origin.rsplit(":", 1)[-1].isdigit()), e
