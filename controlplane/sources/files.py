"""The file source: every ``*.yaml``/``*.yml`` under a directory, watched for changes.

Each file is one origin of the ``Store``: an edited file replaces what it held,
a deleted file removes it, and a file that is not valid YAML keeps what it held
before and reports one error naming the file and line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from watchfiles import awatch

from controlplane.errors import InputError
from controlplane.inventory import Store
from controlplane.manifests import ParseResult, parse_object

log = logging.getLogger("controlplane.sources.files")

SUFFIXES = (".yaml", ".yml")


def _documents(text: str) -> Iterator[tuple[int, Any]]:
    """(first line, document) for each YAML document in ``text``."""
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            yield node.start_mark.line + 1, loader.construct_document(node)
    finally:
        loader.dispose()


def parse_file(path: Path, *, display: str) -> tuple[list[ParseResult], InputError | None]:
    """All documents of one file, or the error that makes the file unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], InputError(kind="File", namespace="", name=display, origin=display,
                              reason=f"cannot be read: {exc}")
    results: list[ParseResult] = []
    try:
        for line, doc in _documents(text):
            if doc is None:
                continue
            results.append(parse_object(doc, origin=f"{display}:{line}"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{display}:{mark.line + 1}" if mark is not None else display
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        reason = f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: " \
            if mark is not None else "not valid YAML: "
        reason += f"{context}, {problem}" if context else str(problem)
        if "*" in text:
            reason += " (a name starting with '*' must be quoted: \"*.example.com\")"
        return [], InputError(kind="File", namespace="", name=display, origin=where,
                              reason=reason)
    return results, None


class FileSource:
    """Loads a directory into a ``Store`` and keeps it in sync."""

    def __init__(self, root: Path, store: Store, on_change: Callable[[], None]) -> None:
        self.root = root
        self.store = store
        self.on_change = on_change
        self.healthy = True
        self.problem = ""

    def _files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.rglob("*") if p.suffix in SUFFIXES and p.is_file()
                      and not any(part.startswith(".") for part in p.relative_to(self.root).parts))

    def _display(self, path: Path) -> str:
        """How a file is named in errors: relative to the source's parent directory."""
        try:
            return str(path.relative_to(self.root.parent))
        except ValueError:
            return str(path)

    def load_file(self, path: Path) -> None:
        display = self._display(path)
        results, unreadable = parse_file(path, display=display)
        if unreadable is not None:
            log.error("%s", unreadable, extra={"object": unreadable.object_ref})
        for r in results:
            if isinstance(r, InputError):
                log.error("%s", r, extra={"object": r.object_ref})
        for ignored in self.store.replace_origin(display, results, unreadable=unreadable):
            log.info("%s: ignoring %s %s (kind not used)", display, ignored.api_version,
                     ignored.kind)

    def load_all(self) -> None:
        if not self.root.is_dir():
            self.healthy = False
            self.problem = f"source directory {self.root} does not exist"
            log.error("%s; the last configuration keeps serving", self.problem)
            return
        self.healthy, self.problem = True, ""
        files = self._files()
        present = {self._display(p) for p in files}
        for origin in self.store.origins():
            if origin not in present:
                self.store.remove_origin(origin)
        for path in files:
            self.load_file(path)
        log.info("loaded %d manifest files from %s", len(files), self.root)

    def sync(self, changed: set[Path]) -> None:
        """Apply a batch of changed paths (added, modified or deleted)."""
        if not self.root.is_dir():
            self.load_all()
            return
        for path in sorted(changed):
            if path.suffix not in SUFFIXES:
                continue
            if path.is_file():
                self.load_file(path)
            else:
                self.store.remove_origin(self._display(path))
                log.info("%s removed", self._display(path))
        self.on_change()

    async def watch(self, stop: asyncio.Event) -> None:
        """Follow changes until ``stop`` is set. watchfiles debounces bursts."""
        while not stop.is_set():
            watch_dir = self.root if self.root.is_dir() else self.root.parent
            if not watch_dir.is_dir():
                # Nothing to watch yet: look again every second until it appears.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                continue
            async for batch in awatch(watch_dir, stop_event=stop, debounce=50, step=20,
                                      recursive=True):
                changed = {Path(p) for _, p in batch}
                if watch_dir != self.root:
                    self.load_all()
                    self.on_change()
                    break  # the directory came (back): watch it directly
                if not self.root.exists():
                    self.load_all()
                    self.on_change()
                    break
                self.sync(changed)
