"""Scheduled triggers in the daemon: a fake clock drives the ticks, the simulator does the building."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from reconciler.core.runs import Run
from reconciler.core.schedule import tick_key
from reconciler.store.sqlite import Store

from .conftest import wait_for

T = datetime(2026, 5, 10, 6, 0, tzinfo=UTC)  # a 06:00 UTC tick of "0 6 * * *"
DAILY = "job: manual\nschedule: '0 6 * * *'\n"


class FakeClock:
    def __init__(self, at: datetime):
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, at: datetime) -> None:
        self.now = at.timestamp()


def started(harness, clock, spec: str = DAILY, name: str = "nightly"):
    harness.write(name, spec)
    daemon = harness.build(clock)
    daemon.bootstrap()
    daemon.pass_once()
    return daemon


def history_of(harness, name: str = "nightly") -> list[tuple[str, str]]:
    from reconciler.repo.history import History

    return [(e["event"], e.get("scheduled_for", "")) for e in History(harness.history).read(name)]


def test_a_tick_fires_once_and_a_restart_at_the_tick_boundary_does_not_fire_it_again(harness):
    clock = FakeClock(T - timedelta(seconds=1))
    daemon = started(harness, clock)
    assert daemon.tick() == []
    clock.set(T)
    [run] = daemon.tick()
    assert run.fire_key == tick_key(T)
    wait_for(lambda: harness.sim.triggers("manual"))
    assert daemon.tick() == []

    harness.stop()
    again = started(harness, clock)
    assert again.tick() == []
    clock.set(T + timedelta(days=1, seconds=2))
    assert [r.fire_key for r in again.tick()] == [tick_key(T + timedelta(days=1))]
    wait_for(lambda: len(harness.sim.triggers("manual")) == 2)


def test_a_new_schedule_starts_at_its_next_tick_not_with_a_backlog(harness):
    clock = FakeClock(T + timedelta(minutes=1))
    daemon = started(harness, clock)
    assert daemon.tick() == []
    assert daemon.next_due["nightly"] == T + timedelta(days=1)


def test_killed_after_deciding_a_tick_fires_it_once_on_restart(harness):
    clock = FakeClock(T + timedelta(seconds=1))
    harness.write("nightly", DAILY)
    store = Store(harness.state)
    store.decide([Run(run_id="tick00000000001", trigger="nightly", fire_key=tick_key(T), server="default",
                      job="manual", parameters=None, cause="c [reconciler run tick00000000001]", tag_param=None,
                      status="decided", decided_at=clock.now)], cursors={"nightly": T.timestamp()})
    store.close()
    daemon = started(harness, clock)
    assert daemon.tick() == []
    wait_for(lambda: harness.sim.triggers("manual"))
    assert len(harness.sim.triggers("manual")) == 1


def test_catch_up_after_downtime_fires_the_latest_tick_within_the_deadline_and_records_the_missed(harness):
    clock = FakeClock(T - timedelta(days=3, hours=1))
    daemon = started(harness, clock)
    harness.stop()
    clock.set(T + timedelta(minutes=4))  # down for three days; back 4 minutes after a tick
    daemon = started(harness, clock)
    [run] = daemon.tick()
    assert run.fire_key == tick_key(T)
    wait_for(lambda: len(history_of(harness)) >= 4)
    assert history_of(harness)[:4] == [("missed", f"2026-05-0{d}T06:00:00Z") for d in (7, 8, 9)] + \
        [("decided", "2026-05-10T06:00:00Z")]


def test_catch_up_beyond_the_deadline_fires_nothing(harness):
    clock = FakeClock(T - timedelta(days=1, hours=1))
    started(harness, clock)
    harness.stop()
    clock.set(T + timedelta(hours=1))
    daemon = started(harness, clock)
    assert daemon.tick() == []
    assert [e for e, _ in history_of(harness)] == ["missed", "missed"]
    assert harness.sim.triggers() == []


def second_tick_while_the_first_builds(harness, concurrency: str):
    """Fire the tick at T, wait until its build runs, then move the clock to the next tick."""
    clock = FakeClock(T - timedelta(seconds=1))
    daemon = started(harness, clock, DAILY + f"concurrency: {concurrency}\n")
    clock.set(T)
    daemon.tick()
    wait_for(lambda: harness.runs("nightly")[0].status == "building")
    clock.set(T + timedelta(days=1))
    return daemon, clock


def test_forbid_skips_a_tick_while_the_previous_build_runs(harness):
    daemon, clock = second_tick_while_the_first_builds(harness, "forbid")
    assert daemon.tick() == []
    skipped = [r for r in harness.runs("nightly") if r.status == "skipped"]
    assert len(skipped) == 1 and "concurrency: forbid" in skipped[0].last_error
    harness.sim.finish("manual", 1)
    wait_for(lambda: not daemon.executor.active())
    clock.set(T + timedelta(days=2))
    assert len(daemon.tick()) == 1
    assert ("skipped", "2026-05-11T06:00:00Z") in history_of(harness)


def test_replace_stops_the_running_build_and_fires(harness):
    daemon, _ = second_tick_while_the_first_builds(harness, "replace")
    assert len(daemon.tick()) == 1
    wait_for(lambda: [b.result for b in harness.sim.builds("manual")][:1] == ["ABORTED"])
    wait_for(lambda: len(harness.sim.builds("manual")) == 2)
    wait_for(lambda: next(r for r in harness.runs("nightly") if r.fire_key == tick_key(T)).result == "ABORTED")


def test_suspend_then_resume_fires_no_backlog_beyond_the_deadline(harness):
    clock = FakeClock(T - timedelta(days=2, hours=1))
    daemon = started(harness, clock, DAILY + "suspend: true\n")
    clock.set(T + timedelta(minutes=2))
    assert daemon.tick() == []
    harness.write("nightly", DAILY)
    daemon.reconcile(daemon.catalog.scan())
    [run] = daemon.tick()
    assert run.fire_key == tick_key(T)
    wait_for(lambda: [e for e, _ in history_of(harness)][:3] == ["missed", "missed", "decided"],
             what="two missed ticks, then the one within the deadline decided")


def test_the_scheduled_time_reaches_the_job_as_cause_and_parameter(make_harness):
    harness = make_harness(job_token="deploy-job-token")
    clock = FakeClock(T - timedelta(seconds=1))
    spec = ("job: deploy\nschedule: '0 8 * * *'\ntimezone: Europe/Berlin\nparameters: {ENV: prod}\n"
            "scheduled_time_parameter: VERSION\n")
    daemon = started(harness, clock, spec)
    clock.set(T)
    daemon.tick()
    [request] = wait_for(lambda: harness.sim.triggers("deploy"))
    assert request.param("VERSION") == "2026-05-10T08:00:00+02:00"
    assert "(scheduled for 2026-05-10T08:00:00+02:00)" in request.param("cause")


def test_real_time_the_daemon_wakes_for_a_tick_by_itself(harness):
    """The real clock, shifted so a minute boundary is a moment away; the loop must wake on its own."""
    boundary = (int(time.time()) // 60 + 2) * 60
    offset = boundary - 0.5 - time.time()
    harness.write("every-minute", "job: plain\nschedule: '* * * * *'\n")
    harness.start(clock=lambda: time.time() + offset)
    wait_for(lambda: harness.sim.triggers("plain"), timeout=10, what="the tick's POST")
    [run] = harness.runs("every-minute")
    assert run.fire_key == tick_key(datetime.fromtimestamp(boundary, UTC))
