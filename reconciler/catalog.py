"""The trigger files under a directory, re-read when their size, mtime or inode moves, and parsed
again only when their bytes did too."""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import Problem, SpecError
from .spec import SPEC_SUFFIXES, Spec, parse, trigger_name

MAX_SPEC_BYTES = 256 * 1024
"""More than any trigger spec takes (a few hundred bytes): a big file committed by mistake, or a link
to /dev/zero, is refused after this much, not read and parsed into memory."""

NOT_TEXT_NAME = "the file name is not UTF-8 text: rename the file"

Stamp = tuple[int, int, int]
"""A file's mtime, size and inode: when it moves, the file is read again."""


def _stamp(st: os.stat_result) -> Stamp:
    return st.st_mtime_ns, st.st_size, st.st_ino


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    path: str
    """Relative to the triggers directory, as users see it in errors."""
    stamp: Stamp
    spec: Spec | None = None
    error: SpecError | None = None
    digest: bytes | None = None
    """Of the bytes the spec (or error) came from; None when they could not be read."""


@dataclass
class Changes:
    """What one scan found different from the previous one."""

    changed: list[Entry] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changed or self.removed)


class Catalog:
    def __init__(self, root: Path):
        self.root = root
        self.entries: dict[str, Entry] = {}
        self.rejected: dict[str, Entry] = {}
        """Files that cannot be triggers, by path: a second file for a trigger another file defines, or a
        name that is not UTF-8. Counted among the errors, and reported once per change."""

    def scan(self) -> Changes:
        """Walk the whole directory; only files whose stamp moved are read and parsed again."""
        seen: dict[str, tuple[str, Stamp]] = {}
        rejected: dict[str, tuple[str, str, Stamp]] = {}
        for rel, stamp in sorted(self._walk(), key=lambda item: item[0]):
            name = trigger_name(rel)
            if name is None:
                continue
            shown = _printable(rel)
            if shown != rel:  # a trigger is named by its path, in git, logs and Jenkins causes: text
                rejected[shown] = (_printable(name), NOT_TEXT_NAME, stamp)
            elif name in seen:  # `a.yaml` beside `a.yml`: the first in sort order wins, loudly
                rejected[rel] = (name, _defined_by(name, seen[name][0]), stamp)
            else:
                seen[name] = (rel, stamp)
        changes = Changes()
        self.rejected = {rel: self._reject(rel, *why, changes) for rel, why in rejected.items()}
        for name, (rel, stamp) in seen.items():
            old = self.entries.get(name)
            if old is None or old.stamp != stamp or old.path != rel:
                self._reread(name, rel, stamp, changes)
        for name in list(self.entries):
            if name not in seen:
                del self.entries[name]
                changes.removed.append(name)
        return changes

    def refresh(self, paths: list[str]) -> Changes:
        """Re-read just the files a watcher named; anything else (a directory moved) means a full scan."""
        root = os.path.abspath(self.root)
        real_root = os.path.realpath(self.root)  # watchers may report paths under a symlink's target
        targets: list[tuple[str, str]] = []
        for path in map(os.path.abspath, paths):
            if path in (root, real_root):
                return self.scan()  # the directory itself changed (a git-sync swap)
            base = real_root if path.startswith(real_root + os.sep) else root
            rel = os.path.relpath(path, base).replace(os.sep, "/")
            if rel.startswith("../") or any(part.startswith(".") for part in rel.split("/")):
                continue
            if _printable(rel) != rel:
                return self.scan()  # a name that is not UTF-8: the scan reports it
            name = trigger_name(rel)
            if name is None and not rel.endswith(SPEC_SUFFIXES):
                return self.scan()  # a directory appeared, vanished or moved
            old = self.entries.get(name) if name else None
            if old is not None and old.path != rel:
                return self.scan()  # `a.yml` beside `a.yaml`: let the scan sort it out
            if name is not None:
                targets.append((name, rel))
        changes = Changes()
        for name, rel in dict.fromkeys(targets):
            old = self.entries.get(name)
            try:
                st = os.stat(os.path.join(root, rel))
            except FileNotFoundError:
                if old is not None:
                    del self.entries[name]
                    changes.removed.append(name)
                continue
            stamp = _stamp(st)
            if old is None or old.stamp != stamp:
                self._reread(name, rel, stamp, changes)
        return changes

    def _walk(self) -> list[tuple[str, Stamp]]:
        out: list[tuple[str, Stamp]] = []
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            try:
                it = os.scandir(os.path.join(self.root, rel_dir) if rel_dir else self.root)
            except (FileNotFoundError, NotADirectoryError):
                continue
            with it:
                for de in it:
                    if de.name.startswith("."):
                        continue
                    rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
                    try:
                        if de.is_dir():
                            stack.append(rel)
                        elif de.name.endswith(SPEC_SUFFIXES):
                            out.append((rel, _stamp(de.stat())))
                    except FileNotFoundError:  # removed between readdir and stat
                        continue
        return out

    def _reject(self, rel: str, name: str, why: str, stamp: Stamp, changes: Changes) -> Entry:
        entry = Entry(name, rel, stamp, error=SpecError(rel, [Problem(1, 1, why)]))
        old = self.rejected.get(rel)
        if old is None or (old.stamp, str(old.error)) != (stamp, str(entry.error)):
            changes.changed.append(entry)
        return entry

    def _reread(self, name: str, rel: str, stamp: Stamp, changes: Changes) -> None:
        """Read a file whose stamp moved; parse and report it only if its bytes moved too. A git-sync
        swap re-creates every file of the tree (new inodes, new mtimes), mostly with the same bytes:
        10,000 of them parsed again were a second of CPU before the one changed spec could fire."""
        old = self.entries.get(name)
        try:
            raw = _read(os.path.join(self.root, rel), rel)
        except SpecError as e:
            entry = Entry(name, rel, stamp, error=e)
        else:
            digest = hashlib.blake2b(raw, digest_size=16).digest()
            if old is not None and old.digest == digest and old.path == rel:
                self.entries[name] = replace(old, stamp=stamp)
                return
            try:
                entry = Entry(name, rel, stamp, spec=_parse(raw, name, rel), digest=digest)
            except SpecError as e:
                entry = Entry(name, rel, stamp, error=e, digest=digest)
        self.entries[name] = entry
        changes.changed.append(entry)

    @property
    def specs(self) -> dict[str, Spec]:
        return {n: e.spec for n, e in self.entries.items() if e.spec is not None}

    @property
    def errors(self) -> dict[str, SpecError]:
        """By trigger, and by path for the files that cannot be triggers."""
        errors = {n: e.error for n, e in self.entries.items() if e.error is not None}
        errors.update((rel, e.error) for rel, e in self.rejected.items() if e.error is not None)
        return errors


def check_file(path: str) -> SpecError | None:
    """One spec file judged as a scan of its folder judges it, for `validate FILE` (pre-commit passes
    the files a commit touched): its name, a sibling that defines its trigger first, its bytes."""
    shown = _printable(path)
    if shown != path:
        return SpecError(shown, [Problem(1, 1, NOT_TEXT_NAME)])
    folder, file = os.path.split(path)
    name = trigger_name(file) or os.path.splitext(file)[0]
    for first in (name + suffix for suffix in SPEC_SUFFIXES):
        if first < file and os.path.isfile(os.path.join(folder, first)):
            return SpecError(path, [Problem(1, 1, _defined_by(name, first))])
    try:
        _parse(_read(path, path), name, path)
    except SpecError as e:
        return e
    return None


def _defined_by(name: str, first: str) -> str:
    return f"trigger {name!r} is already defined by {first}"


def _printable(rel: str) -> str:
    """A path as text. Bytes of a name that are not UTF-8 come from the OS as lone surrogates, which
    no UTF-8 stream (a log, SQLite, a terminal) takes; here they read `\\xff`."""
    try:
        rel.encode()
    except UnicodeEncodeError:
        return rel.encode(errors="surrogateescape").decode(errors="backslashreplace")
    return rel


def _read(path: str, shown: str) -> bytes:
    """A whole file in four system calls; `open(path, "rb")` makes nine (a tty check, seeks, stats),
    once per spec in a pass. Not pathlib either: it interns every name it sees. Non-blocking, so that
    a named pipe cannot stall the pass; and no more than MAX_SPEC_BYTES of it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            chunks = []
            size = 0
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_SPEC_BYTES:
                    raise OSError(errno.EFBIG, f"larger than {MAX_SPEC_BYTES // 1024} KiB, where a trigger spec "
                                               "takes a few hundred bytes")
            return b"".join(chunks)
        finally:
            os.close(fd)
    except OSError as e:
        raise SpecError(shown, [Problem(1, 1, f"cannot read: {e.strerror}")]) from None


def _parse(raw: bytes, name: str, shown: str) -> Spec:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(shown, [Problem(1, 1, f"not UTF-8 text: {e.reason}")]) from None
    return parse(text, name=name, path=shown)
