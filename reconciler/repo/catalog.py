"""The trigger files under a directory, re-read when their size, mtime or inode moves, and parsed
again only when their bytes did too."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from reconciler.core.errors import Problem, SpecError
from reconciler.core.spec import CONFIG_FILES, SPEC_SUFFIXES, Spec, parse, trigger_name

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


Progress = Callable[[Changes], None]
"""Called during a long scan with what it found so far (those entries are not in the changes it
returns), so a caller can act on ordinary specs without waiting for the slowest file, and show it lives."""
PROGRESS_EVERY = 0.25
"""Seconds between calls of a scan's `progress`."""


class _Early:
    """Hands what a scan found so far to its `progress`, every PROGRESS_EVERY seconds."""

    def __init__(self, progress: Progress | None, changes: Changes):
        self.progress, self.changes = progress, changes
        self.last = time.monotonic()

    def turn(self) -> None:
        if self.progress is None or time.monotonic() - self.last < PROGRESS_EVERY:
            return
        batch, self.changes.changed = self.changes.changed, []
        self.progress(Changes(changed=batch))
        self.last = time.monotonic()


CONFIG_IN_TREE = ("server configuration does not belong in the triggers repository: anyone who can commit here "
                  "could send requests and credentials elsewhere. Give it to the reconciler with --config (or "
                  "RECONCILER_CONFIG) from outside this directory, and delete this file")
LINKED_FOLDER = ("a symlink to a folder, not followed: each spec in it would be a second trigger; move or copy "
                 "the specs instead")


@dataclass(frozen=True, slots=True)
class _Found:
    """One path of the walk: a file to read as a spec, or a path refused with the reason."""

    rel: str
    stamp: Stamp
    source: str | None = None
    """Where the spec's bytes are read from: the file itself, or the target of a link within the tree."""
    refused: str | None = None


def _judge(root: str, real_root: str, rel: str, st: os.stat_result) -> _Found | None:
    """What one directory entry is (by its lstat): a spec to read, a refused path, or nothing of ours.
    The tree is written by anyone who can commit, so nothing in it is followed out of it: a link is read
    only when it leads to a plain file inside the tree that is not a trigger of its own."""
    full = os.path.join(root, rel)
    if rel in CONFIG_FILES:
        return _Found(rel, _stamp(st), refused=CONFIG_IN_TREE)
    if stat.S_ISLNK(st.st_mode):
        target = os.path.realpath(full)
        try:
            target_st = os.stat(target)
        except OSError:
            return _Found(rel, _stamp(st), refused="a symlink to nothing") if rel.endswith(SPEC_SUFFIXES) else None
        if stat.S_ISDIR(target_st.st_mode):
            return _Found(rel, _stamp(st), refused=LINKED_FOLDER)
        if not rel.endswith(SPEC_SUFFIXES):
            return None
        if not target.startswith(real_root + os.sep):
            return _Found(rel, _stamp(st), refused="a symlink that leads out of the triggers directory: not read")
        target_rel = os.path.relpath(target, real_root).replace(os.sep, "/")
        if trigger_name(target_rel) is not None:
            return _Found(rel, _stamp(st), refused=f"a symlink to {target_rel}, which is a trigger of its own: "
                                                   "one file, one trigger")
        if not stat.S_ISREG(target_st.st_mode):
            return _Found(rel, _stamp(st), refused="a symlink to something that is not a regular file")
        return _Found(rel, _stamp(target_st), source=target)
    if stat.S_ISDIR(st.st_mode) or not rel.endswith(SPEC_SUFFIXES):
        return None
    if not stat.S_ISREG(st.st_mode):
        return _Found(rel, _stamp(st), refused="not a regular file (a pipe, socket or device): not read")
    return _Found(rel, _stamp(st), source=full)


class Catalog:
    def __init__(self, root: Path):
        self.root = root
        self.entries: dict[str, Entry] = {}
        self._specs: dict[str, Spec] | None = None
        self.rejected: dict[str, Entry] = {}
        """Paths that cannot be triggers: a second file for a trigger another file defines, a name that is
        not UTF-8, a link or folder not followed, the config file. Counted among the errors, and reported
        once per change."""

    @classmethod
    def scanned(cls, root: Path) -> Catalog:
        """A catalog of `root` as it is now: what the commands that only read it need."""
        catalog = cls(root)
        catalog.scan()
        return catalog

    def scan(self, progress: Progress | None = None) -> Changes:
        """Walk the whole directory; only files whose stamp moved are read and parsed again. With
        `progress`, the smallest files first: ordinary specs are found before a heavy one is read."""
        seen: dict[str, _Found] = {}
        rejected: dict[str, tuple[str, str, Stamp]] = {}
        for found in sorted(self._walk(), key=lambda f: f.rel):
            rel = found.rel
            name = trigger_name(rel) or rel
            shown = _printable(rel)
            if shown != rel:  # a trigger is named by its path, in git, logs and Jenkins causes: text
                rejected[shown] = (_printable(name), NOT_TEXT_NAME, found.stamp)
            elif found.refused is not None:
                rejected[rel] = (name, found.refused, found.stamp)
            elif name in seen:  # `a.yaml` beside `a.yml`: the first in sort order wins, loudly
                rejected[rel] = (name, _defined_by(name, seen[name].rel), found.stamp)
            else:
                seen[name] = found
        changes = Changes()
        self.rejected = {rel: self._reject(rel, *why, changes) for rel, why in rejected.items()}
        early = _Early(progress, changes)
        order: Iterable[tuple[str, _Found]] = seen.items() if progress is None else \
            sorted(seen.items(), key=lambda item: item[1].stamp[1])
        for name, found in order:
            old = self.entries.get(name)
            if old is None or old.stamp != found.stamp or old.path != found.rel:
                self._reread(name, found, changes)
                early.turn()
        for name in list(self.entries):
            if name not in seen:
                self._drop(name)
                changes.removed.append(name)
        return changes

    def refresh(self, paths: list[str], progress: Progress | None = None) -> Changes:
        """Re-read just the files a watcher named; anything else (a directory moved, a link) means a full scan."""
        root = os.path.abspath(self.root)
        real_root = os.path.realpath(self.root)  # watchers may report paths under a symlink's target
        targets: list[tuple[str, str]] = []
        for path in map(os.path.abspath, paths):
            if path in (root, real_root):
                return self.scan(progress)  # the directory itself changed (a git-sync swap)
            base = real_root if path.startswith(real_root + os.sep) else root
            rel = os.path.relpath(path, base).replace(os.sep, "/")
            if rel.startswith("../") or any(part.startswith(".") for part in rel.split("/")):
                continue
            if _printable(rel) != rel or rel in CONFIG_FILES:
                return self.scan(progress)  # a name that is not UTF-8, the config file: the scan reports them
            name = trigger_name(rel)
            if name is None and not rel.endswith(SPEC_SUFFIXES):
                return self.scan(progress)  # a directory appeared, vanished or moved
            folder = os.path.dirname(rel)
            if folder and os.path.realpath(os.path.join(root, folder)) != os.path.join(real_root, folder):
                return self.scan(progress)  # a path through a linked folder: never a trigger of its own
            old = self.entries.get(name) if name else None
            if (old is not None and old.path != rel) or rel in self.rejected:
                return self.scan(progress)  # `a.yml` beside `a.yaml`, or a refused path: let the scan sort it out
            if name is not None:
                targets.append((name, rel))
        changes = Changes()
        early = _Early(progress, changes)
        for name, rel in dict.fromkeys(targets):
            old = self.entries.get(name)
            try:
                st = os.lstat(os.path.join(root, rel))
            except FileNotFoundError:
                if old is not None:
                    self._drop(name)
                    changes.removed.append(name)
                continue
            found = _judge(root, real_root, rel, st)
            if found is None or found.refused is not None or found.source != os.path.join(root, rel):
                return self.scan(progress)  # a link, a pipe, a folder: the scan judges it with the rest
            if old is None or old.stamp != found.stamp:
                self._reread(name, found, changes)
                early.turn()
        return changes

    def _walk(self) -> list[_Found]:
        """Every path of ours under the root, links not followed; a folder that cannot be read is refused
        on its own and the walk goes on."""
        out: list[_Found] = []
        root = os.fspath(self.root)
        real_root = os.path.realpath(root)
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            try:
                it = os.scandir(os.path.join(root, rel_dir) if rel_dir else root)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as e:  # unreadable (EACCES), or gone strange (ELOOP): that folder only
                out.append(_Found(rel_dir, (0, 0, 0), refused=f"cannot read this folder: {e.strerror}"))
                continue
            with it:
                for de in it:
                    if de.name.startswith("."):
                        continue
                    rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
                    try:
                        st = de.stat(follow_symlinks=False)
                        if de.is_dir(follow_symlinks=False):
                            stack.append(rel)
                            continue
                        found = _judge(root, real_root, rel, st)
                    except FileNotFoundError:  # removed between readdir and stat
                        continue
                    if found is not None:
                        out.append(found)
        return out

    def _reject(self, rel: str, name: str, why: str, stamp: Stamp, changes: Changes) -> Entry:
        entry = Entry(name, rel, stamp, error=SpecError(rel, [Problem(1, 1, why)]))
        old = self.rejected.get(rel)
        if old is None or (old.stamp, str(old.error)) != (stamp, str(entry.error)):
            changes.changed.append(entry)
        return entry

    def _reread(self, name: str, found: _Found, changes: Changes) -> None:
        """Read a file whose stamp moved; parse and report it only if its bytes moved too. A git-sync
        swap re-creates every file of the tree (new inodes, new mtimes), mostly with the same bytes:
        parsing them all again would delay the one changed spec by the whole tree's parse."""
        old = self.entries.get(name)
        rel, stamp = found.rel, found.stamp
        try:
            raw = _read(found.source or os.path.join(self.root, rel), rel)
        except SpecError as e:
            entry = Entry(name, rel, stamp, error=judged(e))
        else:
            digest = hashlib.blake2b(raw, digest_size=16).digest()
            if old is not None and old.digest == digest and old.path == rel:
                self.entries[name] = replace(old, stamp=stamp)  # the same spec: the cached dict holds
                return
            try:
                entry = Entry(name, rel, stamp, spec=_parse(raw, name, rel), digest=digest)
            except SpecError as e:
                entry = Entry(name, rel, stamp, error=judged(e), digest=digest)
        self._set(name, entry)
        changes.changed.append(entry)

    def _set(self, name: str, entry: Entry) -> None:
        self.entries[name] = entry
        self._specs = None

    def _drop(self, name: str) -> None:
        del self.entries[name]
        self._specs = None

    @property
    def specs(self) -> dict[str, Spec]:
        """The valid specs by trigger: built once per change of the catalog, not per call (a tick of
        thousands of schedules asks for it once per due trigger). Read it, never change it."""
        if self._specs is None:
            self._specs = {n: e.spec for n, e in self.entries.items() if e.spec is not None}
        return self._specs

    @property
    def errors(self) -> dict[str, SpecError]:
        """By trigger, and by path for the files that cannot be triggers."""
        errors = {n: e.error for n, e in self.entries.items() if e.error is not None}
        errors.update((rel, e.error) for rel, e in self.rejected.items() if e.error is not None)
        return errors


def judged(error: SpecError) -> SpecError:
    """An error as kept for as long as its file exists: its positions and text only. The traceback it
    was raised with holds the frames that read the file, and with them the text and what was built."""
    error.__traceback__ = error.__context__ = error.__cause__ = None
    return error


def folders(root: str) -> list[str]:
    """The real folders of the tree, `root` first, as the walk sees them: hidden ones and links left out.
    A watcher is given these one by one, never the tree: a recursive watch follows links (`ln -s /`
    would have it walk the whole filesystem) where the walk does not."""
    out = [os.path.realpath(root)]
    i = 0
    while i < len(out):
        try:
            with os.scandir(out[i]) as it:
                out += [de.path for de in it if not de.name.startswith(".") and de.is_dir(follow_symlinks=False)]
        except OSError:  # unreadable or gone: the scan reports it
            pass
        i += 1
    return out


def check_file(path: str, triggers: str | None = None) -> Spec | SpecError:
    """One spec file judged as a scan of its folder judges it, for `validate FILE` (pre-commit passes
    the files a commit touched): its name, a link, a sibling that defines its trigger first, its bytes.
    `triggers` is the triggers directory, if the file lies in it: links are judged against it."""
    shown = _printable(path)
    if shown != path:
        return SpecError(shown, [Problem(1, 1, NOT_TEXT_NAME)])
    folder, file = os.path.split(path)
    root = triggers if triggers is not None and _within(path, triggers) else folder or "."
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root)).replace(os.sep, "/")
    try:
        found = _judge(root, os.path.realpath(root), rel, os.lstat(path))
    except OSError as e:
        return SpecError(path, [Problem(1, 1, f"cannot read: {e.strerror}")])
    if found is not None and found.refused is not None:
        return SpecError(path, [Problem(1, 1, found.refused)])
    name = trigger_name(file) or os.path.splitext(file)[0]
    for first in (name + suffix for suffix in SPEC_SUFFIXES):
        if first < file and os.path.isfile(os.path.join(folder, first)):
            return SpecError(path, [Problem(1, 1, _defined_by(name, first))])
    try:
        return _parse(_read(found.source if found and found.source else path, path), name, path)
    except SpecError as e:
        return judged(e)


def _within(path: str, folder: str) -> bool:
    return os.path.abspath(path).startswith(os.path.abspath(folder) + os.sep)


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
    """A whole file in four system calls (`open(path, "rb")` makes nine, once per spec in a pass).
    Non-blocking, not through a link swapped in since the walk judged the path, and no more than
    MAX_SPEC_BYTES of it: nothing a committer puts in the tree can stall or fill the pass."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
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
