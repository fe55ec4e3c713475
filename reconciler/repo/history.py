"""The history: append-only JSON Lines, one file per trigger, meant to be committed beside the specs.

Each event is one `write()` of one whole line to a file opened with O_APPEND, so a killed process
leaves whole lines; a torn last line (power loss) is skipped by readers and closed off by the next
writer, so it never breaks the lines after it. A thread keeps the file it appended to last open for
its next line (a run's `decided` and `queued` lines come from one worker): before each append the
path is looked up again, and a file that is no longer the one held (removed, replaced by git) is
opened anew, so a line never goes to a file no one can read.

History comes back from a git branch anyone with push access can write, so it is evidence, never an
instruction: every line read back is checked (JSON, an object, known event, the types and sizes of
its fields, the trigger of its file) and a bad one is reported with file and line number and
skipped. Whether a run rebuilt from it is carried on is the daemon's call (`Daemon.bootstrap`).

A trigger's file is its name with `.jsonl`, each segment encoded so that no two names share a path,
no folder is named like a history file (`team.jsonl/deploy` must not need a folder where `team`'s
file is), and no segment exceeds the file system's name limit: `%` is written `%25`; a folder whose
name ends in `.jsonl` has that dot written `%2E`; a segment longer than NAME_MAX bytes keeps its
start and ends in `%~` and a hash of the whole (such a file's trigger is read from its lines).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.core.runs import EVENT_STATUS, FINISHED, Run
from reconciler.logs import redact

if TYPE_CHECKING:
    from reconciler.repo.writeback import Writeback

SUFFIX = ".jsonl"
NAME_MAX = 255
"""Bytes in one file name on every file system a history lives on (ext4, xfs, btrfs, overlayfs)."""
MAX_LINE = 1 << 20
"""A history line longer than this is not one we wrote (a spec is at most 256 KiB): skipped unread."""
MAX_PROBLEMS = 20
"""Bad lines reported per file; the rest are counted."""
_HASHED = "%~"
_TEXT = 1 << 18
"""The longest text field a line may carry (a cause or reason of a 256 KiB spec)."""
_SHORT = 4096


def _segment(segment: str, leaf: bool) -> str:
    encoded = segment.replace("%", "%25")
    if not leaf and encoded.endswith(SUFFIX):
        encoded = encoded[: -len(SUFFIX)] + "%2Ejsonl"
    room = NAME_MAX - (len(SUFFIX) if leaf else 0)
    raw = encoded.encode("utf-8", "surrogateescape")
    if len(raw) <= room:
        return encoded
    digest = hashlib.sha256(segment.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    start = raw[: room - len(_HASHED) - len(digest)].decode("utf-8", "ignore")
    return re.sub(r"%[0-9A-F]?$", "", start) + _HASHED + digest


@functools.lru_cache(maxsize=1024)
def relative_path(trigger: str) -> str:
    """Where a trigger's history lives under the history directory (see the module's docstring). The
    triggers of recent lines are remembered: a run's lines come close together, a burst's by hundreds."""
    *folders, leaf = trigger.split("/")
    return "/".join([*(_segment(f, False) for f in folders), _segment(leaf, True)]) + SUFFIX


def _trigger_of(relative: str) -> str | None:
    """The trigger a history file's path names, or None for a hashed one (its lines say)."""
    if _HASHED in relative:
        return None
    return re.sub(r"%(25|2E)", lambda m: "%" if m.group(1) == "25" else ".", relative[: -len(SUFFIX)])

class _Held:
    """The history file a thread appended to last, still open, which file it is (device, inode), and
    where this thread's last line ended: a file still that long ends with that line's newline."""

    __slots__ = ("end", "fd", "identity", "path")

    def __init__(self, path: str, fd: int, st: os.stat_result):
        self.path, self.fd, self.identity, self.end = path, fd, (st.st_dev, st.st_ino), -1

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:  # the thread ended, or the History went away
        self.close()


def _open_append(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except FileNotFoundError:  # a trigger's first line: its folders are made once, not checked each time
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class History:
    def __init__(self, root: Path | None, writeback: Writeback | None = None):
        self.root = root
        self._dir = None if root is None else os.fspath(root)
        """As a string: an appended line is joined to it on every event, and pathlib's joins cost more."""
        self.writeback = writeback
        self._lock: contextlib.AbstractContextManager[Any] = \
            writeback.lock if writeback is not None else contextlib.nullcontext()
        """With write-back, git's steps that touch the files and the appends take turns."""

        self.problems: list[str] = []
        """Lines read back that were not valid history: `file:line: why`, for the reader to report."""
        self._held = threading.local()
        """Each thread's `_Held` file, if any."""

    def path_of(self, trigger: str) -> Path:
        assert self.root is not None
        return self.root / relative_path(trigger)

    def append(self, run: Run, event: str, at: float, **fields: Any) -> None:
        record = {"run_id": run.run_id, "fire_key": run.fire_key, **fields}
        if run.fire_key.lstrip("+").startswith("@"):  # every line of a tick (or a backfilled one) says which tick
            record["scheduled_for"] = run.fire_key.lstrip("+")[1:]
        self.record(run.trigger, event, at, **record)

    def record(self, trigger: str, event: str, at: float, **fields: Any) -> None:
        """One line in a trigger's history: a step of a run, or an operator's act (a pause, a resume)."""
        if self._dir is None:
            return
        record = {"at": iso(at), "event": event, "trigger": trigger,
                  **{k: v for k, v in fields.items() if v is not None}}
        line = redact(json.dumps(record, sort_keys=True, ensure_ascii=False)) + "\n"
        path = os.path.join(self._dir, relative_path(trigger))
        with self._lock:
            held, size = self._file(path)
            try:
                if size and size != held.end and os.pread(held.fd, 1, size - 1) != b"\n":
                    line = "\n" + line  # close off a torn line rather than glue onto it
                data = line.encode("utf-8")
                written = os.write(held.fd, data)
                held.end = size + written if written == len(data) else -1  # a short write (a full disk) ends torn
            except BaseException:
                self._held.file = None
                held.close()
                raise
            if self.writeback is not None:
                self.writeback.written(at)

    def _file(self, path: str) -> tuple[_Held, int]:
        """The file at `path` open for appending, and its size: this thread's held one while the path
        still names it (one `stat`), else the path opened anew."""
        held: _Held | None = getattr(self._held, "file", None)
        if held is not None and held.path == path:
            with contextlib.suppress(OSError):
                st = os.stat(path)
                if (st.st_dev, st.st_ino) == held.identity:
                    return held, st.st_size
        self._held.file = None
        if held is not None:
            held.close()
        fd = _open_append(path)
        try:
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        self._held.file = _Held(path, fd, st)
        return self._held.file, st.st_size

    def decided(self, run: Run, at: float, event: str = "decided") -> None:
        """The first line of a run carries all it takes to rebuild the run from history."""
        self.append(run, event, at, server=run.server, job=run.job,
                    parameters=None if run.parameters is None else dict(run.parameters),
                    cause=run.cause, tag_param=run.tag_param, reason=run.last_error, provenance=run.provenance,
                    next_build=run.next_build)

    def has(self, run: Run) -> bool:
        """Whether the run's first line is written (read back only when resuming a run)."""
        return self.root is None or any(e.get("run_id") == run.run_id for e in self.read(run.trigger))

    def read(self, trigger: str) -> list[dict[str, Any]]:
        if self.root is None:
            return []
        with self._lock:  # not while a rebase rewrites the file
            return list(self._lines(trigger))

    def triggers(self) -> list[str]:
        if self.root is None or not self.root.is_dir():
            return []
        names = set()
        for path in self.root.rglob(f"*{SUFFIX}"):
            if not path.is_file():
                continue
            relative = path.relative_to(self.root).as_posix()
            name = _trigger_of(relative)
            if name is None:  # hashed: the first valid line names it, if it is really that trigger's file
                name = next((str(ev["trigger"]) for ev in _lines(path, None, [])), None)
                if name is None or relative_path(name) != relative:
                    continue
            names.add(name)
        return sorted(names)

    def _lines(self, trigger: str) -> Iterator[dict[str, Any]]:
        return _lines(self.path_of(trigger), trigger, self.problems)

    def runs(self) -> Iterator[Run]:
        """Every run the history knows, as the state store would hold it."""
        for trigger in self.triggers():
            runs: dict[str, Run] = {}
            for ev in self._lines(trigger):
                if ev["event"] in OPERATOR_EVENTS:
                    continue
                run_id, event = ev["run_id"], ev["event"]
                at = _parse_iso(ev.get("at"))
                if event in ("decided", "adopted", "missed", "skipped", "requested") and run_id not in runs:
                    params = ev.get("parameters")
                    runs[run_id] = Run(
                        run_id=run_id, trigger=trigger, fire_key=str(ev.get("fire_key")),
                        server=str(ev.get("server", "default")), job=str(ev.get("job", "")),
                        parameters=None if params is None else tuple((str(k), str(v)) for k, v in params.items()),
                        cause=ev.get("cause"), tag_param=ev.get("tag_param"),
                        status=EVENT_STATUS[event], decided_at=at, last_error=ev.get("reason"),
                        provenance=ev.get("provenance") if isinstance(ev.get("provenance"), dict) else None,
                        next_build=ev.get("next_build") if isinstance(ev.get("next_build"), int) else None)
                    continue
                run = runs.get(run_id)
                if run is None:
                    continue
                status = EVENT_STATUS[event]
                runs[run_id] = replace(
                    run, status=status, queue_url=ev.get("queue_url", run.queue_url),
                    build_number=ev.get("number", run.build_number), build_url=ev.get("url", run.build_url),
                    result=ev.get("result", run.result), duration_ms=ev.get("duration_ms", run.duration_ms),
                    last_error=ev.get("reason", run.last_error),
                    posted_at=at if event == "queued" else run.posted_at,
                    finished_at=at if status in FINISHED else run.finished_at)
            yield from runs.values()

    def pauses(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Each trigger whose history ends paused, with its `paused` line (read back into a fresh store:
        such a line may only hold a trigger back)."""
        for trigger in self.triggers():
            last = None
            for ev in self._lines(trigger):
                if ev["event"] in OPERATOR_EVENTS:
                    last = ev
            if last is not None and last.get("event") == "paused":
                yield trigger, last


def _parse_iso(value: Any) -> float:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


_STR, _INT = (str,), (int,)
_FIELDS: dict[str, tuple[tuple[type, ...], int]] = {
    "at": (_STR, 64), "event": (_STR, 32), "trigger": (_STR, _SHORT * 4), "run_id": (_STR, 128),
    "fire_key": (_STR, 256), "scheduled_for": (_STR, 64), "server": (_STR, _SHORT), "job": (_STR, _SHORT * 4),
    "cause": (_STR, _TEXT), "tag_param": (_STR, _SHORT), "reason": (_STR, _TEXT), "queue_url": (_STR, _SHORT * 4),
    "url": (_STR, _SHORT * 4), "result": (_STR, 64), "retry_at": (_STR, 64), "number": (_INT, 0),
    "duration_ms": (_INT, 0), "status": (_INT, 0), "parameters": ((dict,), 0), "provenance": ((dict,), 0),
    "ran_with": ((dict,), 0), "changed": ((dict,), 0), "causes": ((list,), 0), "ignored": ((list,), 0),
}
"""Each field a line may carry: its type and, for text, its longest length. Unknown fields (a newer
version's) are kept if they are flat: no line we write nests deeper than a mapping of values."""
_SCALAR = (str, int, float, bool, type(None))
_FIRE_KEY = re.compile(r"[\w.+-]{1,64}|!\w{1,64}|\+?@\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):"
                       r"[0-5]\d:[0-5]\dZ")
"""A one-shot's revision, a tick as `@2026-05-10T06:00:00Z`, or an operator's request: `!` and its id
(`reconciler trigger`), `+` and a tick (`reconciler backfill`)."""
OPERATOR_EVENTS = ("paused", "resumed")
"""Lines of an operator's act on a trigger, not of a run: no run id, no fire key."""


def problem(record: Any, trigger: str | None) -> str | None:
    """Why a parsed line is not a history line we could have written, or None."""
    if not isinstance(record, dict):
        return f"not a JSON object but {type(record).__name__}"
    operator = record.get("event") in OPERATOR_EVENTS
    for key in ("event", "trigger") if operator else ("event", "run_id", "trigger", "fire_key"):
        if not isinstance(record.get(key), str) or not record[key]:
            return f"no {key}" if key not in record else f"{key} is not text"
    if record["event"] not in EVENT_STATUS and not operator:
        return f"unknown event {record['event'][:40]!r}"
    if not operator and not _FIRE_KEY.fullmatch(record["fire_key"]):
        return "fire_key is neither a revision nor a tick"
    if trigger is not None and record["trigger"] != trigger:
        return "a line of another trigger"
    for key, value in record.items():
        kinds, longest = _FIELDS.get(key, (_SCALAR, _TEXT))
        if value is None:
            continue
        if not isinstance(value, kinds) or (kinds == _INT and isinstance(value, bool)):
            return f"{key[:40]!r} is {type(value).__name__}, not {' or '.join(k.__name__ for k in kinds)}"
        if isinstance(value, str) and longest and len(value) > longest:
            return f"{key!r} is longer than {longest} characters"
        if isinstance(value, dict):
            if len(value) > 10_000 or not all(isinstance(k, str) and isinstance(v, _SCALAR) and
                                              (not isinstance(v, str) or len(v) <= _TEXT) for k, v in value.items()):
                return f"{key!r} is not a flat mapping of names to values"
        elif isinstance(value, list) and (len(value) > 10_000 or not all(isinstance(v, str) for v in value)):
            return f"{key!r} is not a list of text"
    return None


def _lines(path: Path, trigger: str | None, problems: list[str]) -> Iterator[dict[str, Any]]:
    """The valid lines of a history file; each bad one is reported in `problems` (`file:line: why`)
    and skipped. A line is read at most MAX_LINE bytes at a time, and parsed only if it fits."""
    bad = 0

    def report(number: int, why: str) -> None:
        nonlocal bad
        bad += 1
        if bad <= MAX_PROBLEMS and len(problems) < 1000:
            problems.append(f"{path}:{number}: {why}; line skipped")

    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    with f:
        number = 0
        while raw := f.readline(MAX_LINE + 1):
            number += 1
            if not raw.endswith(b"\n"):
                if len(raw) <= MAX_LINE:
                    break  # torn by a crash mid-write: the end of what is readable
                while (rest := f.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                    pass
                report(number, f"longer than {MAX_LINE} bytes")
                continue
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8", "replace"))
            except RecursionError:
                report(number, "nested too deep")
                continue
            except ValueError:
                report(number, "not JSON")
                continue
            why = problem(record, trigger)
            if why is not None:
                report(number, why)
                continue
            yield record
    if bad > MAX_PROBLEMS:
        problems.append(f"{path}: {bad - MAX_PROBLEMS} more bad line(s) skipped")
