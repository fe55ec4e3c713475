"""Operating without a commit, end to end: the commands run as processes against the daemon's state store,
the daemon (in a thread, or `run --once` as a process) takes them up, the simulator builds."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from reconciler.core.schedule import tick_key
from reconciler.jenkins.client import Client
from reconciler.repo.history import History
from reconciler.store.sqlite import Store

from .conftest import TOKEN, USER, wait_for
from .test_daemon_schedule import FakeClock
from .test_notify import notify_harness  # noqa: F401  (a fixture)

TICK_JOB = {"name": "tick", "duration": 0, "token": "deploy-job-token", "parameters": ["TICK"], "concurrent": True}
SERIAL_JOB = {"name": "slow", "duration": None, "token": "deploy-job-token", "parameters": ["TICK"]}
FAILING_JOB = {"name": "broken", "duration": 0, "token": "deploy-job-token", "result": ["FAILURE"],
               "parameters": ["REV"], "concurrent": True}
MINUTELY = "job: tick\nschedule: '* * * * *'\nscheduled_time_parameter: TICK\n"
T = datetime(2026, 5, 10, 6, 0, tzinfo=UTC)


def cli(h, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    common = ["--triggers", str(h.triggers), "--state", str(h.state)]
    if args[0] == "run":
        common += ["--history", str(h.history), "--poll-interval", "0.1"]
    return subprocess.run([sys.executable, "-m", "reconciler", *args, *common], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "USER": "oncall", **(env or {})})


def ops_harness(make_harness, *jobs):
    h = make_harness(job_token="deploy-job-token", jobs=list(jobs))
    h.triggers.mkdir(parents=True, exist_ok=True)
    return h


def history(h, name: str) -> list[dict]:
    return History(h.history).read(name)


def test_backfill_over_five_past_minutes_fires_exactly_those_a_repeat_none_and_a_dry_run_none(make_harness):
    h = ops_harness(make_harness, TICK_JOB)
    h.write("every-minute", MINUTELY)
    daemon = h.start()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start, end = (now - timedelta(minutes=5)).isoformat(), now.isoformat()
    five = [now - timedelta(minutes=m) for m in range(5, 0, -1)]

    dry = cli(h, "backfill", "every-minute", "--from", start, "--to", end, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert [line.split()[1] for line in dry.stdout.splitlines()[1:]] == [f"({t:%Y-%m-%dT%H:%M:%SZ})" for t in five]
    assert all(" fire: no run yet" in line for line in dry.stdout.splitlines()[1:])
    time.sleep(1.5)  # a turn of the daemon, which must find nothing to fire
    assert [r for r in h.sim.triggers("tick") if "backfill" in (r.param("cause") or "")] == []

    done = cli(h, "backfill", "every-minute", "--from", start, "--to", end, "--note", "cluster down", "--by", "alice")
    assert done.returncode == 0, done.stderr
    assert "5 backfill run(s) requested by alice" in done.stdout

    def backfilled():
        return [r for r in h.sim.triggers("tick") if "backfill by alice: cluster down" in (r.param("cause") or "")]

    wait_for(lambda: len(backfilled()) == 5, what="five backfilled POSTs")
    assert sorted(r.param("TICK") for r in backfilled()) == [t.isoformat() for t in five]
    wait_for(lambda: not daemon.executor.active())

    again = cli(h, "backfill", "every-minute", "--from", start, "--to", end)
    assert again.returncode == 0 and "0 backfill run(s) requested" in again.stdout
    assert "5 tick(s) had runs already" in again.stdout
    time.sleep(1.5)
    assert len(backfilled()) == 5
    lines = [e for e in history(h, "every-minute") if e["event"] == "requested"]
    me = pwd.getpwuid(os.getuid()).pw_name
    assert len(lines) == 5 and {(e["by"], e["os_user"]) for e in lines} == {("alice", me)}
    assert sorted(e["scheduled_for"] for e in lines) == [f"{t:%Y-%m-%dT%H:%M:%SZ}" for t in five]


def test_trigger_with_the_daemon_running_posts_once_within_10s_with_who_and_why_in_the_cause(make_harness):
    h = ops_harness(make_harness, TICK_JOB)
    h.write("regression", "job: tick\nparameters: {TICK: none}\ncause: nightly regression\n")
    h.start()
    wait_for(lambda: len(h.sim.triggers("tick")) == 1)
    asked = time.monotonic()
    result = cli(h, "trigger", "regression", "--note", "hotfix", "--by", "alice")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: len(h.sim.triggers("tick")) == 2, timeout=10, what="the requested run's POST")
    assert time.monotonic() - asked < 10
    cause = h.sim.triggers("tick")[1].param("cause")
    assert "hotfix" in cause and "alice" in cause and cause.startswith("nightly regression — requested by alice")
    time.sleep(1.5)
    assert len(h.sim.triggers("tick")) == 2  # once
    [line] = [e for e in history(h, "regression") if e["event"] == "requested"]
    assert (line["by"], line["note"], line["kind"]) == ("alice", "hotfix", "trigger") and line["os_user"]


def test_trigger_with_a_key_is_one_run_however_often_it_is_called_and_an_unknown_name_fails(make_harness):
    h = ops_harness(make_harness, TICK_JOB)
    h.write("regression", "job: tick\nparameters: {TICK: none}\n")
    first = cli(h, "trigger", "regression", "--key", "INC-7")
    second = cli(h, "trigger", "regression", "--key", "INC-7")
    other = cli(h, "trigger", "regression")
    assert first.returncode == second.returncode == other.returncode == 0
    assert "was requested before" in second.stdout
    once = cli(h, "run", "--once", "--wait", env={"JENKINS_URL": h.sim.url, "JENKINS_USER": USER,
                                                   "JENKINS_API_TOKEN": TOKEN, "JENKINS_JOB_TOKEN": "deploy-job-token"})
    assert once.returncode == 0, once.stderr
    assert len(h.sim.triggers("tick")) == 3  # the revision, the keyed request once, the request without a key
    unknown = cli(h, "trigger", "no/such")
    assert unknown.returncode == 1 and "no trigger no/such" in unknown.stderr


def test_a_pause_shows_in_status_its_ticks_are_skipped_and_after_resume_the_following_tick_fires(make_harness):
    h = ops_harness(make_harness, TICK_JOB)
    clock = FakeClock(T - timedelta(seconds=30))
    h.write("every-minute", MINUTELY)
    daemon = h.build(clock)
    daemon.bootstrap()
    daemon.pass_once()
    paused = cli(h, "pause", "every-minute", "--note", "incident", "--by", "alice")
    assert paused.returncode == 0, paused.stderr
    status = cli(h, "status")
    assert "paused" in status.stdout and "by alice" in status.stdout and "incident" in status.stdout
    [row] = json.loads(cli(h, "status", "--json").stdout)
    assert row["state"] == "paused" and row["detail"].startswith("paused by alice") and "incident" in row["detail"]
    planned = cli(h, "plan", "--json", env={"JENKINS_URL": h.sim.url}).stdout
    [verdict] = json.loads(planned)
    assert verdict["action"] == "paused" and "by alice" in verdict["detail"] and "(else: " in verdict["detail"]

    daemon.operations.turn()
    clock.set(T)
    assert daemon.tick() == []
    [skipped] = [r for r in h.runs("every-minute") if r.fire_key == tick_key(T)]
    assert skipped.status == "skipped" and "paused by alice" in skipped.last_error and "incident" in skipped.last_error
    assert h.sim.triggers("tick") == []

    assert cli(h, "resume", "every-minute").returncode == 0
    daemon.operations.turn()
    clock.set(T + timedelta(minutes=1))
    [fired] = daemon.tick()
    assert fired.fire_key == tick_key(T + timedelta(minutes=1))
    wait_for(lambda: len(h.sim.triggers("tick")) == 1)
    events = [e["event"] for e in history(h, "every-minute")]
    assert events[:3] == ["paused", "skipped", "resumed"] and "decided" in events


def test_a_one_shot_due_while_paused_waits_and_fires_on_resume_and_until_resumes_by_itself(make_harness):
    h = ops_harness(make_harness, TICK_JOB)
    clock = FakeClock(T)
    h.write("deploy", "job: tick\nparameters: {TICK: a}\n")
    assert cli(h, "pause", "deploy", "--note", "freeze for the demo", "--until", "2h").returncode == 0
    daemon = h.build(clock)
    daemon.bootstrap()
    assert daemon.pass_once() == []
    h.write("deploy", "job: tick\nparameters: {TICK: b}\n")
    daemon.reconcile(daemon.catalog.scan())
    assert h.sim.triggers("tick") == []
    clock.set(T + timedelta(hours=3))  # past --until (2 h from the real now)... on the fake clock too
    clock.now = time.time() + 3 * 3600
    fired = daemon.operations.turn()
    assert fired == []
    wait_for(lambda: len(h.sim.triggers("tick")) == 1)
    assert h.sim.triggers("tick")[0].param("TICK") == "b"
    resumed = [e for e in history(h, "deploy") if e["event"] == "resumed"]
    assert resumed and resumed[0]["by"] == "reconciler" and "--until" in resumed[0]["reason"]


def test_pause_after_failures_pauses_after_the_second_failure_and_the_third_revision_does_not_post(make_harness):
    h = ops_harness(make_harness, FAILING_JOB)
    env = {"JENKINS_URL": h.sim.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN,
           "JENKINS_JOB_TOKEN": "deploy-job-token"}
    spec = "job: broken\npause_after_failures: 2\nparameters: {{REV: '{}'}}\n"
    for rev in ("1", "2"):
        h.write("flaky", spec.format(rev))
        assert cli(h, "run", "--once", "--wait", env=env).returncode == 3
    [row] = json.loads(cli(h, "status", "--json").stdout)
    assert row["state"] == "paused" and row["detail"].startswith("paused after 2 failures by reconciler")
    h.write("flaky", spec.format("3"))
    third = cli(h, "run", "--once", "--wait", env=env)
    assert third.returncode == 0, third.stderr
    assert [r.param("REV") for r in h.sim.triggers("broken")] == ["1", "2"]
    [line] = [e for e in history(h, "flaky") if e["event"] == "paused"]
    assert line["reason"] == "after 2 failures" and line["failures"] == 2

    assert cli(h, "resume", "flaky").returncode == 0
    assert cli(h, "run", "--once", "--wait", env=env).returncode == 3  # the third revision, once resumed
    assert json.loads(cli(h, "status", "--json").stdout)[0]["state"] == "fired"  # one failure since: not paused


def test_a_backfill_of_a_forbid_schedule_fires_one_at_a_time_in_tick_order(make_harness):
    h = ops_harness(make_harness, SERIAL_JOB)
    h.write("serial", "job: slow\nschedule: '0 * * * *'\nconcurrency: forbid\nscheduled_time_parameter: TICK\n")
    daemon = h.start()
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    result = cli(h, "backfill", "serial", "--from", (now - timedelta(hours=3)).isoformat(), "--to", now.isoformat())
    assert "3 backfill run(s) requested" in result.stdout and "one at a time" in result.stdout
    for n in (1, 2, 3):
        wait_for(lambda n=n: len(h.sim.triggers("slow")) == n, what=f"backfill POST {n}")
        time.sleep(1.2)  # a turn or more: the next one waits for this build
        assert len(h.sim.triggers("slow")) == n
        wait_for(lambda n=n: any(b.number == n and b.building for b in h.sim.builds("slow")))
        h.sim.finish("slow", n, "SUCCESS")
    ticks = [r.param("TICK") for r in h.sim.triggers("slow")]
    assert ticks == sorted(ticks) and len(set(ticks)) == 3
    wait_for(lambda: not daemon.executor.active())


def test_a_fresh_store_abandons_a_request_never_posted_follows_one_jenkins_has_and_keeps_a_pause(make_harness):
    h = ops_harness(make_harness, TICK_JOB)
    h.write("regression", "job: tick\nparameters: {TICK: x}\n")
    for note in ("posted", "never posted"):
        assert cli(h, "trigger", "regression", "--note", note).returncode == 0
    assert cli(h, "pause", "regression", "--note", "incident").returncode == 0
    store = Store(h.state)
    [posted, never] = [r for r, _ in store.requested()]
    store.close()
    clock = FakeClock(T)
    daemon = h.build(clock)
    daemon.bootstrap()
    daemon.pass_once()  # writes the lines of both requests and the pause, which holds them and the revision
    client = Client(h.server())  # the first was posted, by a process that then lost its store
    client.trigger("tick", posted.parameters, posted.cause)
    client.close()
    History(h.history).decided(posted, clock.now)  # and its `decided` line reached the history
    h.stop()
    h.state.unlink()
    for suffix in ("-wal", "-shm"):
        (h.state.parent / (h.state.name + suffix)).unlink(missing_ok=True)

    daemon = h.build(clock)
    daemon.bootstrap()
    daemon.pass_once()
    wait_for(lambda: {r.run_id: r.status for r in h.runs("regression")}.get(posted.run_id) == "completed")
    statuses = {r.run_id: r.status for r in h.runs("regression")}
    assert statuses[never.run_id] == "abandoned"
    assert len(h.sim.triggers("tick")) == 1  # nothing posted from history
    assert daemon.operations.holds("regression")


def test_a_freeze_holds_requested_runs_but_one_made_with_override_freeze_fires(make_harness, tmp_path):
    h = ops_harness(make_harness, TICK_JOB)
    h.write("deploy", "job: tick\nparameters: {TICK: x}\n")
    now = datetime.now(UTC)
    config = tmp_path / "operator.yaml"
    config.write_text(f"freeze:\n  - name: release-week\n    from: {now - timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}\n"
                      f"    until: {now + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}\n")
    env = {"JENKINS_URL": h.sim.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN,
           "JENKINS_JOB_TOKEN": "deploy-job-token"}
    waits = cli(h, "trigger", "deploy", "--note", "routine", "--config", str(config))
    assert waits.returncode == 0 and "release-week" in waits.stdout and "waits for the window's end" in waits.stdout
    assert cli(h, "run", "--once", "--config", str(config), env=env).returncode == 0
    assert h.sim.triggers("tick") == []  # neither the revision nor the request: frozen
    forced = cli(h, "trigger", "deploy", "--note", "hotfix", "--override-freeze", "--config", str(config))
    assert forced.returncode == 0 and "--override-freeze: it fires anyway" in forced.stdout
    assert cli(h, "run", "--once", "--config", str(config), env=env).returncode == 0
    [posted] = h.sim.triggers("tick")
    assert "requested by oncall: hotfix" in posted.param("cause")
    [line] = [e for e in history(h, "deploy") if e["event"] == "requested" and e.get("override_freeze")]
    assert line["note"] == "hotfix"


def test_a_trigger_paused_after_its_failures_says_so_once_where_paused_messages_are_asked_for(notify_harness):  # noqa: F811
    harness, recorder = notify_harness()
    harness.start()
    for revision in (1, 2):
        harness.write("deploy", f"job: manual\nrun: {revision}\npause_after_failures: 2\n")
        wait_for(lambda revision=revision: len(harness.sim.builds("manual")) >= revision, what=f"build {revision}")
        harness.sim.finish("manual", revision, "FAILURE")
    wait_for(lambda: any(m["title"] == "deploy is paused" for m in recorder.messages()), what="the paused message")
    [paused] = [m for m in recorder.messages() if m["title"] == "deploy is paused"]
    assert "after 2 failures" in paused["message"] and "reconciler resume deploy" in paused["message"]
    harness.write("deploy", "job: manual\nrun: 3\npause_after_failures: 2\n")
    time.sleep(1.5)
    assert len(harness.sim.builds("manual")) == 2
    assert [m["title"] for m in recorder.messages()].count("deploy is paused") == 1
