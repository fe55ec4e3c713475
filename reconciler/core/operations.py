"""Operating triggers without a commit: requested runs, pauses, backfills, pausing after failures. Pure.

What an operator asks (`reconciler trigger`, `pause`, `resume`, `backfill`) is recorded in the state
store as plain data; the daemon and `run --once` act on it. Here is what that data means: the run a
request makes, which ticks a backfill fires, whether a pause holds a trigger, and when a run of failures
pauses one. `--by` is declared by whoever runs the command, never authenticated: the OS user is recorded
beside it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from reconciler.core import schedule as cron
from reconciler.core.errors import ReconcilerError
from reconciler.core.runs import OPEN, Run, RunStatus, cause_text, new_run, run_id_of
from reconciler.core.spec import Spec

MAX_NOTE = 500
"""The longest note: it travels in Jenkins' cause text and in every history line of the request."""
BACKFILL_MAX = 1000
"""`backfill --max`'s default: more ticks than this in one range is more likely a typo than a plan."""
ENDED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.LOST, RunStatus.CANCELLED})
"""Runs that went to Jenkins, or were given up, and are over: those that count towards (or break) a
run of failures. Missed and skipped ticks never ran; refused runs are posted again; abandoned ones
were never asked for by a spec."""


class OperationError(ReconcilerError):
    """An operator's request that cannot be carried out as given; the message says what to change."""


@dataclass(frozen=True, slots=True)
class Request:
    """Who asked for a run, and why (the audit trail of `trigger` and `backfill`)."""

    run_id: str
    request_id: str
    trigger: str
    kind: str
    """`trigger` or `backfill`."""
    note: str | None
    by: str
    """Declared with `--by` (default: $USER): not authenticated."""
    os_user: str
    """The account the command ran as, recorded beside `by`."""
    at: float
    override_freeze: bool = False
    """Recorded intent: honoured only as asked on the command line, never when read back from history."""


@dataclass(frozen=True, slots=True)
class Pause:
    """A trigger held back: nothing of it fires until it is resumed (or `until` passes)."""

    trigger: str
    by: str
    os_user: str
    note: str | None
    since: float
    until: float | None = None
    reason: str | None = None
    """Set when the reconciler paused it itself: `after N failures`."""
    resumed_at: float | None = None
    """When the pause was lifted; a lifted pause is kept, so that failures before it no longer count."""

    def holds(self, now: float) -> bool:
        return self.resumed_at is None and (self.until is None or now < self.until)

    def expired(self, now: float) -> bool:
        """Lifted by its own `--until`, but not yet recorded as resumed."""
        return self.resumed_at is None and self.until is not None and now >= self.until

    def describe(self) -> str:
        """`paused by alice (os user bob) since … until …: incident`, or `after 2 failures`."""
        who = self.by if self.by == self.os_user else f"{self.by} (os user {self.os_user})"
        text = f"paused {self.reason} " if self.reason else "paused "
        text += f"by {who} since {iso(self.since)}"
        if self.until is not None:
            text += f" until {iso(self.until)}"
        return text + (f": {self.note}" if self.note else "")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def holding(pauses: Iterable[Pause], now: float) -> dict[str, Pause]:
    """The pauses in force at `now`, by trigger."""
    return {p.trigger: p for p in pauses if p.holds(now)}


def check_note(note: str | None) -> str | None:
    if note is None:
        return None
    if len(note) > MAX_NOTE:
        raise OperationError(f"the note is {len(note)} characters long; at most {MAX_NOTE} travel with a run")
    if any(ord(c) < 32 for c in note):
        raise OperationError("the note has a control character (a newline?): write it on one line")
    return note


def request_id(key: str | None, fresh: str) -> str:
    """A request's id: from `--key`, so that a retried call is the same run; else `fresh` (random)."""
    if key is None:
        return fresh
    return "k" + hashlib.sha256(key.encode()).hexdigest()[:15]


def _who(request: Request) -> str:
    return f"{request.by}" + (f": {request.note}" if request.note else "")


def requested_run(spec: Spec, request: Request) -> Run:
    """`reconciler trigger`: one run of `spec` now, keyed by the request, whatever its revision or tick.
    A schedule's `scheduled_time_parameter` receives the time of the request."""
    fire_key = "!" + request.request_id
    run_id = run_id_of(spec.name, fire_key)
    base = new_run(spec, request.at, datetime.fromtimestamp(int(request.at), UTC) if spec.schedule else None)
    text = cause_text(replace(spec, schedule=None), run_id)  # no "(scheduled for …)": it is not a tick
    cause = text.replace(" [reconciler run", f" — requested by {_who(request)} [reconciler run", 1)
    return replace(base, run_id=run_id, fire_key=fire_key, cause=cause, status=RunStatus.REQUESTED,
                   parameters=_retagged(base, run_id))


def backfill_key(tick: datetime) -> str:
    return "+" + cron.tick_key(tick)


def backfill_run(spec: Spec, tick: datetime, request: Request) -> Run:
    """`reconciler backfill`: the run of one past tick, keyed by the tick, with the tick's parameters."""
    fire_key = backfill_key(tick)
    run_id = run_id_of(spec.name, fire_key)
    base = new_run(spec, request.at, tick)
    cause = base.cause.replace(" [reconciler run", f" — backfill by {_who(request)} [reconciler run", 1) \
        .replace(base.run_id, run_id)
    return replace(base, run_id=run_id, fire_key=fire_key, cause=cause, status=RunStatus.REQUESTED,
                   parameters=_retagged(base, run_id))


def _retagged(base: Run, run_id: str) -> tuple[tuple[str, str], ...] | None:
    """The parameters with the run id parameter (if any) carrying the new run id."""
    if base.parameters is None or base.tag_param is None:
        return base.parameters
    return tuple((name, run_id if name == base.tag_param else value) for name, value in base.parameters)


@dataclass(frozen=True, slots=True)
class BackfillTick:
    tick: datetime
    fire: bool
    why: str
    """Why it fires (`no run yet`, `only missed`) or not (`run X completed`)."""


def backfill_ticks(spec: Spec, start: datetime, end: datetime, now: datetime,
                   recorded: Mapping[str, RunStatus]) -> list[BackfillTick]:
    """Each tick of `spec`'s schedule in [start, end), up to `now` (later ticks are the schedule's own),
    and whether a backfill fires it: only if it has no run. `recorded` holds the status of each run on
    record by fire key (the tick's own `@…` key and the backfill's `+@…`); a tick recorded only as
    `missed` or `skipped` never ran."""
    if spec.schedule is None:
        raise OperationError(f"{spec.name} is a one-shot trigger (no `schedule:`): it has no ticks to backfill; "
                             f"`reconciler trigger {spec.name}` runs it once more")
    if end <= start:
        raise OperationError(f"--from {start.isoformat()} is not before --to {end.isoformat()}")
    found = []
    for tick in cron.ticks(spec.schedule, start - _SECOND):
        if tick >= end or tick > now:
            break
        own, filled = recorded.get(cron.tick_key(tick)), recorded.get(backfill_key(tick))
        if filled is not None:
            found.append(BackfillTick(tick, False, f"backfilled already ({filled})"))
        elif own is not None and own not in (RunStatus.MISSED, RunStatus.SKIPPED):
            found.append(BackfillTick(tick, False, f"fired by the schedule ({own})"))
        else:
            found.append(BackfillTick(tick, True, f"recorded only as {own}" if own else "no run yet"))
    return found


def backfill_keys(spec: Spec, start: datetime, end: datetime, now: datetime) -> list[str]:
    """The fire keys whose status `backfill_ticks` needs (read from the store in one query)."""
    assert spec.schedule is not None
    keys = []
    for tick in cron.ticks(spec.schedule, start - _SECOND):
        if tick >= end or tick > now:
            break
        keys += [cron.tick_key(tick), backfill_key(tick)]
    return keys


_SECOND = datetime.fromtimestamp(1, UTC) - datetime.fromtimestamp(0, UTC)


def failure_streak(runs: Sequence[Run], since: float | None = None) -> int:
    """How many of the newest ended runs (newest first in `runs`) ended other than SUCCESS in a row,
    counting only runs decided after `since` (when the trigger was last resumed)."""
    streak = 0
    for run in runs:
        if since is not None and run.decided_at <= since:
            break
        if run.status not in ENDED:
            if run.status is RunStatus.ADOPTED:
                break
            continue
        if run.status is RunStatus.COMPLETED and run.result == "SUCCESS":
            break
        streak += 1
    return streak


def take_up(requested: Sequence[Run], paused: Mapping[str, Pause], open_runs: Iterable[Run],
            one_at_a_time: Mapping[str, bool], now: float) -> list[Run]:
    """Which requested runs (oldest first) may be decided now: none of a paused trigger; of a trigger
    whose spec allows one run at a time (`concurrency: forbid` or `replace`), the oldest, and only while
    none of its runs is open (waiting, in order, never skipping)."""
    busy = {run.trigger for run in open_runs if run.status in OPEN}
    chosen: list[Run] = []
    for run in sorted(requested, key=lambda r: (r.decided_at, r.fire_key)):
        pause = paused.get(run.trigger)
        if pause is not None and pause.holds(now):
            continue
        if one_at_a_time.get(run.trigger, False):
            if run.trigger in busy:
                continue
            busy.add(run.trigger)
        chosen.append(run)
    return chosen
