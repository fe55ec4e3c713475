"""The history: append-only JSON Lines, one file per trigger, meant to be committed beside the specs.

Each event is one `write()` of one whole line to a file opened with O_APPEND, so a killed process
leaves whole lines; a torn last line (power loss) is skipped by readers and closed off by the next
writer, so it never breaks the lines after it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.core.runs import EVENT_STATUS, FINISHED, Run
from reconciler.logs import redact

if TYPE_CHECKING:
    from reconciler.repo.writeback import Writeback

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

    def path_of(self, trigger: str) -> Path:
        assert self.root is not None
        return self.root / f"{trigger}.jsonl"

    def append(self, run: Run, event: str, at: float, **fields: Any) -> None:
        if self._dir is None:
            return
        record = {"at": iso(at), "event": event, "trigger": run.trigger, "run_id": run.run_id,
                  "fire_key": run.fire_key, **{k: v for k, v in fields.items() if v is not None}}
        if run.fire_key.startswith("@"):  # every line of a tick says which tick
            record["scheduled_for"] = run.fire_key[1:]
        line = redact(json.dumps(record, sort_keys=True, ensure_ascii=False)) + "\n"
        path = os.path.join(self._dir, f"{run.trigger}.jsonl")
        with self._lock:
            try:
                fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            except FileNotFoundError:  # a trigger's first line: its folders are made once, not checked each time
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = "\n" + line  # close off a torn line rather than glue onto it
                os.write(fd, line.encode("utf-8"))
            finally:
                os.close(fd)
            if self.writeback is not None:
                self.writeback.written(at)

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
            return list(_lines(self.path_of(trigger)))

    def triggers(self) -> list[str]:
        if self.root is None or not self.root.is_dir():
            return []
        return sorted(str(p.relative_to(self.root))[: -len(".jsonl")] for p in self.root.rglob("*.jsonl"))

    def runs(self) -> Iterator[Run]:
        """Every run the history knows, as the state store would hold it."""
        for trigger in self.triggers():
            runs: dict[str, Run] = {}
            for ev in _lines(self.path_of(trigger)):
                run_id, event = ev.get("run_id"), ev.get("event")
                if not isinstance(run_id, str) or event not in EVENT_STATUS:
                    continue
                at = _parse_iso(ev.get("at"))
                if event in ("decided", "adopted", "missed", "skipped") and run_id not in runs:
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


def _parse_iso(value: Any) -> float:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.endswith("\n"):
                    return  # torn by a crash mid-write
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    yield record
    except FileNotFoundError:
        return
