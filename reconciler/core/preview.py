"""What merging a change to the triggers would do: pure, over the specs of two revisions and what has fired.

Atlantis-style: before a spec change fires a real job, a reviewer sees which one-shots will fire and
with exactly which request, which edits will not fire (comments, layout, the cause text), how each
schedule's ticks move (with `H` resolved, in its time zone and UTC, and the ticks a DST change skips
or repeats), which specs become invalid, and which triggers go.
"""

from __future__ import annotations

import json
from collections.abc import Container, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from cronsim import CronSim

from reconciler.core import schedule as cron
from reconciler.core import text as safe
from reconciler.core.errors import SpecError
from reconciler.core.policy import Rule, violations
from reconciler.core.spec import Spec, job_url


class Entry(Protocol):
    """A spec file as judged: what the catalog holds for each trigger (repo/catalog.py's Entry)."""

    @property
    def path(self) -> str: ...
    @property
    def spec(self) -> Spec | None: ...
    @property
    def error(self) -> SpecError | None: ...
    @property
    def digest(self) -> bytes | None: ...


class Kind(StrEnum):
    FIRE = "will fire"
    NO_FIRE = "will not fire"
    SCHEDULE_ADDED = "schedule added"
    SCHEDULE_CHANGED = "schedule changed"
    SCHEDULE_REMOVED = "schedule removed"
    INVALID = "becomes invalid"
    POLICY = "becomes invalid (policy)"
    DELETED = "deleted"


@dataclass(frozen=True)
class Request:
    """The POST a fire would make, as a reviewer checks it (the run id is added to the cause at fire time)."""

    server: str
    path: str
    parameters: dict[str, str] | None
    cause: str


@dataclass(frozen=True)
class Change:
    trigger: str
    kind: Kind
    why: str
    path: str = ""
    request: Request | None = None
    ticks: list[str] = field(default_factory=list)
    dst: list[str] = field(default_factory=list)


def request_of(spec: Spec) -> Request:
    path = job_url("/", spec.job) + spec.endpoint
    return Request(spec.server, path, dict(spec.parameters) if spec.parameters is not None else None,
                   spec.cause or f"reconciler: trigger {spec.name}")


def preview(base: Mapping[str, Entry], head: Mapping[str, Entry], fired: Container[tuple[str, str]],
            now: datetime, ticks: int = 3, rules: Sequence[Rule] | None = None) -> list[Change]:
    """One change per trigger that differs between `base` and `head` (catalog entries by trigger),
    sorted by trigger; `fired` is what the base's history says has fired; `rules` the operator's policy."""
    changes = []
    for name in sorted(set(base) | set(head)):
        old, new = base.get(name), head.get(name)
        change = _against(name, old, new, rules) or _change(name, old, new, fired, now, ticks)
        if change is not None:
            changes.append(change)
    return changes


def _change(name: str, old: Entry | None, new: Entry | None, fired: Container[tuple[str, str]], now: datetime,
            count: int) -> Change | None:
    if new is None:
        assert old is not None
        was = "schedule" if old.spec is not None and old.spec.schedule is not None else "trigger"
        kind = Kind.SCHEDULE_REMOVED if was == "schedule" else Kind.DELETED
        return Change(name, kind, "the spec is deleted: nothing fires, its history is kept", old.path)
    if new.spec is None:
        if old is not None and old.spec is None and str(old.error) == str(new.error):
            return None
        return Change(name, Kind.INVALID, str(new.error).splitlines()[0].split(": ", 1)[-1], new.path)
    spec, before = new.spec, old.spec if old is not None else None
    if spec.schedule is not None:
        return _schedule_change(name, new, before, now, count)
    if before is not None and before.schedule is not None:
        change = _one_shot(name, new, None, fired)
        return replace(change, why=f"the schedule becomes a one-shot: {change.why}")
    if before is not None and before.revision == spec.revision:
        if old is not None and old.digest == new.digest:
            return None
        return Change(name, Kind.NO_FIRE, "only comments, layout, key order or the cause text changed", new.path)
    return _one_shot(name, new, before, fired)


def _against(name: str, old: Entry | None, new: Entry | None, rules: Sequence[Rule] | None) -> Change | None:
    """A head spec the policy refuses; nothing to say if the base's was refused for the same reasons."""
    if new is None or new.spec is None or rules is None:
        return None
    found = violations(new.spec, rules)
    if not found:
        return None
    if old is not None and old.spec is not None and violations(old.spec, rules) == found:
        return Change(name, Kind.NO_FIRE, "still refused by the policy", new.path) \
            if old.digest != new.digest else None
    return Change(name, Kind.POLICY, "; ".join(v.message for v in found), new.path)


def _one_shot(name: str, new: Entry, before: Spec | None, fired: Container[tuple[str, str]]) -> Change:
    spec = new.spec
    assert spec is not None
    if spec.suspend:
        return Change(name, Kind.NO_FIRE, "suspend: true", new.path)
    if (name, spec.revision) in fired:
        return Change(name, Kind.NO_FIRE, f"revision {spec.revision} already fired (history)", new.path)
    if before is None:
        why = "a new trigger"
    else:
        moved = [what for what, a, b in (("job", before.job, spec.job), ("server", before.server, spec.server),
                                         ("parameters", before.parameters, spec.parameters),
                                         ("run", before.run, spec.run)) if a != b]
        why = ("`run` bumped" if moved == ["run"] else f"{', '.join(moved)} changed") if moved else "changed"
    return Change(name, Kind.FIRE, why, new.path, request_of(spec))


def _schedule_change(name: str, new: Entry, before: Spec | None, now: datetime, count: int) -> Change | None:
    spec = new.spec
    assert spec is not None and spec.schedule is not None
    same = before is not None and before.schedule is not None and \
        (before.schedule.cron, before.schedule.timezone, before.revision, before.suspend) == \
        (spec.schedule.cron, spec.schedule.timezone, spec.revision, spec.suspend)
    if same:
        return None
    kind = Kind.SCHEDULE_ADDED if before is None or before.schedule is None else Kind.SCHEDULE_CHANGED
    why = _expression(spec.schedule) + (", suspended" if spec.suspend else "")
    if kind is Kind.SCHEDULE_CHANGED and before is not None and before.schedule is not None:
        was = _expression(before.schedule) + (", suspended" if before.suspend else "")
        why = f"{was} → {why}" if was != why else f"{why}; the job, parameters or run changed"
    upcoming = cron.ticks(spec.schedule, now)
    shown = [f"{t.astimezone(spec.schedule.tz):%Y-%m-%d %H:%M %Z} ({t:%Y-%m-%d %H:%M} UTC)"
             for t in (next(upcoming) for _ in range(count))]
    return Change(name, kind, why, new.path, request_of(spec), shown, dst_notes(spec.schedule, now))


def _expression(schedule: cron.Schedule) -> str:
    resolved = schedule.cron
    return f"{schedule.expression!r}" + (f" = {resolved!r}" if resolved != schedule.expression else "") + \
        f" in {schedule.timezone}"


def dst_notes(schedule: cron.Schedule, now: datetime, days: int = 366) -> list[str]:
    """The ticks of the next `days` that a DST change skips (they fire once, right after the jump) or
    repeats (they fire once), found from the zone's transitions and the expression on the wall clock."""
    notes = []
    for when, before, after in _transitions(schedule.tz, now, now + timedelta(days=days)):
        gap = after > before
        wall = (when + (before if gap else after)).replace(tzinfo=None)  # where the skipped/repeated hour starts
        span = abs(after - before)
        # The expression read on the wall clock, as if it were UTC: its ticks inside the hour that is
        # skipped (spring forward) or passed twice (fall back).
        hits = []
        for tick in CronSim(schedule.cron, (wall - timedelta(minutes=1)).replace(tzinfo=UTC)):
            if tick.replace(tzinfo=None) >= wall + span:
                break
            if tick.replace(tzinfo=None) >= wall:
                hits.append(f"{tick:%H:%M}")
        if hits:
            day = f"{wall:%Y-%m-%d}"
            notes.append(f"{day}: {', '.join(hits)} skipped by DST (clocks go forward); fires once at "
                         f"{(wall + span):%H:%M}" if gap else
                         f"{day}: {', '.join(hits)} repeated by DST (clocks go back); fires once")
    return notes


def _transitions(tz: Any, start: datetime, end: datetime) -> list[tuple[datetime, timedelta, timedelta]]:
    """The instants (UTC) in [start, end) where the zone's offset changes, with the offsets around them."""
    out = []
    step = timedelta(hours=1)
    t = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    offset = t.astimezone(tz).utcoffset()
    while t < end:
        nxt = t + step
        later = nxt.astimezone(tz).utcoffset()
        if later != offset:
            low, high = t, nxt  # to the minute
            while high - low > timedelta(minutes=1):
                mid = low + (high - low) / 2
                if mid.astimezone(tz).utcoffset() == offset:
                    low = mid
                else:
                    high = mid
            assert offset is not None and later is not None
            out.append((high.replace(second=0, microsecond=0), offset, later))
            offset = later
        t = nxt
    return out


# -- output -----------------------------------------------------------------------------------

def counted(n: int, one: str, many: str | None = None) -> str:
    """`1 trigger`, `2 triggers`: words that agree with their number."""
    return f"{n} {one if n == 1 else many or one + 's'}"


_SAID = {Kind.FIRE: ("trigger will fire", None), Kind.NO_FIRE: ("trigger will not fire", "triggers will not fire"),
         Kind.SCHEDULE_ADDED: ("schedule added", "schedules added"),
         Kind.SCHEDULE_CHANGED: ("schedule changed", "schedules changed"),
         Kind.SCHEDULE_REMOVED: ("schedule removed", "schedules removed"),
         Kind.INVALID: ("trigger becomes invalid", "triggers become invalid"),
         Kind.POLICY: ("trigger becomes invalid (policy)", "triggers become invalid (policy)"),
         Kind.DELETED: ("trigger deleted", "triggers deleted")}


def summary(changes: list[Change]) -> str:
    counts = {kind: sum(c.kind is kind for c in changes) for kind in Kind}
    parts = []
    for kind, n in counts.items():
        one, many = _SAID[kind]
        if n:
            parts.append(counted(n, one, many or one.replace("trigger ", "triggers ", 1)))
    return ", ".join(parts) if parts else "no change to any trigger"


def as_text(changes: list[Change], title: str = "reconciler plan") -> str:
    """For a terminal: every piece of the repository's text with its control characters escaped."""
    t = safe.terminal
    lines = [f"{t(title)}: {summary(changes)}"]
    for c in changes:
        lines.append(f"{t(c.trigger)}: {c.kind.value}: {t(c.why)}")
        if c.request is not None and c.kind is Kind.FIRE:
            lines.append(f"    POST {t(c.request.path)} on {t(c.request.server)}"
                         + (f" with {t(_params(c.request.parameters))}" if c.request.parameters else "")
                         + f"; cause {t(repr(c.request.cause))}")
        lines += [f"    next: {tick}" for tick in c.ticks]
        lines += [f"    DST: {note}" for note in c.dst]
    return "\n".join(lines)


def as_markdown(changes: list[Change], title: str = "reconciler plan") -> str:
    """A pull-request comment a reviewer reads in ten seconds: a summary line, then a table. Every piece
    of the repository's text is escaped (names and requests as code spans nothing inside can close,
    the rest as text with markdown and HTML escaped), so no file name or value can end a row, hide
    the rows after it (`<!--`) or pose as a link."""
    out = [f"**{safe.md_text(title)}**: {summary(changes)}"]
    if changes:
        out += ["", "| trigger | what | details |", "| --- | --- | --- |"]
        for c in changes:
            details = [safe.md_text(c.why)]
            if c.request is not None and c.kind is Kind.FIRE:
                details.append(f"{safe.md_code('POST ' + c.request.path)} on {safe.md_code(c.request.server)}"
                               + (f" with {safe.md_code(_params(c.request.parameters))}"
                                  if c.request.parameters else "")
                               + f"; cause {safe.md_code(c.request.cause)}")
            details += [f"next: {safe.md_text(tick)}" for tick in c.ticks]
            details += [f"⚠ DST: {safe.md_text(note)}" for note in c.dst]
            cells = [safe.md_code(c.trigger), f"**{c.kind.value}**", "<br>".join(details)]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def as_json(changes: list[Change]) -> str:
    """Exact: control characters (C1 too) as `\\u00XX`, as json.dumps writes them by default."""
    return json.dumps({"summary": summary(changes),
                       "changes": [{**asdict(c), "kind": c.kind.value} for c in changes]}, indent=2)


def _params(parameters: dict[str, str] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (parameters or {}).items())
