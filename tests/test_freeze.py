"""Freeze windows: pure functions of the windows, a trigger and a time. Is it frozen, by which
window, until when; DST as schedules have it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core import schedule as cron
from reconciler.core.freeze import Frozen, Window, frozen, local_instant, wall_clock_end

BERLIN = ZoneInfo("Europe/Berlin")
YEAR_END = Window("year-end", start=datetime(2026, 12, 20, tzinfo=UTC), until=datetime(2027, 1, 4, tzinfo=UTC))
WEEKENDS = Window("weekends", schedule=cron.parse("0 18 * * FRI", "Europe/Berlin"), duration=timedelta(hours=62))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_a_fixed_window_freezes_from_its_start_until_its_end_exclusive():
    assert frozen([YEAR_END], "any/thing", utc("2026-12-19T23:59:59Z")) is None
    assert frozen([YEAR_END], "any/thing", utc("2026-12-20T00:00:00Z")) == Frozen("year-end", YEAR_END.until)
    assert frozen([YEAR_END], "any/thing", utc("2027-01-03T23:59:59Z")) == Frozen("year-end", YEAR_END.until)
    assert frozen([YEAR_END], "any/thing", utc("2027-01-04T00:00:00Z")) is None
    assert str(frozen([YEAR_END], "x", utc("2026-12-25T00:00:00Z"))) == \
        "freeze window 'year-end' until 2027-01-04T00:00:00Z"


def test_a_window_freezes_only_the_triggers_its_globs_match():
    team_a = Window("a-only", triggers=("team-a/**",), start=YEAR_END.start, until=YEAR_END.until)
    at = utc("2026-12-24T00:00:00Z")
    assert frozen([team_a], "team-a/deploy", at) is not None
    assert frozen([team_a], "team-b/deploy", at) is None


def test_a_weekend_window_runs_from_friday_evening_to_monday_morning_local_time():
    friday = utc("2026-12-04T18:00:00+01:00")
    assert frozen([WEEKENDS], "x", friday - timedelta(seconds=1)) is None
    assert frozen([WEEKENDS], "x", friday) == Frozen("weekends", utc("2026-12-07T08:00:00+01:00"))
    assert frozen([WEEKENDS], "x", utc("2026-12-07T07:59:59+01:00")) is not None
    assert frozen([WEEKENDS], "x", utc("2026-12-07T08:00:00+01:00")) is None


def test_duration_is_wall_clock_time_so_the_weekend_ends_at_eight_when_the_clocks_change():
    """62h from Friday 18:00 is Monday 08:00 local, whether the weekend is 61 or 63 hours long."""
    spring = frozen([WEEKENDS], "x", utc("2026-03-28T12:00:00+01:00"))
    autumn = frozen([WEEKENDS], "x", utc("2026-10-24T12:00:00+02:00"))
    assert spring is not None and spring.until == utc("2026-03-30T08:00:00+02:00")
    assert autumn is not None and autumn.until == utc("2026-10-26T08:00:00+01:00")


def test_a_window_opening_in_the_skipped_hour_opens_when_the_clocks_jump_like_a_schedule():
    nightly = Window("nightly", schedule=cron.parse("30 2 * * *", "Europe/Berlin"), duration=timedelta(hours=1))
    assert frozen([nightly], "x", utc("2026-03-29T01:59:59+01:00")) is None
    assert frozen([nightly], "x", utc("2026-03-29T03:00:00+02:00")) == \
        Frozen("nightly", utc("2026-03-29T04:00:00+02:00"))
    # The repeated hour in autumn: the window opens on the first pass only, as a schedule fires once.
    first = frozen([nightly], "x", utc("2026-10-25T02:40:00+02:00"))
    assert first == Frozen("nightly", utc("2026-10-25T03:30:00+01:00"))


def test_an_end_in_the_skipped_hour_is_the_jump_and_one_in_the_repeated_hour_its_first_pass():
    assert local_instant(datetime(2026, 3, 29, 2, 30), BERLIN) == utc("2026-03-29T03:00:00+02:00")
    assert local_instant(datetime(2026, 10, 25, 2, 30), BERLIN) == utc("2026-10-25T02:30:00+02:00")
    assert wall_clock_end(utc("2026-03-28T02:30:00+01:00"), timedelta(days=1), BERLIN) == \
        utc("2026-03-29T03:00:00+02:00")


def test_windows_back_to_back_freeze_until_the_last_one_ends_naming_the_one_open_now():
    january = Window("january", start=YEAR_END.until, until=datetime(2027, 1, 10, tzinfo=UTC))
    assert frozen([YEAR_END, january], "x", utc("2026-12-24T00:00:00Z")) == \
        Frozen("year-end", datetime(2027, 1, 10, tzinfo=UTC))


def test_a_window_that_never_closes_is_frozen_with_no_end():
    always = Window("always", schedule=cron.parse("* * * * *"), duration=timedelta(hours=1))
    found = frozen([always], "x", utc("2026-12-24T00:00:00Z"))
    assert found == Frozen("always", None) and str(found) == "freeze window 'always' with no end in sight"


# -- against a naive reference: every tick, one by one ---------------------------------------------------

def naive_end(window: Window, at: datetime) -> datetime | None:
    """Every occurrence from well before `at`, from the schedule's own ticks; the latest end covering `at`."""
    assert window.schedule is not None
    ends = []
    for tick in cron.ticks(window.schedule, at - window.duration - timedelta(days=8)):
        if tick > at:
            break
        end = wall_clock_end(tick, window.duration, window.schedule.tz)
        if tick <= at < end:
            ends.append(end)
    return max(ends, default=None)


expressions = st.sampled_from(["0 18 * * FRI", "30 2 * * *", "0 0 * * 0", "15 1-3 * * *", "0 12 1 * *"])
zones = st.sampled_from(["Europe/Berlin", "America/New_York", "UTC", "Australia/Lord_Howe"])
moments = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC, microsecond=0))


@settings(max_examples=150, deadline=None)
@given(expressions, zones, st.integers(min_value=1, max_value=30 * 60).map(lambda m: timedelta(minutes=m)), moments)
def test_frozen_agrees_with_every_tick_one_by_one(expression, zone, duration, at):
    window = Window("w", schedule=cron.parse(expression, zone), duration=duration)
    found = frozen([window], "x", at)
    expected = naive_end(window, at)
    assert (found is None) == (expected is None)
    if found is not None and found.until is not None:
        assert found.until >= expected  # later occurrences may chain on
        assert frozen([window], "x", found.until) is None
        assert frozen([window], "x", found.until - timedelta(seconds=1)) is not None
