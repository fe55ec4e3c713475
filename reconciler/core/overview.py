"""One row per trigger, as a person or a program wants to see it: its kind, its state, its last run.

Pure over plain data (the specs and errors the catalog holds, the runs the store keeps, the time),
so that the web page, `/api/v1/triggers` and `status --json` say the same thing from one place, and
`as_json` matches `schema/status.schema.json`. What a state means, and which state wins when
several apply, is decided in `state_of` only: a new state is a member of `State` and a line there.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Collection, Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from reconciler.core import schedule as cron
from reconciler.core.errors import SpecError
from reconciler.core.operations import Pause
from reconciler.core.plan import unknown_server
from reconciler.core.runs import ACCEPTED, Run, RunStatus
from reconciler.core.spec import Spec


class State(StrEnum):
    """Where a trigger stands, in one word a person can filter on."""

    FIRED = "fired"
    """A one-shot whose current revision Jenkins accepted (queued, building or done)."""
    PENDING = "pending"
    """A one-shot whose current revision is not fired yet: about to be decided, or being posted."""
    SCHEDULED = "scheduled"
    """A schedule waiting for its next tick."""
    REFUSED = "refused"
    """Jenkins refused the latest run; it is posted again at its `retry_at`."""
    FAILED = "failed"
    """The current revision's run was given up; bump `run` to fire it again."""
    SUSPENDED = "suspended"
    FROZEN = "frozen"
    """A freeze window of the operator's holds it: a one-shot fires when the window ends."""
    PAUSED = "paused"
    """`reconciler pause` (or `pause_after_failures`): nothing fires until `reconciler resume`."""
    INVALID = "invalid"
    DELETED = "deleted"
    """The spec is gone; its runs stay on record."""


class Kind(StrEnum):
    ONE_SHOT = "one-shot"
    SCHEDULE = "schedule"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a spec, where the file says it (when a position is known)."""

    message: str
    path: str | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.path, self.line, self.column) if p is not None)
        return f"{where}: {self.message}" if where else self.message


@dataclass(frozen=True, slots=True)
class Row:
    """A trigger as the overview shows it."""

    name: str
    state: State
    detail: str
    """Why it is in that state, in a sentence (the error, the next retry, the revision)."""
    kind: Kind | None = None
    """None when the spec is invalid or gone: what it would be is not known."""
    job: str | None = None
    server: str | None = None
    schedule: str | None = None
    timezone: str | None = None
    next_tick: datetime | None = None
    problems: tuple[Problem, ...] = ()
    last: Run | None = None
    recent: tuple[str, ...] = ()
    """Outcomes of the latest runs, oldest first (for the sparkline)."""


def outcome(run: Run) -> str:
    """What a run came to in one word: Jenkins' result once completed, else the run's status."""
    return run.result if run.status is RunStatus.COMPLETED and run.result else str(run.status)


def state_of(spec: Spec | None, problems: Sequence[Problem], last: Run | None,
             fired: Container[tuple[str, str]], freeze: str | None = None,
             pause: Pause | None = None, given_up: Mapping[tuple[str, str], str] | None = None) -> tuple[State, str]:
    """The trigger's state and why. An error outranks everything (nothing fires), then a spec
    that is gone, then suspension, then a pause (who, when, why); a refused run is next because it
    needs a person. A freeze window (`freeze`, what holds it) matters only to what would fire: a
    schedule, or a revision not fired. `given_up`: earlier revisions given up without Jenkins
    accepting them, with why, for a spec reverted to one (the daemon will not post it again)."""
    state, detail = _state_of(spec, problems, last, fired, pause, given_up or {})
    if freeze is not None and state in (State.SCHEDULED, State.PENDING):
        return State.FROZEN, freeze
    return state, detail


def _state_of(spec: Spec | None, problems: Sequence[Problem], last: Run | None,
              fired: Container[tuple[str, str]], pause: Pause | None,
              given_up: Mapping[tuple[str, str], str]) -> tuple[State, str]:
    if problems:
        return State.INVALID, str(problems[0])
    if spec is None:
        return State.DELETED, "the spec was removed; its runs stay on record"
    if spec.suspend:
        return State.SUSPENDED, "suspend: true"
    if pause is not None:
        return State.PAUSED, pause.describe()
    current = last is not None and (spec.schedule is not None or last.fire_key == spec.revision)
    if current and last is not None and last.status is RunStatus.REFUSED:
        retry = _iso(last.retry_at) if last.retry_at else "at the daemon's next turn"
        return State.REFUSED, f"next attempt {retry}: {last.last_error}"
    if spec.schedule is not None:
        return State.SCHEDULED, f"{spec.schedule.expression} ({spec.schedule.timezone})"
    if current and last is not None:
        if last.status in ACCEPTED:
            return State.FIRED, f"revision {spec.revision} fired"
        if last.status is RunStatus.FAILED:
            return State.FAILED, last.last_error or "given up"
        return State.PENDING, f"revision {spec.revision} is being posted"
    if (spec.name, spec.revision) in fired:  # reverted to a revision an earlier run fired
        return State.FIRED, f"revision {spec.revision} fired"
    if (spec.name, spec.revision) in given_up:  # reverted to one an earlier run gave up on
        return State.FAILED, given_up[spec.name, spec.revision]
    return State.PENDING, f"revision {spec.revision} not fired yet"


def overview(specs: Mapping[str, Spec], errors: Mapping[str, SpecError], latest: Mapping[str, Run],
             now: datetime, *, recent: Mapping[str, Sequence[str]] | None = None,
             servers: Collection[str] | None = None, fired: Container[tuple[str, str]] = (),
             refused: Mapping[str, Sequence[Problem]] | None = None,
             frozen: Mapping[str, str] | None = None, paused: Mapping[str, Pause] | None = None,
             given_up: Mapping[tuple[str, str], str] | None = None) -> list[Row]:
    """One row per trigger that has a spec, an error or runs on record, sorted by name.

    `latest` is each trigger's newest run; `recent`, the outcomes of its latest runs, oldest first (for
    the sparkline; without it, the newest run's alone). `servers`, when given, makes a spec naming
    another server invalid, as the daemon judges it. `fired` holds the (trigger, revision) pairs Jenkins
    accepted, for a spec reverted to one of them, and `given_up` those given up without Jenkins
    accepting them, with why (both from service/records.py `revisions`). `refused`: the specs
    the operator's policy refuses, with the offending keys; `frozen`: what holds each trigger a freeze
    window covers; `paused`: the pauses in force, by trigger.
    """
    rows = []
    for name in sorted(set(specs) | set(errors) | set(latest)):
        spec, error, last = specs.get(name), errors.get(name), latest.get(name)
        problems = _problems(error)
        if spec is not None and servers is not None and spec.server not in servers:
            problems = (Problem(unknown_server(spec.server, servers)),)
        if not problems and refused and name in refused:
            problems = tuple(refused[name])
        state, detail = state_of(spec, problems, last, fired, (frozen or {}).get(name),
                                 (paused or {}).get(name), given_up)
        schedule = spec.schedule if spec is not None else None
        outcomes = (recent or {}).get(name) or ((outcome(last),) if last is not None else ())
        rows.append(Row(
            name=name, state=state, detail=detail, problems=problems, last=last, recent=tuple(outcomes),
            kind=None if spec is None or problems else Kind.SCHEDULE if schedule else Kind.ONE_SHOT,
            job=spec.job if spec else last.job if last else None,
            server=spec.server if spec else last.server if last else None,
            schedule=schedule.expression if schedule else None, timezone=schedule.timezone if schedule else None,
            next_tick=cron.next_tick(schedule, now) if schedule and state is State.SCHEDULED else None))
    return rows


def _problems(error: SpecError | None) -> tuple[Problem, ...]:
    if error is None:
        return ()
    return tuple(Problem(p.message, error.path, p.line, p.column) for p in error.problems) or \
        (Problem(str(error), error.path),)


def counts(rows: Sequence[Row]) -> dict[State, int]:
    """How many triggers are in each state, every state listed (zeros too), in `State`'s order."""
    found = {state: 0 for state in State}
    for row in rows:
        found[row.state] += 1
    return found


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def run_json(run: Run) -> dict[str, Any]:
    """A run as `status --json` has always shown it, plus its status and tick."""
    return {"run_id": run.run_id, "status": str(run.status), "result": run.result, "job": run.job,
            "server": run.server, "build_number": run.build_number, "build_url": run.build_url,
            "queue_url": run.queue_url, "decided_at": _iso(run.decided_at), "posted_at": _iso(run.posted_at),
            "finished_at": _iso(run.finished_at), "duration_ms": run.duration_ms, "attempts": run.attempts,
            "last_error": run.last_error, "retry_at": _iso(run.retry_at),
            "parameters": dict(run.parameters) if run.parameters is not None else None, "cause": run.cause,
            "provenance": run.provenance, "scheduled_for": run.fire_key[1:] if run.fire_key.startswith("@") else None}


def as_json(row: Row) -> dict[str, Any]:
    """One trigger as `schema/status.schema.json`'s `trigger` describes it."""
    return {"trigger": row.name, "state": str(row.state), "detail": row.detail,
            "kind": None if row.kind is None else str(row.kind), "job": row.job, "server": row.server,
            "schedule": None if row.schedule is None else {
                "expression": row.schedule, "timezone": row.timezone,
                "next_tick": None if row.next_tick is None else _iso(row.next_tick.timestamp())},
            "errors": [{"message": p.message, "path": p.path, "line": p.line, "column": p.column}
                       for p in row.problems],
            "last_run": None if row.last is None else run_json(row.last), "recent": list(row.recent)}


SPARK_CLASSES = {"SUCCESS": "ok", "UNSTABLE": "warn", "ABORTED": "warn", "NOT_BUILT": "warn",
                 RunStatus.CANCELLED: "warn", RunStatus.SKIPPED: "warn", RunStatus.MISSED: "warn",
                 RunStatus.ABANDONED: "warn", RunStatus.REQUESTED: "open",
                 "FAILURE": "bad", RunStatus.REFUSED: "bad", RunStatus.FAILED: "bad", RunStatus.LOST: "bad",
                 RunStatus.DECIDED: "open", RunStatus.POSTING: "open", RunStatus.QUEUED: "open",
                 RunStatus.BUILDING: "open"}
"""Each outcome's bar colour, as a class the stylesheet paints (an inline style would need the CSP to
allow inline styles)."""
SPARK_BAR, SPARK_GAP, SPARK_HEIGHT = 5, 2, 14


def sparkline(outcomes: Sequence[str]) -> str:
    """An inline SVG of one bar per outcome, oldest on the left, and a label that counts them for screen
    readers. Bars that went wrong are full height, so they stand out in colour or not. One path per
    colour: a thousand rows of twenty bars stay a small page. Its only text, the label, is escaped."""
    width = max(len(outcomes) * (SPARK_BAR + SPARK_GAP) - SPARK_GAP, 1)
    if len(outcomes) > 1:
        label = f"last {len(outcomes)} results: " + ", ".join(f"{n} {w}" for w, n in Counter(outcomes).items())
    else:
        label = f"last result: {outcomes[0]}" if outcomes else "no results yet"
    shapes: dict[str, list[str]] = {}
    for i, word in enumerate(outcomes):
        cls = SPARK_CLASSES.get(word, "other")
        height = SPARK_HEIGHT if cls in ("bad", "warn") else SPARK_HEIGHT * 2 // 3
        shapes.setdefault(cls, []).append(f"M{i * (SPARK_BAR + SPARK_GAP)} {SPARK_HEIGHT - height}"
                                          f"h{SPARK_BAR}v{height}h-{SPARK_BAR}z")
    paths = "".join(f'<path class="{cls}" d="{"".join(bars)}"/>' for cls, bars in shapes.items())
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="spark" role="img" aria-label="{html.escape(label)}" '
            f'width="{width}" height="{SPARK_HEIGHT}" viewBox="0 0 {width} {SPARK_HEIGHT}">{paths}</svg>')
