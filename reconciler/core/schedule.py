"""Cron schedules: expressions with Jenkins' `H`, ticks in a time zone, and what is due. Pure.

Parsing and iteration are cronsim's (it follows Debian cron, including its DST rules: a time in
a skipped spring-forward hour fires right after the jump, a fixed time in a repeated fall-back
hour fires once). On top of it: the @-macros, Jenkins' `H` (hashed exactly as Jenkins hashes,
from the trigger's name), and one more DST rule: the second pass through a repeated hour fires
nothing, so no wall-clock tick ever fires twice.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
FIELDS = ("minute", "hour", "day of month", "month", "day of week")
LOWER = (0, 0, 1, 1, 0)
UPPER = (59, 23, 31, 12, 7)
ALLOWED = ("0-59", "0-23", "1-31", "1-12 or JAN-DEC", "0-7 or SUN-SAT")
UPPER_FOR_HASH = (59, 23, 28, 12, 6)
"""Jenkins' CronTab bounds for H: day of month stops at 28 (valid in every month), day of week at 6."""

_H = re.compile(r"^H(?:\((\d+)-(\d+)\))?(?:/(\d+))?$")


class ScheduleError(ValueError):
    """An expression or time zone that cannot be used; the message says why."""


class JavaRandom:
    """java.util.Random, so `H` lands where Jenkins would put it for the same seed."""

    _MASK = (1 << 48) - 1

    def __init__(self, seed: int):
        self._seed = (seed ^ 0x5DEECE66D) & self._MASK

    def _next(self, bits: int) -> int:
        self._seed = (self._seed * 0x5DEECE66D + 0xB) & self._MASK
        return self._seed >> (48 - bits)

    def next_int(self, n: int) -> int:
        if n & -n == n:
            return (n * self._next(31)) >> 31
        while True:
            bits = self._next(31)
            value = bits % n
            if bits - value + (n - 1) < 1 << 31:
                return value


def jenkins_hash(seed: str) -> JavaRandom:
    """hudson.scheduler.Hash.from: MD5 of the seed folded to 8 bytes seeds a java.util.Random."""
    digest = bytearray(hashlib.md5(seed.encode("utf-8"), usedforsecurity=False).digest())
    for i in range(8, len(digest)):
        digest[i % 8] ^= digest[i]
    return JavaRandom(int.from_bytes(digest[:8], "big"))


def _hash_field(item: str, index: int, rnd: JavaRandom) -> str:
    m = _H.match(item)
    if not m:
        raise ScheduleError(f"cannot read {item!r}: H takes the forms H, H/STEP, H(A-B) and H(A-B)/STEP")
    low, high = (int(m.group(1)), int(m.group(2))) if m.group(1) else (LOWER[index], UPPER_FOR_HASH[index])
    step = int(m.group(3) or 1)
    if low > high or low < LOWER[index] or high > UPPER_FOR_HASH[index]:
        raise ScheduleError(f"{FIELDS[index]} field {item!r}: H's range must lie within "
                            f"{LOWER[index]}-{UPPER_FOR_HASH[index]}, low to high")
    if step > high - low + 1:
        raise ScheduleError(f"step {step} of {item!r} is larger than its range {low}-{high}")
    if step > 1:
        return ",".join(str(v) for v in range(low + rnd.next_int(step), high + 1, step))
    return str(low + rnd.next_int(high - low + 1))


def resolve(expression: str, seed: str) -> str:
    """Expand macros and `H` into plain cron fields cronsim reads."""
    text = MACROS.get(expression.strip().lower(), expression.strip())
    fields = text.split()
    if len(fields) != 5:
        raise ScheduleError(f"expected 5 fields (minute hour day-of-month month day-of-week) or a macro "
                            f"({', '.join(MACROS)}), got {len(fields)}")
    rnd = jenkins_hash(seed)
    out = []
    for index, part in enumerate(fields):
        items = [(_hash_field(item, index, rnd) if item.startswith("H") else item) for item in part.split(",")]
        out.append(",".join(items))
    return " ".join(out)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin or UTC") from None


@dataclass(frozen=True)
class Schedule:
    expression: str
    cron: str
    timezone: str = "UTC"
    tz: ZoneInfo = field(default=ZoneInfo("UTC"), compare=False, repr=False)


def parse(expression: str, timezone: str = "UTC", seed: str = "") -> Schedule:
    tz = zone(timezone)
    cron = resolve(expression, seed)
    try:
        CronSim(cron, datetime(2000, 1, 1, tzinfo=tz))
    except CronSimError as e:
        raise ScheduleError(f"invalid cron expression {expression!r}: {_which_field(cron) or e}") from None
    return Schedule(expression=expression, cron=cron, timezone=timezone, tz=tz)


def _which_field(cron: str) -> str | None:
    """The first field cronsim cannot read on its own, named with its value and what it allows."""
    fields = cron.split()
    for index, value in enumerate(fields):
        alone = ["*"] * 5
        alone[index] = value
        try:
            CronSim(" ".join(alone), datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError:
            return f"{FIELDS[index]} field {value!r} is not valid: it allows {ALLOWED[index]}, lists, ranges and steps"
    return "its day of month and month never meet (as 30 February), so it would never fire"


def ticks(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """Fire times strictly after `after`, in UTC; the second pass of a repeated hour is skipped."""
    for local in CronSim(schedule.cron, after.astimezone(schedule.tz)):
        if local.fold:
            continue
        yield local.astimezone(UTC)


def next_tick(schedule: Schedule, after: datetime) -> datetime:
    return next(ticks(schedule, after))


@dataclass(frozen=True)
class Due:
    """What a schedule needs at `now`, given the last tick already handled (the cursor)."""

    fire: datetime | None
    missed: tuple[datetime, ...]
    missed_uncounted: bool
    """More ticks were missed than listed (long downtime); only the most recent are listed."""
    cursor: datetime


def due(schedule: Schedule, cursor: datetime, now: datetime, deadline: timedelta, max_missed: int = 100) -> Due:
    """The most recent tick fires if it is within the deadline; every other passed tick is missed."""
    passed: list[datetime] = []
    overflow = False
    for tick in ticks(schedule, cursor):
        if tick > now:
            break
        passed.append(tick)
        if len(passed) > max_missed + 1:
            passed.pop(0)
            overflow = True
    if not passed:
        return Due(None, (), False, cursor)
    latest = passed[-1]
    if now - latest <= deadline:
        return Due(latest, tuple(passed[:-1]), overflow, latest)
    return Due(None, tuple(passed), overflow, latest)


_DURATION = re.compile(r"^(?:(\d{1,9})h)?(?:(\d{1,9})m)?(?:(\d{1,9})s)?$")


MAX_DURATION = timedelta(days=366)
"""The longest `starting_deadline`: more would say nothing more, and datetimes overflow not far beyond."""


@functools.lru_cache(maxsize=256)
def parse_duration(text: str) -> timedelta:
    """`10m`, `90s`, `1h30m`, `0`. Cached: ten thousand specs share a handful of durations."""
    if text.strip() == "0":
        return timedelta(0)
    m = _DURATION.match(text.strip())
    if not m or not any(m.groups()):
        raise ScheduleError(f"cannot read duration {text!r}: write it like 30s, 10m, 2h or 1h30m")
    h, mi, s = (int(g or 0) for g in m.groups())
    if h * 3600 + mi * 60 + s > MAX_DURATION.total_seconds():
        raise ScheduleError(f"duration {text.strip()!r} is longer than {MAX_DURATION.days} days: a deadline that long "
                            "means every missed tick is still due")
    return timedelta(hours=h, minutes=mi, seconds=s)


def tick_key(tick: datetime) -> str:
    """The identity of one tick in the state store: `@` and the UTC time."""
    return "@" + tick.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cursors(stored: Mapping[str, float], fired: Iterable[tuple[str, str]]) -> dict[str, datetime]:
    """Where each schedule stands: its stored cursor, or its latest fired tick if later (a store
    rebuilt from history has ticks but no cursors)."""
    out = {trigger: datetime.fromtimestamp(after, UTC) for trigger, after in stored.items()}
    for trigger, key in fired:
        tick = tick_of_key(key)
        if tick is not None and (trigger not in out or out[trigger] < tick):
            out[trigger] = tick
    return out


def tick_of_key(key: str) -> datetime | None:
    if not key.startswith("@"):
        return None
    return datetime.strptime(key[1:], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
