"""A run's life: what it is, the states it passes through, and which step may follow which.

A run is one decision to fire a trigger (one revision of a one-shot, one tick of a schedule). Its
id follows from what it fires, so that any process, however little it remembers, derives the same
one. Every change of a run's status goes through `advance`, which refuses a step the table below
does not allow: the one place to read, and to extend, when a new state arrives.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from reconciler.core import schedule as cron
from reconciler.core.errors import ReconcilerError
from reconciler.core.spec import Spec


class RunStatus(StrEnum):
    DECIDED = "decided"
    """Recorded, not posted: nothing has been sent."""
    POSTING = "posting"
    """A POST may have reached Jenkins: look the run up before posting again."""
    QUEUED = "queued"
    BUILDING = "building"
    COMPLETED = "completed"
    """Jenkins says the build is over; `result` says how it went."""
    REFUSED = "refused"
    """Jenkins answered no; posted again at `retry_at` if its spec still asks for it."""
    FAILED = "failed"
    """Given up: superseded by a change of its spec, or a step that cannot succeed."""
    CANCELLED = "cancelled"
    LOST = "lost"
    """Jenkins accepted it but no longer knows it (the queue item and build vanished)."""
    UNKNOWN = "unknown"
    """It may or may not have been built: a POST may have arrived, and nothing Jenkins keeps tells (no tag).
    Not posted again; `last_error` says why."""
    ADOPTED = "adopted"
    """Taken as fired without a POST (`reconciler adopt`)."""
    MISSED = "missed"
    SKIPPED = "skipped"
    ABANDONED = "abandoned"
    """Rebuilt from history but asked for by no current spec: recorded, never posted (history is
    evidence of what ran, never an instruction to run something)."""
    REQUESTED = "requested"
    """Asked for by an operator (`reconciler trigger`, `backfill`), not yet taken up: it waits while its
    trigger is paused, or while a run of a `concurrency: forbid` trigger is open."""


S = RunStatus

TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    S.DECIDED: frozenset({S.DECIDED, S.POSTING, S.QUEUED, S.BUILDING, S.COMPLETED, S.REFUSED, S.FAILED, S.CANCELLED,
                          S.LOST, S.ABANDONED}),
    S.POSTING: frozenset({S.DECIDED, S.POSTING, S.QUEUED, S.BUILDING, S.COMPLETED, S.REFUSED, S.FAILED,
                          S.CANCELLED, S.LOST, S.UNKNOWN, S.ABANDONED}),
    S.QUEUED: frozenset({S.DECIDED, S.QUEUED, S.BUILDING, S.COMPLETED, S.FAILED, S.CANCELLED, S.LOST, S.ABANDONED}),
    S.BUILDING: frozenset({S.BUILDING, S.COMPLETED, S.FAILED, S.CANCELLED, S.LOST, S.ABANDONED}),
    S.REFUSED: frozenset({S.DECIDED, S.POSTING, S.REFUSED, S.FAILED, S.CANCELLED}),
    S.COMPLETED: frozenset(), S.FAILED: frozenset(), S.CANCELLED: frozenset(), S.LOST: frozenset(),
    S.UNKNOWN: frozenset(), S.ADOPTED: frozenset(), S.MISSED: frozenset(), S.SKIPPED: frozenset(),
    S.ABANDONED: frozenset({S.DECIDED}),  # decided afresh when a current spec asks for what it was
    S.REQUESTED: frozenset({S.DECIDED, S.FAILED, S.ABANDONED}),
}
"""Which status may follow which. A status may follow itself where a step only adds to what is known
(a second look at a queued item, another attempt). A `decided` run may be found already queued,
building or done: a lookup before its POST (a fresh store, a takeover) finds what an earlier process
posted. A refused run due again becomes `posting` where it can be looked up: it is looked up before
its next POST. Adding a state is one line here."""

OPEN = frozenset({S.DECIDED, S.POSTING, S.QUEUED, S.BUILDING})
"""A run in one of these still has work to do: post it, or follow it. A `refused` run waits for its
`retry_at`."""
UNPOSTED = frozenset({S.DECIDED, S.POSTING})
"""Open runs Jenkins has not (surely) accepted."""
FINISHED = frozenset(status for status, after in TRANSITIONS.items() if not after)
"""Nothing follows these."""
ACCEPTED = frozenset({S.QUEUED, S.BUILDING, S.COMPLETED, S.CANCELLED, S.LOST, S.UNKNOWN, S.ADOPTED})
"""Runs Jenkins accepted (or an operator said it did, or may have: `unknown`): the ones that count as fired."""

EVENT_STATUS = {"decided": S.POSTING, "queued": S.QUEUED, "started": S.BUILDING, "completed": S.COMPLETED,
                "failed": S.FAILED, "cancelled": S.CANCELLED, "lost": S.LOST, "unknown": S.UNKNOWN,
                "adopted": S.ADOPTED,
                "missed": S.MISSED, "skipped": S.SKIPPED, "refused": S.REFUSED, "abandoned": S.ABANDONED,
                "requested": S.REQUESTED}
"""A history event, and the status it leaves its run in. A run whose history stops at `decided` may
have been posted: it is resolved like a crash while posting."""


REQUESTED_KEYS = ("!", "+")
"""Fire keys of runs an operator asked for: `!` and a request id (`reconciler trigger`), `+` and a tick's
key (`reconciler backfill`). Neither is a revision or a schedule's own tick."""


class IllegalTransition(ReconcilerError):
    """A step the run lifecycle does not allow: a bug, never an input problem."""


@dataclass(frozen=True, slots=True)
class Provenance:
    """The commit behind a spec: who asked for a fire."""

    sha: str
    author: str
    email: str
    date: str
    subject: str

    @property
    def short(self) -> str:
        return f"{self.sha[:7]} by {self.author} <{self.email}>"

    def as_dict(self) -> dict[str, str]:
        return {"sha": self.sha, "author": self.author, "email": self.email, "date": self.date,
                "subject": self.subject}


@dataclass(frozen=True, slots=True)
class Run:
    run_id: str
    trigger: str
    fire_key: str
    """The revision of a one-shot, or `@` and the tick of a schedule."""
    server: str
    job: str
    parameters: tuple[tuple[str, str], ...] | None
    cause: str | None
    tag_param: str | None
    status: RunStatus
    decided_at: float
    posted_at: float | None = None
    queue_url: str | None = None
    build_number: int | None = None
    build_url: str | None = None
    result: str | None = None
    duration_ms: int | None = None
    finished_at: float | None = None
    attempts: int = 0
    """Tries at getting it into Jenkins: each POST, and each lookup before one that Jenkins refused."""
    last_error: str | None = None
    retry_at: float | None = None
    """For a run Jenkins refused (status `refused`): when to post it again."""
    provenance: dict[str, str] | None = None
    """The commit behind the spec it fired (sha, author, email, date, subject), where git knows it."""
    next_build: int | None = None
    """The job's `nextBuildNumber`, read before the POST: any build of this run has at least this number,
    so a lookup reads the builds since, however many there are, and no more."""

    def __post_init__(self) -> None:
        if type(self.status) is not RunStatus:
            object.__setattr__(self, "status", RunStatus(self.status))

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    @property
    def tick(self) -> datetime | None:
        return cron.tick_of_key(self.fire_key)


def check_step(run: Run, changes: dict[str, Any]) -> None:
    """Raises IllegalTransition for a change of status the table forbids."""
    status = changes.get("status")
    if status is not None and RunStatus(status) not in TRANSITIONS[run.status]:
        raise IllegalTransition(f"run {run.run_id} of {run.trigger}: {run.status} cannot become {status}")


def advance(run: Run, changes: dict[str, Any]) -> Run:
    """`run` after one step, if the table allows it."""
    check_step(run, changes)
    return replace(run, **changes)


def run_id_of(trigger: str, fire_key: str) -> str:
    """A run's id follows from what it fires (the trigger and its revision or tick), not from chance: a
    process that lost the record of a fire (a fresh pod whose last history lines never reached git)
    derives the same id, and finds the build Jenkins keeps it on, instead of posting it again."""
    return hashlib.sha256(f"{trigger}\0{fire_key}".encode()).hexdigest()[:16]


def cause_text(spec: Spec, run_id: str, tick: datetime | None = None, provenance: Provenance | None = None) -> str:
    """The `cause` note carries who asked (the commit, where git knows it), the run id (to find the build
    after a crash) and the tick, if any."""
    text = spec.cause or f"reconciler: trigger {spec.name}"
    if provenance is not None:
        text += f" — {provenance.short}"
    if tick is not None and spec.schedule is not None:
        text += f" (scheduled for {tick.astimezone(spec.schedule.tz).isoformat()})"
    return f"{text} [reconciler run {run_id}]"


def new_run(spec: Spec, at: float, tick: datetime | None = None, provenance: Provenance | None = None) -> Run:
    """A decision to fire `spec` (for a scheduled spec, its `tick`), with everything the POST needs."""
    fire_key = spec.revision if tick is None else cron.tick_key(tick)
    run_id = run_id_of(spec.name, fire_key)
    params = spec.parameters
    if spec.run_id_parameter:
        params = (*(params or ()), (spec.run_id_parameter, run_id))
    if tick is not None and spec.scheduled_time_parameter and spec.schedule is not None:
        params = (*(params or ()), (spec.scheduled_time_parameter, tick.astimezone(spec.schedule.tz).isoformat()))
    if spec.provenance_parameters:
        commit = {} if provenance is None else provenance.as_dict()
        params = (*(params or ()), *((name, commit.get(field, "")) for field, name in spec.provenance_parameters))
    return Run(run_id=run_id, trigger=spec.name, fire_key=fire_key,
               server=spec.server, job=spec.job, parameters=params, cause=cause_text(spec, run_id, tick, provenance),
               tag_param=spec.run_id_parameter, status=S.DECIDED, decided_at=at,
               provenance=None if provenance is None else provenance.as_dict())


def superseded(run: Run, spec: Spec | None, now: float) -> str | None:
    """Why a refused run is not to be posted again, if it is not: what it was decided for has gone."""
    if spec is None:
        return "not posted again: the spec was removed"
    if run.fire_key.startswith(REQUESTED_KEYS):  # an operator asked for this very run, whatever the spec is now
        return None
    if not run.fire_key.startswith("@"):
        if spec.schedule is not None or spec.revision != run.fire_key:
            return f"not posted again: the spec changed since (now revision {spec.revision})"
        return None
    if spec.schedule is None:
        return "not posted again: the spec is no longer scheduled"
    tick = run.tick
    if tick is not None and now - tick.timestamp() > spec.starting_deadline.total_seconds():
        return "not posted again: refused until past its tick's starting_deadline"
    return None
