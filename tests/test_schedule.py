"""Cron semantics, Jenkins' H, time zones and DST, and what is due after downtime. No I/O, no clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest

from reconciler.core.schedule import (
    JavaRandom,
    ScheduleError,
    due,
    jenkins_hash,
    next_tick,
    parse,
    parse_duration,
    resolve,
    tick_key,
    tick_of_key,
    ticks,
)

BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")


def local_ticks(expression: str, tz: str, start: datetime, count: int) -> list[str]:
    schedule = parse(expression, tz)
    return [t.astimezone(schedule.tz).strftime("%m-%d %H:%M%z") for t in islice(ticks(schedule, start), count)]


# -- expressions ----------------------------------------------------------------------------

@pytest.mark.parametrize(("macro", "cron"), [
    ("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"), ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"), ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"),
])
def test_macros_mean_what_cron_means(macro, cron):
    assert resolve(macro, "any") == cron


def test_names_ranges_lists_and_steps():
    start = datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday
    assert local_ticks("0 9 * * MON-FRI", "UTC", start, 3) == ["01-01 09:00+0000", "01-02 09:00+0000",
                                                              "01-05 09:00+0000"]
    assert local_ticks("0 0 1 JAN,JUL *", "UTC", start, 2) == ["07-01 00:00+0000", "01-01 00:00+0000"]
    assert local_ticks("5-10/5,30 * * * *", "UTC", start, 3) == ["01-01 00:05+0000", "01-01 00:10+0000",
                                                                "01-01 00:30+0000"]


def test_java_random_matches_openjdk():
    """Reference values printed by OpenJDK 17's java.util.Random(42)."""
    rnd = JavaRandom(42)
    assert [rnd.next_int(n) for n in (10, 60, 24, 64, 1000)] == [0, 3, 0, 3, 970]


def test_h_is_hashed_from_the_name_exactly_as_jenkins_hashes():
    """Reference values from Jenkins' Hash.from (MD5 folded into a java.util.Random seed), run on OpenJDK 17."""
    rnd = jenkins_hash("nightly/regression")
    assert [rnd.next_int(n) for n in (60, 24, 28, 12, 7)] == [13, 4, 24, 0, 5]
    assert resolve("H H * * *", "nightly/regression") == "13 4 * * *"


def test_h_forms_stay_in_their_ranges_and_are_stable():
    assert resolve("H/15 * * * *", "t") == resolve("H/15 * * * *", "t")
    minutes = [int(m) for m in resolve("H/15 * * * *", "t").split()[0].split(",")]
    assert len(minutes) == 4 and all(b - a == 15 for a, b in pairwise(minutes))
    assert 0 <= int(resolve("H(0-29) * * * *", "t").split()[0]) <= 29
    hour = int(resolve("H H(2-5) * * 1-5", "t").split()[1])
    assert 2 <= hour <= 5
    assert int(resolve("H H H * *", "t").split()[2]) <= 28  # a day every month has


def test_h_spreads_many_nightly_triggers_over_the_night():
    minutes, hours = set(), set()
    for i in range(500):
        minute, hour = resolve("H H * * *", f"team-{i}/nightly").split()[:2]
        minutes.add(minute)
        hours.add(hour)
    assert len(minutes) >= 55 and len(hours) == 24


@pytest.mark.parametrize(("expression", "message"), [
    ("61 * * * *", "minute field '61' is not valid: it allows 0-59"),
    ("* 24 * * *", "hour field '24' is not valid: it allows 0-23"),
    ("* * * 13 *", "month field '13' is not valid: it allows 1-12 or JAN-DEC"),
    ("0 0 30 2 *", r"never meet \(as 30 February\)"),
    ("H(70-80) * * * *", "minute field 'H\\(70-80\\)': H's range must lie within 0-59"),
    ("* * *", "expected 5 fields"),
    ("H(5-3) * * * *", "range must lie within 0-59, low to high"),
    ("H/90 * * * *", "larger than its range"),
    ("Hx * * * *", "H takes the forms"),
])
def test_bad_expressions_say_why(expression, message):
    with pytest.raises(ScheduleError, match=message):
        parse(expression)


def test_unknown_time_zones_are_refused():
    with pytest.raises(ScheduleError, match="unknown time zone 'Europe/Atlantis'"):
        parse("* * * * *", "Europe/Atlantis")


# -- DST ------------------------------------------------------------------------------------

def test_berlin_spring_forward_fires_a_skipped_tick_once_right_after_the_jump():
    start = datetime(2026, 3, 28, 12, tzinfo=UTC)
    assert local_ticks("30 2 * * *", "Europe/Berlin", start, 3) == \
        ["03-29 03:00+0200", "03-30 02:30+0200", "03-31 02:30+0200"]


def test_berlin_fall_back_fires_a_repeated_tick_once():
    start = datetime(2026, 10, 24, 12, tzinfo=UTC)
    assert local_ticks("30 2 * * *", "Europe/Berlin", start, 2) == ["10-25 02:30+0200", "10-26 02:30+0100"]
    assert local_ticks("*/30 * * * *", "Europe/Berlin", datetime(2026, 10, 24, 23, tzinfo=UTC), 5) == \
        ["10-25 01:30+0200", "10-25 02:00+0200", "10-25 02:30+0200", "10-25 03:00+0100", "10-25 03:30+0100"]


def test_new_york_spring_forward_and_fall_back():
    assert local_ticks("30 2 * * *", "America/New_York", datetime(2026, 3, 7, 12, tzinfo=UTC), 2) == \
        ["03-08 03:00-0400", "03-09 02:30-0400"]
    assert local_ticks("30 1 * * *", "America/New_York", datetime(2026, 10, 31, 12, tzinfo=UTC), 2) == \
        ["11-01 01:30-0400", "11-02 01:30-0500"]
    assert local_ticks("0 * * * *", "America/New_York", datetime(2026, 11, 1, 4, 30, tzinfo=UTC), 3) == \
        ["11-01 01:00-0400", "11-01 02:00-0500", "11-01 03:00-0500"]


# -- what is due ----------------------------------------------------------------------------

DAILY = parse("0 6 * * *", "UTC")
T = datetime(2026, 5, 10, 6, 0, tzinfo=UTC)


def test_an_on_time_tick_fires():
    d = due(DAILY, T - timedelta(hours=1), T + timedelta(milliseconds=3), timedelta(minutes=10))
    assert (d.fire, d.missed, d.cursor) == (T, (), T)


def test_after_downtime_only_the_latest_tick_within_the_deadline_fires():
    d = due(DAILY, T - timedelta(days=3, hours=1), T + timedelta(minutes=5), timedelta(minutes=10))
    assert d.fire == T
    assert d.missed == tuple(T - timedelta(days=n) for n in (3, 2, 1))


def test_after_downtime_beyond_the_deadline_nothing_fires_and_every_tick_is_missed():
    d = due(DAILY, T - timedelta(days=2, hours=1), T + timedelta(hours=2), timedelta(minutes=10))
    assert d.fire is None and len(d.missed) == 3 and d.cursor == T


def test_a_long_downtime_lists_a_bounded_number_of_missed_ticks():
    every_minute = parse("* * * * *")
    d = due(every_minute, T - timedelta(days=30), T, timedelta(minutes=10), max_missed=100)
    assert d.fire == T and len(d.missed) == 100 and d.missed_uncounted


def test_years_of_ticks_with_random_downtime_each_tick_fires_or_is_missed_exactly_once():
    """A fake clock over three years, DST included: no tick is lost, none is handled twice."""
    schedule = parse("H H(1-3) * * *", "Europe/Berlin", seed="nightly/regression")
    deadline = timedelta(minutes=10)
    rng = random.Random(7)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=3 * 365)
    cursor, now = start, start
    fired: list[datetime] = []
    missed: list[datetime] = []
    while now < end:
        now += timedelta(minutes=rng.choice([1, 7, 60, 600, 1440, 4000]))  # on time, or down for a while
        d = due(schedule, cursor, now, deadline)
        if d.fire is not None:
            assert now - d.fire <= deadline
            fired.append(d.fire)
        missed.extend(d.missed)
        cursor = d.cursor
    handled = fired + missed
    expected = [t for t in islice(ticks(schedule, start), 2000) if t <= cursor]
    assert sorted(handled) == expected and len(set(handled)) == len(handled)
    assert fired and missed


def test_durations_and_tick_keys():
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("45s") == timedelta(seconds=45)
    with pytest.raises(ScheduleError, match="write it like"):
        parse_duration("soon")
    assert tick_key(T) == "@2026-05-10T06:00:00Z" and tick_of_key(tick_key(T)) == T
    assert next_tick(DAILY, T) == T + timedelta(days=1)
