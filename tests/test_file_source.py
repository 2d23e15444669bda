"""The file source and the store: nothing good is lost on bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controlplane.sources.files import FileSource, parse_text
from controlplane.store.store import Store

NS = "apiVersion: v1\nkind: Namespace\nmetadata: {name: acme, labels: {tenant: acme}}\n"
SVC = ("apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: acme}\n"
       "spec: {clusterIP: %s}\n")
POLICY = ("apiVersion: networking.example.com/v1alpha1\nkind: DnsPolicy\nmetadata: {name: acme}\n"
          "spec:\n  namespaceSelector: {matchLabels: {tenant: acme}}\n"
          "  policy: {defaultAction: %s}\n")


def load(root: Path) -> tuple[Store, FileSource]:
    store = Store()
    source = FileSource(root, store, lambda: None)
    source.load_all()
    return store, source


def test_multi_document_files_and_subdirectories(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(NS + "---\n" + SVC % "10.0.0.1")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "p.yml").write_text(POLICY % "DENY")
    (tmp_path / "notes.txt").write_text("not a manifest")
    (tmp_path / ".hidden.yaml").write_text("::: not yaml")
    store, _ = load(tmp_path)
    inv = store.inventory()
    assert set(inv.namespaces) == {"acme"}
    assert inv.services[("acme", "web")].cluster_ips == ("10.0.0.1",)
    assert set(inv.policies) == {"acme"}
    assert inv.errors == ()


def test_broken_yaml_keeps_what_the_file_held(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text(NS + "---\n" + SVC % "10.0.0.1")
    (tmp_path / "other.yaml").write_text(POLICY % "DENY")
    store, source = load(tmp_path)
    f.write_text(NS + "---\n" + SVC % "10.0.0.2" + "  bad: [unclosed\n")
    source.sync({f})
    inv = store.inventory()
    assert inv.services[("acme", "web")].cluster_ips == ("10.0.0.1",)  # last good
    assert set(inv.policies) == {"acme"}  # other file untouched
    (err,) = inv.errors
    assert err.kind == "File" and err.origin.startswith(f"{tmp_path.name}/a.yaml:")
    # Fixing the file clears the error and applies the new content.
    f.write_text(NS + "---\n" + SVC % "10.0.0.3")
    source.sync({f})
    inv = store.inventory()
    assert inv.errors == () and inv.services[("acme", "web")].cluster_ips == ("10.0.0.3",)


def test_invalid_object_keeps_last_valid_version(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(POLICY % "DENY")
    store, source = load(tmp_path)
    f.write_text(POLICY % "BLOCK")
    source.sync({f})
    inv = store.inventory()
    assert inv.policies["acme"].default_action.value == "DENY"
    (err,) = inv.errors
    assert err.object_ref == "DnsPolicy acme"
    assert "BLOCK" in err.reason and "last valid version stays in force" in err.reason
    assert err.origin == f"{tmp_path.name}/p.yaml:1"


def test_new_invalid_object_is_just_an_error(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICY % "BLOCK")
    store, _ = load(tmp_path)
    inv = store.inventory()
    assert inv.policies == {}
    assert "last valid" not in inv.errors[0].reason


def test_deleted_file_removes_its_objects(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text(SVC % "10.0.0.1")
    store, source = load(tmp_path)
    f.unlink()
    source.sync({f})
    assert store.inventory().services == {}


def test_duplicate_object_first_file_wins(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(SVC % "10.0.0.1")
    (tmp_path / "b.yaml").write_text(SVC % "10.0.0.2")
    store, _ = load(tmp_path)
    inv = store.inventory()
    assert inv.services[("acme", "web")].cluster_ips == ("10.0.0.1",)
    (err,) = inv.errors
    assert "also defined in" in err.reason and err.origin.endswith("b.yaml")


def test_missing_directory_is_unhealthy_and_keeps_objects(tmp_path: Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    (root / "a.yaml").write_text(SVC % "10.0.0.1")
    store, source = load(root)
    (root / "a.yaml").unlink()
    root.rmdir()
    source.load_all()
    assert not source.healthy and "does not exist" in source.problem
    assert ("acme", "web") in store.inventory().services


def test_watch_applies_edits(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text(SVC % "10.0.0.1")
    store = Store()
    changed = asyncio.Event()

    async def scenario() -> tuple[str, ...]:
        source = FileSource(tmp_path, store, changed.set)
        source.load_all()
        stop = asyncio.Event()
        task = asyncio.create_task(source.watch(stop))
        # The watcher registers asynchronously: rewrite until a change is seen.
        for _ in range(40):
            f.write_text(SVC % "10.0.0.9")
            try:
                await asyncio.wait_for(changed.wait(), timeout=0.25)
                break
            except TimeoutError:
                continue
        assert changed.is_set()
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        return store.inventory().services[("acme", "web")].cluster_ips

    assert asyncio.run(scenario()) == ("10.0.0.9",)


@pytest.mark.parametrize(("text", "line", "snippet", "names"), [
    # a tab where YAML wants spaces: the reason says it is a tab; the snippet shows it
    ("kind: Service\nmetadata:\n\tname: x\n", 3,
     "2 | metadata:\n3 | \u2192name: x\n  | ^", "the character there is a tab"),
    # in the second document: the line counts from the file's start
    ("a: 1\n---\nkind: Service\nmetadata:\n  name: x\n\tfoo: 1\n", 6,
     "5 |   name: x\n6 | \u2192foo: 1\n  | ^", "the character there is a tab"),
    # the fault past the last line: the last lines and "end of file"
    ("kind: Service\nmetadata: {name: x\n  bad\n", 4,
     "3 |   bad\n  | (end of file)", "not valid YAML at line 4"),
])
def test_a_broken_file_names_its_line_and_shows_it(text: str, line: int, snippet: str,
                                                   names: str) -> None:
    _, error, _ = parse_text(text, display="bad.yaml")
    assert error is not None
    assert error.origin == f"bad.yaml:{line}"
    assert names in error.reason
    assert error.snippet == snippet
    assert error.as_dict()["snippet"] == snippet
