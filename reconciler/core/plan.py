"""What a pass would do: pure over the specs, the errors and what has already been fired."""

from __future__ import annotations

from collections.abc import Collection, Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from reconciler.core import schedule as cron
from reconciler.core.errors import SpecError
from reconciler.core.freeze import Window, frozen
from reconciler.core.spec import Spec


class Action(StrEnum):
    FIRE = "fire"
    UP_TO_DATE = "up to date"
    INVALID = "invalid"
    SUSPENDED = "suspended"
    SCHEDULED = "scheduled"
    PENDING = "pending"
    """Decided, not accepted by Jenkins yet: being posted, or refused and to be posted again."""
    NOT_FIRED = "not fired"
    """Decided, given up without Jenkins accepting it: bump `run` to fire it again."""
    FROZEN = "frozen"
    """A freeze window covers it: a one-shot waits for the window's end, a tick is skipped."""
    PAUSED = "paused"
    """`reconciler pause`: nothing fires until `resume` (or its `--until`)."""


@dataclass(frozen=True)
class Verdict:
    trigger: str
    action: Action
    detail: str = ""
    spec: Spec | None = None

    @property
    def key(self) -> str:
        """The identity of one fire of this trigger: for a one-shot, its revision."""
        assert self.spec is not None
        return self.spec.revision


def unknown_server(name: str, servers: Collection[str]) -> str:
    """What is wrong with a spec naming a server the operator has not configured."""
    return f"server {name!r} is not configured (known: {', '.join(sorted(servers)) or 'none'})"


def _held(spec: Spec, servers: Collection[str]) -> Verdict | None:
    if spec.server not in servers:
        return Verdict(spec.name, Action.INVALID, unknown_server(spec.server, servers), spec)
    if spec.suspend:
        return Verdict(spec.name, Action.SUSPENDED, "suspend: true", spec)
    return None


def decide(spec: Spec, fired: Container[tuple[str, str]], servers: Collection[str], *,
           windows: Sequence[Window] = (), now: datetime | None = None) -> Verdict:
    """A one-shot fires once per revision, when no freeze window covers `now`."""
    held = _held(spec, servers)
    if held is not None:
        return held
    if (spec.name, spec.revision) in fired:
        return Verdict(spec.name, Action.UP_TO_DATE, f"revision {spec.revision} already fired", spec)
    freeze = frozen(windows, spec.name, now) if windows and now is not None else None
    if freeze is not None:
        return Verdict(spec.name, Action.FROZEN, f"revision {spec.revision} waits: {freeze}", spec)
    return Verdict(spec.name, Action.FIRE, f"revision {spec.revision} not fired yet", spec)


def decide_scheduled(spec: Spec, cursor: datetime | None, now: datetime, servers: Collection[str], *,
                     windows: Sequence[Window] = ()) -> Verdict:
    """A schedule never seen before starts at `now`: it fires from its next tick, not a backlog. (`plan
    --at` passes the real time as the cursor of such a schedule: a daemon started now would have been
    watching it until then.)"""
    assert spec.schedule is not None
    held = _held(spec, servers)
    if held is not None:
        return held
    due = cron.due(spec.schedule, cursor or now, now, spec.starting_deadline)
    freeze = frozen(windows, spec.name, due.fire) if windows and due.fire is not None else None
    if freeze is not None:
        return Verdict(spec.name, Action.FROZEN, f"tick {_show(spec.schedule, due.fire)} is skipped: {freeze}", spec)
    if due.fire is not None:
        return Verdict(spec.name, Action.FIRE, f"tick {_show(spec.schedule, due.fire)} is due", spec)
    nxt = cron.next_tick(spec.schedule, now)
    return Verdict(spec.name, Action.SCHEDULED, f"next tick {_show(spec.schedule, nxt)}", spec)


def _show(schedule: cron.Schedule, tick: datetime) -> str:
    return f"{tick.astimezone(schedule.tz).isoformat()} ({tick:%Y-%m-%dT%H:%M:%SZ})"


def plan(specs: Mapping[str, Spec], errors: Mapping[str, SpecError],
         fired: Container[tuple[str, str]], servers: Collection[str], *,
         now: datetime | None = None, cursors: Mapping[str, datetime] | None = None,
         unaccepted: Mapping[tuple[str, str], tuple[Action, str]] | None = None,
         since: datetime | None = None, windows: Sequence[Window] = (), paused: Mapping[str, str] | None = None,
         requested: Mapping[str, str] | None = None) -> list[Verdict]:
    """One verdict per trigger, sorted by name. A deleted spec has no verdict: it fires nothing.
    `unaccepted` names, by (trigger, revision), the runs decided that Jenkins has not accepted (being
    posted, refused, given up), with what to say instead of "already fired": only a run Jenkins
    accepted is fired. `since` is where a schedule without a cursor starts (default: `now`).
    `windows`: the freezes. `paused` says, by trigger, who paused it, when and why; `requested`, the
    runs operators asked for that wait (`trigger`, `backfill`)."""
    verdicts = [decide_scheduled(spec, (cursors or {}).get(spec.name) or since, now, servers, windows=windows)
                if spec.schedule is not None and now is not None else
                decide(spec, fired, servers, windows=windows, now=now)
                for spec in specs.values()]
    held = unaccepted or {}
    verdicts = [Verdict(v.trigger, *held[v.trigger, v.spec.revision], v.spec)
                if v.action is Action.UP_TO_DATE and v.spec and (v.trigger, v.spec.revision) in held
                else v for v in verdicts]
    verdicts = [_operated(v, (paused or {}).get(v.trigger), (requested or {}).get(v.trigger)) for v in verdicts]
    verdicts += [Verdict(name, Action.INVALID, str(err)) for name, err in errors.items()]
    return sorted(verdicts, key=lambda v: v.trigger)


def _operated(verdict: Verdict, pause: str | None, requested: str | None) -> Verdict:
    """A verdict as operators' acts change it: a pause holds whatever would fire; requested runs fire."""
    if verdict.action in (Action.INVALID, Action.SUSPENDED) or (pause is None and requested is None):
        return verdict
    if pause is not None:
        waiting = f"; waiting: {requested}" if requested else ""
        return Verdict(verdict.trigger, Action.PAUSED, f"{pause} (else: {verdict.action.value}){waiting}",
                       verdict.spec)
    detail = f"{requested}" + (f"; and {verdict.detail}" if verdict.action is Action.FIRE else "")
    return Verdict(verdict.trigger, Action.FIRE, detail, verdict.spec)
