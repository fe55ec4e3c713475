"""Change freezes: windows in which the operator's config lets nothing fire. Pure.

A window is fixed (`from`, `until`) or recurring: it opens at each tick of a cron `schedule` read
in its `timezone`, exactly as a trigger's schedule ticks (core/schedule.py, with its DST rules),
and lasts `duration` of wall-clock time: `0 18 * * FRI` for 62h ends Monday 08:00 local time, on
the weekends the clocks change too. An end that falls in the hour skipped in spring is the moment
the clocks jump; one in the hour repeated in autumn is its first pass.

A one-shot due in a window waits and fires when the window ends; a tick inside a window is skipped.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim

from reconciler.core import schedule as cron
from reconciler.core.policy import matches_any

CHAIN_LIMIT = 100
"""How many back-to-back occurrences are followed to find where a freeze ends; a window that never
ends (a schedule ticking more often than its duration) is frozen `until` None beyond that."""


@dataclass(frozen=True)
class Window:
    name: str
    triggers: tuple[str, ...] = ("**",)
    start: datetime | None = None
    """Fixed windows: `from` and `until` (aware datetimes), half open."""
    until: datetime | None = None
    schedule: cron.Schedule | None = None
    """Recurring windows: opens at each tick, lasts `duration`."""
    duration: timedelta = timedelta(0)

    def applies_to(self, trigger: str) -> bool:
        return matches_any(self.triggers, trigger)

    def end_of_occurrence_at(self, at: datetime) -> datetime | None:
        """The end of this window's occurrence covering `at`, if one does."""
        if self.schedule is None:
            assert self.start is not None and self.until is not None
            return self.until if self.start <= at < self.until else None
        start = _last_tick(self.schedule, at)
        if start is None:
            return None
        end = wall_clock_end(start, self.duration, self.schedule.tz)
        return end if at < end else None


@dataclass(frozen=True)
class Frozen:
    """Why a trigger may not fire now: the window covering now, and when the freeze lifts (None: not
    within CHAIN_LIMIT back-to-back occurrences)."""

    window: str
    until: datetime | None

    def __str__(self) -> str:
        end = "with no end in sight" if self.until is None else f"until {self.until:%Y-%m-%dT%H:%M:%SZ}"
        return f"freeze window {self.window!r} {end}"


def frozen(windows: Sequence[Window], trigger: str, at: datetime) -> Frozen | None:
    """Is `trigger` frozen at `at`, by which window, and until when. The end is where no window of
    the trigger's covers any more: a window that ends inside another (or opens as it closes) chains on.
    What `reconciler trigger --override-freeze` asks before it fires anyway."""
    if not windows:
        return None
    windows = tuple(windows)
    first = _covering(windows, trigger, at)
    if first is None:
        return None
    name, end = first
    for _ in range(CHAIN_LIMIT):
        more = _covering(windows, trigger, end)
        if more is None:
            return Frozen(name, end)
        end = more[1]
    return Frozen(name, None)


def _covering(windows: tuple[Window, ...], trigger: str, at: datetime) -> tuple[str, datetime] | None:
    """The trigger's window covering `at` that ends last (the first listed of those that end together)."""
    found: tuple[str, datetime] | None = None
    for window, end in _open_at(windows, at):
        if (found is None or end > found[1]) and window.applies_to(trigger):
            found = (window.name, end)
    return found


@functools.lru_cache(maxsize=256)
def _open_at(windows: tuple[Window, ...], at: datetime) -> tuple[tuple[Window, datetime], ...]:
    """The windows open at `at` with their ends. Cached: a pass asks it for every trigger at one `at`."""
    out = []
    for window in windows:
        end = window.end_of_occurrence_at(at)
        if end is not None:
            out.append((window, end))
    return tuple(out)


def _last_tick(schedule: cron.Schedule, at: datetime) -> datetime | None:
    """The schedule's latest tick at or before `at`, as `cron.ticks` would have produced it: found
    going back (cronsim's reverse iteration), then confirmed going forward from two ticks earlier so
    the DST rules are the schedule's own."""
    back = CronSim(schedule.cron, (at + timedelta(minutes=1)).astimezone(schedule.tz), reverse=True)
    earlier = [t for t, _ in zip(back, range(3), strict=False) if t.astimezone(UTC) <= at]
    if not earlier:
        return None
    last = None
    for tick in cron.ticks(schedule, earlier[-1].astimezone(UTC) - timedelta(seconds=1)):
        if tick > at:
            return last
        last = tick
    return last


def wall_clock_end(start: datetime, duration: timedelta, tz: ZoneInfo) -> datetime:
    """`start` plus `duration` of wall-clock time in `tz`, in UTC."""
    return local_instant(start.astimezone(tz).replace(tzinfo=None) + duration, tz)


def local_instant(local: datetime, tz: ZoneInfo) -> datetime:
    """The instant a naive local time names: its first pass if the clocks repeat it, the moment the
    clocks jump if they skip it."""
    first = local.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == local:
        return first
    # Skipped: bisect, in whole seconds (transitions fall on them), between before and after the jump.
    low, high = int(local.replace(tzinfo=tz, fold=1).timestamp()), int(first.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, tz).replace(tzinfo=None) >= local:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)
