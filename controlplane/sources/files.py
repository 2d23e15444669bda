"""The file source: every ``*.yaml``/``*.yml`` under a directory, watched for changes.

Each file is one origin of the ``Store``: an edited file replaces what it held,
a deleted file removes it, and a file that is not valid YAML keeps what it held
before and reports one error naming the file and line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from watchfiles import awatch

from controlplane.core.errors import InputError
from controlplane.core.manifests import ParseResult, parse_object
from controlplane.runtime import heap as runtime
from controlplane.store.store import Store

log = logging.getLogger("controlplane.sources.files")

SUFFIXES = (".yaml", ".yml")


# libyaml when PyYAML has it (8x faster on large files); the same documents either way.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Parsed documents of one chunk: (line within the chunk, result).
Parsed = list[tuple[int, ParseResult]]


def _documents(text: str, loader: Any = _LOADER) -> Iterator[tuple[int, Any]]:
    """(first line, document) for each YAML document in ``text``."""
    parser = loader(text)
    try:
        while parser.check_node():
            node = parser.get_node()
            if node is None:
                continue
            yield node.start_mark.line + 1, parser.construct_document(node)
    finally:
        parser.dispose()


def _chunks(text: str) -> list[tuple[int, str]]:
    """``text`` cut at each document-start line (``---`` and then a blank or the end of
    the line): (lines before the chunk, chunk). A chunk after the first is the text
    that follows its ``---`` (the key of the parse cache, as it is: no copy); parse
    ``"---" + chunk``. A file with directives (``%YAML``) stays one chunk: a directive
    belongs to the document after it."""
    if text.startswith("%") or "\n%" in text:  # (a regex here would hold the GIL for long)
        return [(0, text)]
    parts = text.split("\n---")
    out = [(0, parts[0])]
    line = parts[0].count("\n") + 1
    for part in parts[1:]:
        if part[:1] in ("", " ", "\t", "\r", "\n"):
            out.append((line, part))
        else:  # "----" or "---x": not a document start
            out[-1] = (out[-1][0], out[-1][1] + "\n---" + part)
        line += part.count("\n") + 1
    return out


def _yaml_error(exc: yaml.YAMLError, text: str, display: str, offset: int) -> InputError:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 + offset if mark is not None else 0
    where = f"{display}:{line}" if mark is not None else display
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    reason = f"not valid YAML at line {line}, column {mark.column + 1}: " \
        if mark is not None else "not valid YAML: "
    reason += f"{context}, {problem}" if context else str(problem)
    bad = _char_at(text, mark.line + offset, mark.column) if mark is not None else ""
    if bad == "\t":
        reason += " (the character there is a tab: YAML indents with spaces only)"
    elif bad and not bad.isprintable():
        reason += f" (the character there is {bad!r}, U+{ord(bad):04X})"
    elif "*" in text:
        reason += " (a name starting with '*' must be quoted: \"*.example.com\")"
    snippet = _snippet(text, mark.line + offset, mark.column) if mark is not None else ""
    return InputError(kind="File", namespace="", name=display, origin=where, reason=reason,
                      snippet=snippet)


TAB_SHOWN = "\u2192"  # a tab in a snippet: visible, and one column wide like the caret's


def _char_at(text: str, index: int, column: int) -> str:
    lines = text.splitlines()
    return lines[index][column] if 0 <= index < len(lines) and column < len(lines[index]) \
        else ""


def _snippet(text: str, index: int, column: int, *, around: int = 1, width: int = 160) -> str:
    """Lines ``index - around`` to ``index + around`` (0-based) of ``text``, numbered, tabs
    shown as arrows, each cut at ``width``, with a caret under ``column`` of ``index``
    (past the last line: the last lines and "end of file")."""
    lines = text.splitlines()
    if not lines or index < 0:
        return ""
    end = index >= len(lines)
    first = max(0, min(index, len(lines)) - around)
    last = min(len(lines), index + around + 1)
    digits = len(str(last + 1))
    out = []
    for i in range(first, last):
        out.append(f"{i + 1:>{digits}} | {lines[i].replace(chr(9), TAB_SHOWN)[:width]}")
        if i == index:
            out.append(f"{'':>{digits}} | {' ' * min(column, width)}^")
    if end:
        out.append(f"{'':>{digits}} | (end of file)")
    return "\n".join(out)


def parse_text(text: str, *, display: str, cache: Mapping[str, Parsed] | None = None
               ) -> tuple[list[ParseResult], InputError | None, dict[str, Parsed]]:
    """All documents of one file's text, or the error that makes it unreadable.

    The text is cut into documents first; a document whose text is in ``cache`` (the
    file's previous parse) is not parsed again, so editing one Service in a file of
    10,000 parses one document. Returns the results, the error, and the new cache."""
    chunks = _chunks(text)
    cache = cache or {}
    # The first chunk has no "---" of its own: its key never equals a later one's.
    keys = ["%" + chunks[0][1], *(c for _, c in chunks[1:])]
    found = [cache.get(k) for k in keys]
    results: list[ParseResult] = []
    parsed: dict[str, Parsed] = {}
    for i, done in enumerate(found):
        key = keys[i]
        if done is None:
            done = parsed.get(key)
        if done is None:
            offset, chunk = chunks[i]
            done = []
            try:
                for line, doc in _documents(("---" + chunk) if i else chunk):
                    if doc is not None:
                        done.append((line, parse_object(doc, origin=f"{display}:{line + offset}")))
            except yaml.YAMLError as exc:
                return [], _yaml_error(exc, text, display, offset), {}
        parsed[key] = done
        if len(done) == 1 and type(done[0][1]) is not InputError:
            results.append(done[0][1])  # the common case: one valid object
            continue
        for line, result in done:
            if isinstance(result, InputError):  # its origin names the line: it may have moved
                result = replace(result, origin=f"{display}:{line + chunks[i][0]}")
            results.append(result)
    return results, None, parsed


def parse_file(path: Path, *, display: str, cache: Mapping[str, Parsed] | None = None
               ) -> tuple[list[ParseResult], InputError | None]:
    """All documents of one file, or the error that makes the file unreadable."""
    results, unreadable, _ = _parse_path(path, display=display, cache=cache)
    return results, unreadable


def _parse_path(path: Path, *, display: str, cache: Mapping[str, Parsed] | None = None
                ) -> tuple[list[ParseResult], InputError | None, dict[str, Parsed]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], InputError(kind="File", namespace="", name=display, origin=display,
                              reason=f"cannot be read: {exc}"), {}
    return parse_text(text, display=display, cache=cache)


class FileSource:
    """Loads a directory into a ``Store`` and keeps it in sync."""

    def __init__(self, root: Path, store: Store, on_change: Callable[[], None]) -> None:
        self.root = root
        self.store = store
        self.on_change = on_change
        self.healthy = True
        self.problem = ""
        self._parsed: dict[str, dict[str, Parsed]] = {}  # per file: its documents, parsed

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

    def load_file(self, path: Path, *, seen_at: float | None = None) -> None:
        display = self._display(path)
        started = time.perf_counter()
        results, unreadable, parsed = _parse_path(path, display=display,
                                                  cache=self._parsed.get(display))
        parse_seconds = time.perf_counter() - started
        if unreadable is None:
            self._parsed[display] = parsed
        if unreadable is not None:
            log.error("%s", unreadable, extra={"object": unreadable.object_ref})
        for r in results:
            if isinstance(r, InputError):
                log.error("%s", r, extra={"object": r.object_ref})
        for ignored in self.store.replace_origin(display, results, unreadable=unreadable,
                                                 seen_at=seen_at, parse_seconds=parse_seconds):
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
                self._parsed.pop(origin, None)
        for path in files:
            self.load_file(path)
        log.info("loaded %d manifest files from %s", len(files), self.root)

    def sync(self, changed: set[Path], *, seen_at: float | None = None) -> None:
        """Apply a batch of changed paths (added, modified or deleted); ``seen_at``: when
        the watcher reported them (wall time, for the change's latency breakdown)."""
        if not self.root.is_dir():
            self.load_all()
            return
        for path in sorted(changed):
            if path.suffix not in SUFFIXES:
                continue
            if path.is_file():
                self.load_file(path, seen_at=seen_at)
            else:
                display = self._display(path)
                self.store.remove_origin(display, seen_at=seen_at)
                self._parsed.pop(display, None)
                log.info("%s removed", display)
        self.on_change()

    def _sync_quietly(self, changed: set[Path], seen_at: float) -> None:
        with runtime.quiet():
            self.sync(changed, seen_at=seen_at)

    async def watch(self, stop: asyncio.Event) -> None:
        """Follow changes until ``stop`` is set. watchfiles debounces bursts."""
        while not stop.is_set():
            watch_dir = self.root if self.root.is_dir() else self.root.parent
            if not watch_dir.is_dir():
                # Nothing to watch yet: look again every second until it appears.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                continue
            # watchfiles hands a batch over once ``step`` ms pass without a new event (at
            # most ``debounce`` ms after the first): 5 ms, not its default 50, because the
            # debouncer (runtime/debounce.py) coalesces bursts anyway; a change is seen in
            # 5-10 ms.
            async for batch in awatch(watch_dir, stop_event=stop, debounce=50, step=5,
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
                # Parsing a large file takes time: not on the event loop (the store is
                # thread-safe and on_change pokes the loop thread-safely), and without a
                # full garbage collection midway (runtime.py).
                await asyncio.to_thread(self._sync_quietly, changed, time.time())
