"""Operating without a commit, the pure part: what a request fires, which ticks a backfill fills, when a
pause holds, when failures pause a trigger. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.core.operations import (
    OperationError,
    Pause,
    Request,
    backfill_run,
    backfill_ticks,
    check_note,
    failure_streak,
    request_id,
    requested_run,
    take_up,
)
from reconciler.core.runs import TRANSITIONS, Run, RunStatus, superseded
from reconciler.core.schedule import tick_key
from reconciler.core.spec import parse

T0 = datetime(2026, 5, 10, 10, 0, tzinfo=UTC)
MINUTELY = parse("job: j\nschedule: '* * * * *'\ntimezone: Europe/Berlin\nscheduled_time_parameter: TICK\n"
                 "run_id_parameter: RID\ncause: nightly\n", name="team/minutely", path="m.yaml")
ONE_SHOT = parse("job: deploy\nparameters: {ENV: prod}\ncause: deploy 1.4\n", name="team/deploy", path="d.yaml")


def asked(kind: str = "trigger", note: str | None = "hotfix", rid: str = "r1") -> Request:
    return Request(run_id="", request_id=rid, trigger="t", kind=kind, note=note, by="alice", os_user="bob",
                   at=T0.timestamp())


def test_a_requested_run_has_a_key_of_its_own_and_its_cause_says_who_and_why():
    run = requested_run(ONE_SHOT, asked())
    assert run.fire_key == "!r1" and run.status is RunStatus.REQUESTED
    assert run.fire_key != ONE_SHOT.revision
    assert run.cause == f"deploy 1.4 — requested by alice: hotfix [reconciler run {run.run_id}]"
    assert run.parameters == (("ENV", "prod"),)
    assert requested_run(ONE_SHOT, asked(rid="r2")).run_id != run.run_id


def test_a_key_makes_a_request_idempotent_and_without_one_each_call_is_new():
    assert request_id("deploy-42", "x") == request_id("deploy-42", "y")
    assert request_id("deploy-42", "x") != request_id("deploy-43", "x")
    assert request_id(None, "x") != request_id(None, "y")


def test_a_requested_run_of_a_schedule_gets_the_request_time_and_its_own_run_id_parameter():
    run = requested_run(MINUTELY, asked(note=None))
    params = dict(run.parameters or ())
    assert params == {"RID": run.run_id, "TICK": "2026-05-10T12:00:00+02:00"}
    assert "scheduled for" not in (run.cause or "") and "requested by alice [reconciler run" in (run.cause or "")


def test_a_backfilled_tick_is_keyed_by_its_tick_with_the_tick_as_parameter_and_a_cause_saying_backfill():
    tick = T0 + timedelta(minutes=3)
    run = backfill_run(MINUTELY, tick, asked("backfill", note="cluster down"))
    assert run.fire_key == "+" + tick_key(tick)
    assert dict(run.parameters or ()) == {"RID": run.run_id, "TICK": "2026-05-10T12:03:00+02:00"}
    assert "backfill by alice: cluster down" in (run.cause or "") and run.run_id in (run.cause or "")
    assert "(scheduled for 2026-05-10T12:03:00+02:00)" in (run.cause or "")
    assert backfill_run(MINUTELY, tick, asked("backfill", rid="other")).run_id == run.run_id


def test_backfill_fires_each_tick_without_a_run_and_not_those_after_now():
    minute = timedelta(minutes=1)
    recorded = {tick_key(T0 + minute): RunStatus.COMPLETED, tick_key(T0 + 2 * minute): RunStatus.MISSED,
                tick_key(T0 + 3 * minute): RunStatus.SKIPPED, "+" + tick_key(T0 + 3 * minute): RunStatus.QUEUED}
    ticks = backfill_ticks(MINUTELY, T0, T0 + 5 * minute, T0 + 4 * minute, recorded)
    assert [(t.tick - T0, t.fire) for t in ticks] == [(0 * minute, True), (minute, False), (2 * minute, True),
                                                     (3 * minute, False), (4 * minute, True)]
    assert [t.why for t in ticks][1:4] == ["fired by the schedule (completed)", "recorded only as missed",
                                           "backfilled already (queued)"]
    assert [t.tick for t in backfill_ticks(MINUTELY, T0, T0 + 5 * minute, T0 + 90 * timedelta(seconds=1), {})] == \
        [T0, T0 + minute]


def test_backfill_is_for_schedules_and_a_range_that_runs_forward():
    with pytest.raises(OperationError, match="one-shot trigger"):
        backfill_ticks(ONE_SHOT, T0, T0 + timedelta(hours=1), T0, {})
    with pytest.raises(OperationError, match="is not before"):
        backfill_ticks(MINUTELY, T0, T0, T0, {})


def run(status: RunStatus, at: float, result: str | None = None, trigger: str = "t", key: str = "k") -> Run:
    return Run(run_id=f"{trigger}{at}", trigger=trigger, fire_key=f"{key}{at}", server="default", job="j",
               parameters=None, cause=None, tag_param=None, status=status, decided_at=at, result=result)


def test_a_failure_streak_counts_ended_runs_other_than_success_since_the_last_resume():
    C, S = RunStatus.COMPLETED, RunStatus.SKIPPED
    newest_first = [run(RunStatus.BUILDING, 9), run(C, 8, "FAILURE"), run(S, 7), run(RunStatus.LOST, 6),
                    run(C, 5, "UNSTABLE"), run(C, 4, "SUCCESS"), run(C, 3, "FAILURE")]
    assert failure_streak(newest_first) == 3
    assert failure_streak(newest_first, since=5.5) == 2
    assert failure_streak([run(RunStatus.REFUSED, 2), run(RunStatus.MISSED, 1)]) == 0


def test_take_up_holds_paused_triggers_and_keeps_one_at_a_time_in_order():
    R = RunStatus.REQUESTED
    waiting = [run(R, 3, trigger="a", key="+@3"), run(R, 1, trigger="a", key="+@1"), run(R, 2, trigger="b"),
               run(R, 1, trigger="c")]
    pause = Pause(trigger="c", by="alice", os_user="alice", note="incident", since=0.0)
    chosen = take_up(waiting, {"c": pause}, [], {"a": True, "b": False}, now=10.0)
    assert [(r.trigger, r.decided_at) for r in chosen] == [("a", 1), ("b", 2)]
    busy = take_up(waiting, {}, [run(RunStatus.QUEUED, 0, trigger="a")], {"a": True}, now=10.0)
    assert [r.trigger for r in busy] == ["c", "b"]


def test_a_pause_holds_until_resumed_or_until_its_time_and_says_who_when_and_why():
    pause = Pause(trigger="t", by="alice", os_user="bob", note="incident", since=T0.timestamp(),
                  until=T0.timestamp() + 60)
    assert pause.holds(T0.timestamp() + 59) and not pause.expired(T0.timestamp() + 59)
    assert not pause.holds(T0.timestamp() + 60) and pause.expired(T0.timestamp() + 60)
    assert pause.describe() == ("paused by alice (os user bob) since 2026-05-10T10:00:00Z until "
                                "2026-05-10T10:01:00Z: incident")
    auto = Pause(trigger="t", by="reconciler", os_user="reconciler", note=None, since=0.0, reason="after 2 failures")
    assert auto.describe().startswith("paused after 2 failures by reconciler since")
    lifted = Pause(trigger="t", by="a", os_user="a", note=None, since=0.0, resumed_at=1.0)
    assert not lifted.holds(0.5) and not lifted.expired(5.0)


def test_notes_are_one_line_and_short():
    assert check_note("after the fix") == "after the fix"
    with pytest.raises(OperationError, match="one line"):
        check_note("a\nb")
    with pytest.raises(OperationError, match="at most 500"):
        check_note("x" * 501)


def test_a_requested_run_is_decided_from_requested_and_a_refused_one_is_not_superseded_by_a_spec_change():
    assert RunStatus.DECIDED in TRANSITIONS[RunStatus.REQUESTED]
    assert RunStatus.POSTING not in TRANSITIONS[RunStatus.REQUESTED]
    refused = requested_run(ONE_SHOT, asked())
    changed = parse("job: deploy\nparameters: {ENV: staging}\n", name="team/deploy", path="d.yaml")
    assert superseded(refused, changed, T0.timestamp()) is None
    assert superseded(refused, None, T0.timestamp()) == "not posted again: the spec was removed"


def test_the_overview_shows_a_paused_trigger_with_who_when_and_why_and_suspension_outranks_it():
    from reconciler.core.overview import State, as_json, overview

    pause = Pause(trigger="team/deploy", by="alice", os_user="alice", note="incident", since=T0.timestamp())
    suspended = parse("job: a\nsuspend: true\n", name="off", path="off.yaml")
    rows = overview({ONE_SHOT.name: ONE_SHOT, "off": suspended}, {}, {}, T0,
                    paused={ONE_SHOT.name: pause, "off": replace_trigger(pause, "off")})
    assert [(r.name, r.state) for r in rows] == [("off", State.SUSPENDED), ("team/deploy", State.PAUSED)]
    assert as_json(rows[1])["detail"] == "paused by alice since 2026-05-10T10:00:00Z: incident"


def replace_trigger(pause: Pause, name: str) -> Pause:
    from dataclasses import replace

    return replace(pause, trigger=name)
