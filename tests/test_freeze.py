"""Freeze windows: pure functions of the windows, a trigger and a time. Is it frozen, by which
window, until when; DST as schedules have it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core import schedule as cron
from reconciler.core.freeze import Frozen, Window, frozen, local_instant, wall_clock_end

from .conftest import wait_for

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


def test_plan_says_frozen_with_the_window_and_its_end_and_a_tick_in_a_window_is_skipped():
    from reconciler.core.plan import Action, plan
    from reconciler.core.spec import parse

    at = utc("2026-12-24T00:00:00Z")
    one_shot = parse("job: j\n", name="a", path="a.yaml")
    nightly = parse("job: j\nschedule: '0 0 * * *'\n", name="n", path="n.yaml")
    verdicts = plan({"a": one_shot, "n": nightly}, {}, set(), {"default"}, now=at,
                    cursors={"n": at - timedelta(minutes=1)}, windows=[YEAR_END])
    assert [(v.trigger, v.action) for v in verdicts] == [("a", Action.FROZEN), ("n", Action.FROZEN)]
    assert "freeze window 'year-end' until 2027-01-04T00:00:00Z" in verdicts[0].detail
    assert "is skipped" in verdicts[1].detail
    after = plan({"a": one_shot}, {}, set(), {"default"}, now=YEAR_END.until, windows=[YEAR_END])
    assert after[0].action is Action.FIRE


def test_a_tick_inside_a_window_is_recorded_skipped_with_the_windows_name(harness):
    from reconciler.config import Policy
    from reconciler.core.runs import RunStatus

    from .test_daemon_schedule import FakeClock, history_of, started

    tick = utc("2026-12-24T06:00:00Z")
    clock = FakeClock(tick - timedelta(seconds=1))
    daemon = started(harness, clock)
    daemon.policy = Policy(windows=(YEAR_END,))
    clock.set(tick)
    assert daemon.tick() == []
    [run] = harness.runs("nightly")
    assert run.status is RunStatus.SKIPPED and "freeze window 'year-end'" in run.last_error
    assert history_of(harness) == [("skipped", "2026-12-24T06:00:00Z")]
    assert not harness.sim.triggers("manual")


# -- end to end: a real daemon process, its config swapped as Kubernetes swaps a ConfigMap's -----------

def configmap(folder: Path, version: int, text: str) -> Path:
    """A ConfigMap volume: `operator.yaml` → `..data/operator.yaml`, `..data` → `..<version>`, swapped by
    renaming a new `..data` link over the old one."""
    data = folder / f"..v{version}"
    data.mkdir(parents=True)
    (data / "operator.yaml").write_text(text)
    (folder / "..data_tmp").symlink_to(data.name)
    (folder / "..data_tmp").replace(folder / "..data")
    link = folder / "operator.yaml"
    if not link.is_symlink():
        link.symlink_to("..data/operator.yaml")
    return link


def test_a_freeze_holds_a_new_one_shot_until_the_config_without_it_releases_it_once_without_a_restart(
        harness, tmp_path):
    import json
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from .conftest import TOKEN, USER

    now = datetime.now(UTC).replace(microsecond=0)
    freeze = (f"freeze:\n  - name: release-week\n    from: {now - timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}\n"
              f"    until: {now + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}\n")
    config = configmap(tmp_path / "cm", 1, freeze)
    harness.write("deploy", "job: plain\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"JENKINS_URL": harness.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
    where = ["--triggers", str(harness.triggers), "--state", str(harness.state), "--history", str(harness.history),
             "--config", str(config)]
    log = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "run", *where, "--listen", f"127.0.0.1:{port}"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)

    def events(name: str) -> list[dict]:
        lines = (tmp_path / "daemon.log").read_text().splitlines()
        return [e for e in (json.loads(line) for line in lines if line.startswith("{")) if e["event"] == name]

    def readyz() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
                return answer.read().decode()
        except OSError:
            return ""

    try:
        [held] = wait_for(lambda: events("fire_frozen"), what="the one-shot held back")
        assert held["window"] == "release-week" and held["until"] == f"{now + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}"
        plan = subprocess.run([sys.executable, "-m", "reconciler", "plan", *where], env=env, capture_output=True,
                              text=True, timeout=60)
        assert [row.split("\t")[:2] for row in plan.stdout.splitlines()[1:]] == [["deploy", "frozen"]], plan.stderr
        assert f"freeze window 'release-week' until {now + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}" in plan.stdout
        status = subprocess.run([sys.executable, "-m", "reconciler", "status", *where[:4], "--config", str(config)],
                                env=env, capture_output=True, text=True, timeout=60)
        assert "frozen" in status.stdout and "release-week" in status.stdout

        # A broken config is reported with its position, and the last good one (the freeze) stays.
        configmap(tmp_path / "cm", 2, freeze + "  - name: broken\n    from: 2026-01-01\n")
        [invalid] = wait_for(lambda: events("config_invalid"), what="the invalid config reported")
        assert invalid["file"] == str(config) and any(f"{config}:5:5:" in e for e in invalid["errors"])
        assert "the operator's config is invalid" in wait_for(readyz, what="/readyz")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            assert "reconciler_config_invalid 1.0" in answer.read().decode()
        time.sleep(3)
        assert not harness.sim.triggers("plain")

        started = time.monotonic()
        configmap(tmp_path / "cm", 3, "freeze: []\n")
        wait_for(lambda: harness.sim.triggers("plain"), timeout=20, what="the one-shot released")
        released = time.monotonic() - started
        [reloaded] = events("config_reloaded")
        assert reloaded["changed"] == ["freeze"]
        time.sleep(2.5)  # a further reading of the config, a turn of the loop: it fired once
        assert len(harness.sim.triggers("plain")) == 1 and proc.poll() is None and released < 20
        assert "invalid" not in readyz()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_a_one_shot_held_by_a_window_fires_once_when_the_window_ends(harness):
    from reconciler.config import Policy

    from .test_daemon_schedule import FakeClock

    clock = FakeClock(YEAR_END.start + timedelta(days=1))
    harness.write("deploy", "job: plain\n")
    daemon = harness.build(clock)
    daemon.policy = Policy(windows=(YEAR_END,))
    daemon.bootstrap()
    assert daemon.pass_once() == []
    [held] = harness.logs.wait_for("fire_frozen")
    assert held["window"] == "year-end" and held["until"] == "2027-01-04T00:00:00Z"
    clock.set(YEAR_END.until - timedelta(seconds=1))
    daemon._thaw()
    assert daemon.pass_once() == [] and not harness.runs("deploy")
    clock.set(YEAR_END.until)
    daemon._thaw()
    daemon._thaw()
    assert daemon.pass_once() == []
    wait_for(lambda: harness.sim.triggers("plain"))
    assert len(harness.runs("deploy")) == 1 and len(harness.sim.triggers("plain")) == 1
