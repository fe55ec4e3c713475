"""The daemon end to end: a real directory, a real SQLite file, the simulator over HTTP."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime

import pytest
import requests

from reconciler.core.runs import Run
from reconciler.jenkins.client import Client
from reconciler.repo.history import History
from reconciler.simulator import JobDef
from reconciler.store.sqlite import Store

from .conftest import TOKEN, USER, post, wait_for

DEPLOY = "job: deploy\nparameters:\n  ENV: staging\n  VERSION: '1.0'\ncause: deploy 1.0\n"


def test_a_committed_one_shot_fires_once_and_its_outcome_is_on_record(harness):
    harness.write("team/deploy", "job: manual\n")
    harness.start()
    wait_for(lambda: harness.sim.triggers("manual"), what="the POST")
    wait_for(lambda: harness.runs("team/deploy")[0].status == "building", what="the build to start")
    harness.sim.finish("manual", 1, "UNSTABLE")
    wait_for(lambda: harness.runs("team/deploy")[0].status == "completed", what="the outcome")
    [run] = harness.runs("team/deploy")
    assert (run.result, run.build_number) == ("UNSTABLE", 1)
    assert run.build_url == harness.sim.url + "job/manual/1/"
    wait_for(lambda: harness.events("team/deploy") == ["decided", "queued", "started", "completed"])
    completed = harness.logs.wait_for("build_completed")
    assert completed[0]["trigger"] == "team/deploy" and completed[0]["run_id"] == run.run_id


def test_comments_do_not_refire_a_change_to_parameters_does_and_deleting_fires_nothing(harness):
    harness.write("deploy", DEPLOY)
    harness.start()
    wait_for(lambda: len(harness.sim.triggers("deploy")) == 1)
    harness.write("deploy", "# reformatted\njob: deploy\ncause: other words\n"
                            "parameters: {VERSION: '1.0', ENV: staging}\n")
    harness.write("marker", "job: plain\n")  # processed after the edit above: once it fires, the edit was seen
    wait_for(lambda: harness.sim.triggers("plain"))
    assert len(harness.sim.triggers("deploy")) == 1

    harness.write("deploy", DEPLOY.replace("'1.0'", "'1.1'"))
    wait_for(lambda: len(harness.sim.triggers("deploy")) == 2)
    assert harness.sim.triggers("deploy")[-1].param("VERSION") == "1.1"

    (harness.triggers / "deploy.yaml").unlink()
    harness.write("marker2", "job: plain\nrun: 2\n")
    wait_for(lambda: len(harness.sim.triggers("plain")) == 2)
    assert len(harness.sim.triggers("deploy")) == 2
    assert harness.events("deploy").count("decided") == 2  # history is kept


def test_a_broken_spec_is_reported_once_with_its_position_and_harms_no_other(harness):
    harness.write("good-1", "job: plain\n")
    harness.write("broken", "job: plain\nparamters:\n  A: 1\n")
    harness.write("good-2", "job: deploy\nparameters: {ENV: prod}\n")
    daemon = harness.start(resync_interval=0.02)
    wait_for(lambda: len(harness.sim.triggers()) == 2)
    wait_for(lambda: daemon.passes >= 5, what="several resync passes")
    invalid = [e for e in harness.logs.events() if e["event"] == "spec_invalid"]
    assert len(invalid) == 1
    assert invalid[0]["errors"] == ["broken.yaml:2:1: unknown key 'paramters' (did you mean 'parameters'?)"]
    assert invalid[0]["level"] == "error"


def test_a_file_whose_name_is_not_utf8_is_reported_once_by_a_readable_name_and_harms_no_other(harness):
    harness.write("good-1", "job: plain\n")
    with open(os.fsencode(harness.triggers) + b"/caf\xe9.yaml", "wb") as f:  # Latin-1, as some editors save
        f.write(b"job: plain\n")
    harness.write("good-2", "job: deploy\nparameters: {ENV: prod}\n")
    daemon = harness.start(resync_interval=0.02)
    wait_for(lambda: len(harness.sim.triggers()) == 2)
    wait_for(lambda: daemon.passes >= 5, what="several resync passes")
    invalid = [e for e in harness.logs.events() if e["event"] == "spec_invalid"]
    assert [e["errors"] for e in invalid] == [["caf\\xe9.yaml:1:1: the file name is not UTF-8 text: rename the file"]]


def test_a_full_state_store_holds_fires_back_until_it_has_room_and_then_fires_each_once(harness):
    daemon = harness.start(resync_interval=0.05)
    with daemon.store._lock:  # SQLite's own size limit, set on each connection: the store is full, as on a full disk
        pages = daemon.store._db.execute("PRAGMA page_count").fetchone()[0]
        for db in (daemon.store._db, daemon.store._durable):
            db.execute(f"PRAGMA max_page_count = {pages}")
    staging = harness.tmp / "checkout"  # sixty specs land at once, as a checkout does
    staging.mkdir()
    for i in range(60):
        (staging / f"t{i:02}.yaml").write_text("job: plain\n")
    os.rename(staging, harness.triggers / "checkout")
    wait_for(lambda: any(e["event"] == "pass_failed" for e in harness.logs.events()), what="a failed pass")
    assert harness.sim.triggers() == []  # not recorded, not fired
    assert any("database or disk is full" in p for p in daemon.readiness_problems())
    with daemon.store._lock:
        for db in (daemon.store._db, daemon.store._durable):
            db.execute("PRAGMA max_page_count = 1073741823")  # room again
    wait_for(lambda: len(harness.sim.triggers("plain")) == 60, what="every trigger fired")
    wait_for(lambda: daemon.readiness_problems() == [], what="ready again")
    passes = daemon.passes
    wait_for(lambda: daemon.passes >= passes + 5, what="more passes")
    assert len(harness.sim.triggers("plain")) == 60
    assert sorted(r.trigger for r in harness.runs()) == [f"checkout/t{i:02}" for i in range(60)]


def test_a_run_whose_history_line_could_not_be_written_is_taken_up_by_the_next_pass(harness):
    daemon = harness.start(resync_interval=0.05)
    (harness.history / "deploy.jsonl").mkdir(parents=True)  # where its history file goes: unwritable
    harness.write("deploy", "job: plain\n")
    wait_for(lambda: any(e["event"] == "history_write_failed" for e in harness.logs.events()))
    assert harness.sim.triggers() == []  # the line comes before the POST
    wait_for(lambda: any(e["event"] == "resume_failed" for e in harness.logs.events()),
             what="a pass that could not take it up yet (its history unreadable)")
    (harness.history / "deploy.jsonl").rmdir()
    wait_for(lambda: len(harness.sim.triggers("plain")) == 1, what="the run taken up again")
    passes = daemon.passes
    wait_for(lambda: daemon.passes >= passes + 5, what="more passes")
    assert len(harness.sim.triggers("plain")) == 1
    assert harness.events("deploy")[0] == "decided"


def test_a_spec_changed_while_its_previous_run_is_still_queued(make_harness):
    harness = make_harness(executors=1)
    harness.write("blocker", "job: manual\n")
    harness.start()
    wait_for(lambda: harness.runs("blocker") and harness.runs("blocker")[0].status == "building")
    harness.write("deploy", DEPLOY)
    wait_for(lambda: harness.runs("deploy") and harness.runs("deploy")[0].status == "queued")
    harness.write("deploy", DEPLOY.replace("'1.0'", "'2.0'"))
    wait_for(lambda: len(harness.sim.triggers("deploy")) == 2)
    harness.sim.finish("manual", 1)
    for number in (1, 2):
        wait_for(lambda n=number: len(harness.sim.builds("deploy")) >= n)
        harness.sim.finish("deploy", number)
    wait_for(lambda: {r.status for r in harness.runs("deploy")} == {"completed"})
    assert sorted(r.build_number for r in harness.runs("deploy")) == [1, 2]


def test_a_hundred_specs_arriving_in_one_git_checkout_each_fire_once(harness):
    repo = harness.tmp / "repo"
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "triggers").mkdir()
    (repo / "triggers" / "README.md").write_text("specs\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "empty"], check=True)
    subprocess.run([*git, "checkout", "-qb", "many"], check=True)
    for i in range(100):
        path = repo / "triggers" / f"batch-{i // 10}" / f"t{i:03}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"job: team a/dëploy ü\nparameters: {{TARGET: t{i}}}\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "a hundred"], check=True)
    subprocess.run([*git, "checkout", "-q", "main"], check=True)

    os.symlink(repo / "triggers", harness.triggers)
    harness.start()
    subprocess.run([*git, "checkout", "-q", "many"], check=True)
    wait_for(lambda: len(harness.sim.triggers()) == 100, what="100 POSTs")
    targets = sorted(r.param("TARGET") for r in harness.sim.triggers())
    assert targets == sorted(f"t{i}" for i in range(100))
    assert len(harness.sim.builds("team a/dëploy ü")) == 100


def test_a_burst_keeps_no_more_posts_in_flight_than_the_servers_concurrency(harness):
    harness.concurrency = 3
    harness.sim.fault(path="/build$", method="POST", latency=0.05)  # each POST takes a while to answer
    harness.start()
    staging = harness.tmp / "checkout"
    staging.mkdir()
    for i in range(12):
        (staging / f"t{i}.yaml").write_text("job: plain\n")
    os.rename(staging, harness.triggers / "checkout")
    wait_for(lambda: len(harness.sim.triggers("plain")) == 12, what="all twelve POSTs")
    assert len({r.peer for r in harness.sim.triggers("plain")}) == 3  # three at a time, on three connections


def test_runs_of_one_job_are_followed_with_one_read_of_its_builds_not_one_per_run(make_harness):
    harness = make_harness(executors=64)
    for i in range(30):
        harness.write(f"t{i:02}", f"job: team a/dëploy ü\nparameters: {{TARGET: t{i}}}\n")
    harness.start()
    wait_for(lambda: [r.status for r in harness.runs()] == ["completed"] * 30, what="30 runs completed")
    assert sorted(r.build_number for r in harness.runs()) == list(range(1, 31))
    reads = [r.path for r in harness.sim.requests if r.method == "GET"]
    per_run = [p for p in reads if re.fullmatch(r"/queue/item/\d+/api/json|/job/team a/job/dëploy ü/\d+/api/json", p)]
    per_job = [p for p in reads if p == "/job/team a/job/dëploy ü/api/json"]
    assert per_job and len(per_run) < 10, f"{len(per_job)} reads of the job, {len(per_run)} of single runs"


def test_a_restart_neither_refires_nor_loses_a_run(harness):
    harness.write("deploy", "job: manual\n")
    harness.start()
    wait_for(lambda: harness.runs("deploy") and harness.runs("deploy")[0].status == "building")
    harness.stop()
    harness.sim.finish("manual", 1, "SUCCESS")
    harness.start()
    wait_for(lambda: harness.runs("deploy")[0].status == "completed", what="the resumed run to complete")
    assert len(harness.sim.triggers("manual")) == 1
    assert harness.runs("deploy")[0].result == "SUCCESS"


def test_a_fresh_state_store_is_rebuilt_from_history_and_fires_nothing_again(harness):
    harness.write("deploy", DEPLOY)
    harness.start()
    wait_for(lambda: harness.runs("deploy") and harness.runs("deploy")[0].status == "building")
    harness.sim.finish("deploy", 1)
    wait_for(lambda: harness.runs("deploy")[0].status == "completed")
    harness.stop()
    for suffix in ("", "-wal", "-shm"):
        (harness.tmp / f"state.db{suffix}").unlink(missing_ok=True)
    harness.start()
    assert [r.status for r in harness.runs("deploy")] == ["completed"]
    assert len(harness.sim.triggers("deploy")) == 1
    assert any(e["event"] == "state_rebuilt" for e in harness.logs.events())


# -- kill -9 at each line between the decision and the outcome ---------------------------------

def crash_state(harness, status: str, *, tag_param: str | None = None, job: str = "manual",
                parameters=None) -> Run:
    """Leave the store exactly as a process killed at that line would have left it."""
    store = Store(harness.state)
    run = Run(run_id="deadbeef00000001", trigger="deploy", fire_key="rev-1", server="default", job=job,
              parameters=parameters, cause="x [reconciler run deadbeef00000001]", tag_param=tag_param,
              status=status, decided_at=1.0, attempts=0 if status == "decided" else 1)
    store.decide([run])
    store.close()
    return run


@pytest.mark.parametrize("history_written", [False, True], ids=["before-its-history-line", "after-it"])
def test_killed_after_the_decision_before_the_post_fires_on_restart(harness, history_written):
    run = crash_state(harness, "decided")
    if history_written:
        History(harness.history).decided(run, run.decided_at)
    harness.start()
    wait_for(lambda: harness.runs("deploy")[0].status == "building")
    assert len(harness.sim.triggers("manual")) == 1
    wait_for(lambda: harness.events("deploy") == ["decided", "queued", "started"],
             what="one decided line, whichever side of it the kill fell")


def received_but_not_recorded(harness) -> None:
    """Jenkins got the POST (with the run id in the cause note) but the process died before recording it."""
    params = (("VERSION", "1"),)
    harness.sim.state.jenkins.jobs["deploy"].duration = None
    post(Client(harness.server()), "deploy", params, "x [reconciler run deadbeef00000001]")
    crash_state(harness, "posting", job="deploy", parameters=params)


def test_killed_mid_post_that_jenkins_received_is_found_by_its_cause_not_fired_again(make_harness):
    harness = make_harness(job_token="deploy-job-token")
    received_but_not_recorded(harness)
    harness.start()
    wait_for(lambda: harness.runs("deploy")[0].status == "building")
    wait_for(lambda: any(e["event"] == "fire_found" for e in harness.logs.events()), what="the fire_found line")
    assert len(harness.sim.triggers("deploy")) == 1


def test_a_run_whose_lookup_fails_stays_posting_so_a_kill_then_still_looks_before_posting(make_harness):
    harness = make_harness(job_token="deploy-job-token")
    received_but_not_recorded(harness)
    harness.sim.fault(path="/queue/api/json$", status=503, times=1000)
    harness.start()
    wait_for(lambda: any(e["event"] == "fire_retrying" for e in harness.logs.events()), what="a failed lookup")
    assert harness.runs("deploy")[0].status == "posting"
    harness.stop()  # as good as a kill here: the store is all the next process has
    harness.sim.clear_faults()
    harness.start()
    wait_for(lambda: harness.runs("deploy")[0].status == "building")
    assert len(harness.sim.triggers("deploy")) == 1


def test_killed_mid_post_that_never_arrived_is_fired_once_on_restart(make_harness):
    harness = make_harness(job_token="deploy-job-token")
    crash_state(harness, "posting", job="deploy", parameters=(("VERSION", "1"),))
    harness.start()
    wait_for(lambda: harness.runs("deploy")[0].status == "building")
    assert len(harness.sim.triggers("deploy")) == 1


def test_killed_mid_post_without_a_tag_is_recorded_unknown_rather_than_risk_a_second_build(harness):
    """Nothing Jenkins keeps can say whether an untagged POST arrived: the record says so, and why."""
    crash_state(harness, "posting")
    harness.start()
    wait_for(lambda: harness.runs("deploy")[0].status == "unknown")
    assert harness.sim.triggers() == []
    error = harness.runs("deploy")[0].last_error
    assert "may or may not have built it" in error and "no job token, no run_id_parameter" in error
    assert "bump `run`" in error
    wait_for(lambda: harness.events("deploy") == ["unknown"])


def test_a_process_that_lost_state_and_history_finds_the_build_instead_of_posting_again(make_harness):
    """A fresh pod whose predecessor's last lines never reached git: the run's id follows from the
    trigger and its revision, so the new process looks it up and follows the build it finds."""
    harness = make_harness(job_token="deploy-job-token")
    harness.write("deploy", DEPLOY)
    harness.start()
    wait_for(lambda: harness.runs("deploy")[0].status == "building")
    [before] = harness.runs("deploy")
    harness.stop()
    harness.state.unlink()
    shutil.rmtree(harness.history)
    harness.start()
    wait_for(lambda: harness.runs("deploy") and harness.runs("deploy")[0].status == "building")
    assert len(harness.sim.triggers("deploy")) == 1
    assert harness.runs("deploy")[0].run_id == before.run_id
    assert harness.runs("deploy")[0].build_url == before.build_url
    assert harness.events("deploy")[:2] == ["decided", "started"]


def test_a_fresh_store_posts_what_jenkins_never_saw_after_one_lookup(make_harness):
    harness = make_harness(job_token="deploy-job-token")
    harness.write("deploy", DEPLOY)
    harness.start()
    wait_for(lambda: harness.runs("deploy") and harness.runs("deploy")[0].status == "building")
    assert len(harness.sim.triggers("deploy")) == 1
    searched = [r for r in harness.sim.requests if r.path == "/queue/api/json"]
    assert len(searched) == 1, "an empty store looks each first decision up once"


def db_status(harness) -> str | None:
    """The one run's status as the store has it, read as another process would."""
    try:
        db = sqlite3.connect(harness.state)
        row = db.execute("SELECT status FROM runs").fetchone()
        db.close()
        return row and row[0]
    except sqlite3.Error:
        return None


def daemon_process(harness) -> subprocess.Popen[bytes]:
    """`reconciler run` on the harness's directories as its own process, to be killed for real."""
    env = {**os.environ, "JENKINS_URL": harness.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN,
           "JENKINS_JOB_TOKEN": harness.job_token or ""}
    return subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--triggers", str(harness.triggers),
                             "--state", str(harness.state), "--history", str(harness.history)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def daemon_process_with_a_slow_post(make_harness):
    """`reconciler run` as its own process, with the POST it will make held up for a second in Jenkins."""
    harness = make_harness(job_token="deploy-job-token")
    slow = harness.sim.fault(path="/build$", latency=1.0, times=1)
    harness.write("deploy", "job: manual\n")
    return harness, slow, daemon_process(harness)


def test_a_real_kill_9_during_the_post(make_harness):
    """The process dies while Jenkins is still answering the POST; Jenkins builds all the same."""
    harness, slow, proc = daemon_process_with_a_slow_post(make_harness)
    try:
        wait_for(lambda: db_status(harness) == "posting" and slow.times == 0, what="the POST to reach Jenkins")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    wait_for(lambda: harness.sim.builds("manual"), what="Jenkins to act on the POST")
    harness.start()
    wait_for(lambda: harness.runs("deploy")[0].status == "building")
    assert len(harness.sim.builds("manual")) == 1
    assert len([r for r in harness.sim.requests if r.path == "/job/manual/build"]) == 1


def test_a_real_kill_9_in_the_middle_of_a_burst_leaves_every_trigger_fired_exactly_once(make_harness):
    """Killed with POSTs answered, in flight, marked but unsent, and undecided: after a restart each
    of the 150 triggers has reached Jenkins once (the run id in the cause finds those that did)."""
    harness = make_harness(job_token="deploy-job-token")
    harness.sim.fault(path="/buildWithParameters$", latency=0.2)
    for i in range(150):
        harness.write(f"burst/v{i:03}", f"job: deploy\nparameters: {{ENV: staging, VERSION: 'v{i}'}}\n")
    proc = daemon_process(harness)
    try:
        wait_for(lambda: len(harness.sim.triggers("deploy")) >= 40, 60, "the burst to be under way")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    posted = len(harness.sim.triggers("deploy"))
    assert posted < 150, "the kill came after the burst: nothing was tested"
    harness.sim.clear_faults()
    time.sleep(0.5)  # Jenkins finishes the POSTs it was still answering when the process died

    harness.start()
    wait_for(lambda: len(harness.runs()) == 150 and
             not [r for r in harness.runs() if r.status in ("decided", "posting")], 60, "every run to be posted")
    versions = sorted(r.param("VERSION") for r in harness.sim.triggers("deploy"))
    assert versions == sorted(f"v{i}" for i in range(150))
    assert not [r for r in harness.runs() if r.status in ("lost", "failed")]


# -- Jenkins misbehaving ---------------------------------------------------------------------

def test_fires_with_csrf_protection_that_demands_a_crumb(make_harness):
    harness = make_harness(csrf_exempt_api_token=False)
    harness.write("deploy", "job: plain\n")
    harness.start()
    wait_for(lambda: harness.runs("deploy") and harness.runs("deploy")[0].status == "completed")
    assert [r.status for r in harness.sim.requests if r.path == "/job/plain/build"] == [403, 201]


def test_an_sso_redirect_is_refused_with_a_plain_reason(harness):
    harness.sim.sso()
    harness.write("deploy", "job: plain\n")
    harness.start()
    wait_for(lambda: harness.runs("deploy") and harness.runs("deploy")[0].status == "refused")
    reason = harness.runs("deploy")[0].last_error
    assert "is an SSO proxy in front of Jenkins?" in reason
    refused = harness.logs.wait_for("fire_refused")
    assert refused[0]["trigger"] == "deploy"
    assert not [r for r in harness.sim.requests if r.path.startswith("/sso")]
    wait_for(lambda: harness.events("deploy") == ["decided", "refused"])


def test_503_then_recovery_builds_once(harness):
    harness.sim.fault(path="/build$", status=503, times=6)
    harness.write("deploy", "job: plain\n")
    harness.start()
    wait_for(lambda: harness.runs("deploy") and harness.runs("deploy")[0].status == "completed")
    assert len(harness.sim.builds("plain")) == 1
    assert any(e["event"] == "fire_retrying" for e in harness.logs.events())


def test_stopping_does_not_wait_out_a_retry_delay(harness):
    harness.retry_min = 60.0
    harness.sim.fault(path="/build$", status=503)
    harness.write("deploy", "job: plain\n")
    harness.start()
    wait_for(lambda: any(e["event"] == "fire_retrying" for e in harness.logs.events()), what="a retry to wait out")
    started = time.monotonic()
    harness.stop()
    assert time.monotonic() - started < 10  # not the minute until the next attempt
    assert harness.runs("deploy")[0].status == "decided"  # open, for the next start to fire


def test_a_lost_response_is_looked_up_before_posting_again(make_harness):
    harness = make_harness(job_token="deploy-job-token")
    harness.sim.fault(path="/build$", drop="after", times=1)
    harness.write("deploy", "job: manual\n")
    harness.start()
    wait_for(lambda: harness.runs("deploy") and harness.runs("deploy")[0].status == "building")
    assert len(harness.sim.builds("manual")) == 1


def test_a_job_that_drops_the_cause_note_is_called_out_once(make_harness):
    harness = make_harness(job_token="deploy-job-token")
    harness.write("a", "job: plain\n")  # `plain` has no build token configured in Jenkins
    harness.write("b", "job: manual\n")  # `manual` has one
    harness.start()
    wait_for(lambda: len(harness.runs()) == 2 and {r.status for r in harness.runs()} <= {"building", "completed"})
    wait_for(lambda: harness.runs("a")[0].status == "completed")
    dropped = [e for e in harness.logs.events() if e["event"] == "cause_note_dropped"]
    assert [e["trigger"] for e in dropped] == ["a"]


def test_secrets_appear_in_no_log_history_or_state(make_harness):
    harness = make_harness(job_token="deploy-job-token")
    harness.write("deploy", DEPLOY)
    harness.write("nope", "job: does-not-exist\n")
    harness.start()
    wait_for(lambda: harness.runs("nope") and harness.runs("nope")[0].status == "refused")
    wait_for(lambda: harness.runs("deploy") and harness.runs("deploy")[0].status == "building")
    harness.stop()
    written = harness.logs.getvalue() + "".join(p.read_text() for p in harness.history.rglob("*.jsonl"))
    written += harness.state.read_bytes().decode("latin-1")
    for secret in (TOKEN, "deploy-job-token"):
        assert secret not in written


def test_a_spec_written_as_the_first_pass_ends_fires_without_waiting_for_a_resync(harness):
    """Between the first scan and the watch being in place, a change would go unseen until the
    resync (an hour here): the watch starts before the scan, and once it is in place the daemon
    scans again."""
    harness.start(resync_interval=3600, wait=False)
    wait_for(lambda: "pass_completed" in harness.logs.getvalue(), what="the first pass")
    harness.write("early", "job: deploy\nparameters: {VERSION: '1'}\n")
    wait_for(lambda: len(harness.sim.triggers()) == 1, timeout=10, what="the early spec's POST")
    assert [r.trigger for r in harness.runs()] == ["early"]


def test_jenkins_receives_a_number_as_it_was_written(harness):
    harness.start()
    harness.write("release", "job: deploy\nparameters: {VERSION: 1.10, BUILD: 007}\n")
    wait_for(lambda: len(harness.sim.triggers()) == 1, what="the release POST")
    [build] = harness.sim.triggers()
    assert (build.param("VERSION"), build.param("BUILD")) == ("1.10", "007")


def test_following_git_sync_symlink_swaps(harness):
    """Do what git-sync does: a new worktree, a symlink made beside the old and renamed over it."""
    import shutil

    root = harness.tmp / "git"
    link = root / "repo"

    def publish(n: int) -> None:
        worktree = root / ".worktrees" / f"rev{n}"
        (worktree / "triggers").mkdir(parents=True)
        for i in range(n + 1):
            spec = f"job: team a/dëploy ü\nparameters: {{TARGET: s{i}}}\n"
            (worktree / "triggers" / f"spec{i}.yaml").write_text(spec)
        tmp = root / f".repo-{n}.tmp"
        os.symlink(worktree, tmp)
        os.replace(tmp, link)
        old = root / ".worktrees" / f"rev{n - 1}"
        if old.exists():
            shutil.rmtree(old)

    publish(0)
    harness.triggers.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(link / "triggers", harness.triggers)
    harness.start()
    wait_for(lambda: len(harness.sim.triggers()) == 1)
    for n in range(1, 8):
        publish(n)
        wait_for(lambda n=n: len(harness.sim.triggers()) == n + 1, timeout=5, what=f"spec{n} after swap {n}")
    targets = sorted(r.param("TARGET") for r in harness.sim.triggers())
    assert targets == sorted(f"s{i}" for i in range(8))  # each once: unchanged specs never re-fire


def test_sigterm_during_a_post_finishes_recording_it_and_a_restart_completes_it(make_harness):
    """Inside a pod's grace period: the POST under way is answered and recorded, nothing is half-written."""
    harness, slow, proc = daemon_process_with_a_slow_post(make_harness)
    wait_for(lambda: slow.times == 0, what="the POST to reach Jenkins")
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=25)[0].decode()
    assert proc.returncode == 0, output
    [run] = harness.runs("deploy")
    assert run.status == "queued" and run.queue_url
    assert harness.events("deploy") == ["decided", "queued"]
    assert '"daemon_stopped"' in output and '"in_flight": 1' in output
    harness.start()
    wait_for(lambda: harness.runs("deploy")[0].status == "building")
    assert len(harness.sim.builds("manual")) == 1


# -- Real Jenkins' ways ----------------------------------------------------------------------

def test_killed_while_posting_under_another_host_name_than_jenkins_root_url_builds_once(make_harness):
    """Jenkins writes its own root URL into the queue item; the lookup must still know it for our job."""
    harness = make_harness(job_token="deploy-job-token", quiet_period=3)
    harness.other_name = True
    slow = harness.sim.fault(path="/build$", method="POST", process=True, latency=1.0, times=1)
    harness.write("deploy", "job: manual\n")
    proc = daemon_process(harness)
    try:
        wait_for(lambda: db_status(harness) == "posting" and slow.times == 0 and harness.sim.state.jenkins.queue,
                 what="Jenkins to have queued the POST whose answer is still on its way")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    [item] = harness.sim.state.jenkins.queue.values()
    assert item.state == "waiting"  # still in the quiet period: a second POST now would be a second item later
    harness.start()
    wait_for(lambda: harness.runs("deploy")[0].status == "queued" and
             any(e["event"] == "fire_found" for e in harness.logs.events()), what="the run to be found")
    harness.sim.state.jenkins.quiet_period = 0
    wait_for(lambda: harness.runs("deploy")[0].status == "building", what="the build to start")
    assert len([r for r in harness.sim.requests if r.path == "/job/manual/build"]) == 1
    assert len(harness.sim.builds("manual")) == 1
    assert harness.runs("deploy")[0].queue_url.startswith(harness.url)  # rebuilt on the address we use


@pytest.mark.parametrize(("version", "status"), [("2.300", 201), ("2.400", 303), ("2.479.3", 303)])
def test_a_retry_that_joins_the_item_already_waiting_is_followed_in_every_answer_style(make_harness, version,
                                                                                         status):
    """An untagged run whose answer was lost is posted again at once and coalesces with the first."""
    harness = make_harness(quiet_period=1, version=version)
    harness.sim.fault(path="/buildWithParameters$", method="POST", drop="after", times=1)
    harness.write("deploy", DEPLOY)
    harness.start()
    wait_for(lambda: harness.runs("deploy")[0].status == "building", what="the coalesced run to build")
    posts = [r.status for r in harness.sim.requests if r.path == "/job/deploy/buildWithParameters"]
    assert posts == [201, status]  # the first processed (its answer dropped), the second joined it
    assert len(harness.sim.builds("deploy")) == 1
    posted = [e for e in harness.logs.events() if e["event"] == "fire_posted"]
    assert len(posted) == 1 and ("joined" in posted[0]) == (status == 303)


def test_a_freestyle_job_builds_two_specs_one_after_the_other(harness):
    harness.job_token = "deploy-job-token"
    harness.write("first", "job: serial\nparameters: {N: '1'}\n")
    harness.write("second", "job: serial\nparameters: {N: '2'}\n")
    harness.start()
    wait_for(lambda: sorted(r.status for r in harness.runs()) == ["building", "queued"], what="one to build")
    waiting = next(r for r in harness.runs() if r.status == "queued")
    item = requests.get(waiting.queue_url + "api/json", auth=(USER, TOKEN), timeout=10).json()
    assert item["_class"] == "hudson.model.Queue$BlockedItem"
    harness.sim.finish("serial", 1, "SUCCESS")
    wait_for(lambda: sorted(r.status for r in harness.runs()) == ["building", "completed"], what="the next")
    harness.sim.finish("serial", 2, "FAILURE")
    wait_for(lambda: sorted((r.status, r.result) for r in harness.runs()) ==
             [("completed", "FAILURE"), ("completed", "SUCCESS")], what="both outcomes")
    completed = harness.logs.wait_for("build_completed", 2)
    assert {e["result"]: e["level"] for e in completed} == {"SUCCESS": "info", "FAILURE": "warning"}


def test_a_pipeline_job_end_to_end(harness):
    harness.job_token = "deploy-job-token"
    harness.write("pipeline", "job: pipe\nparameters: {N: '7'}\n")
    harness.start()
    wait_for(lambda: harness.runs("pipeline")[0].status == "building", what="the pipeline to run")
    harness.sim.finish("pipe", 1, "UNSTABLE")
    wait_for(lambda: harness.runs("pipeline")[0].status == "completed", what="its outcome")
    assert harness.runs("pipeline")[0].result == "UNSTABLE"
    wait_for(lambda: harness.events("pipeline") == ["decided", "queued", "started", "completed"])


def test_a_tagged_run_whose_queue_item_jenkins_forgot_is_posted_again_once(make_harness):
    harness = make_harness(job_token="deploy-job-token", quiet_period=60)
    harness.write("deploy", "job: manual\n")
    harness.start()
    wait_for(lambda: harness.runs("deploy")[0].status == "queued", what="the run to be queued")
    harness.sim.restart()  # the queue is forgotten: the item never ran, and no build carries the run id
    harness.sim.state.jenkins.quiet_period = 0
    wait_for(lambda: harness.runs("deploy")[0].status == "building", what="the run posted again to build")
    assert len([r for r in harness.sim.requests if r.path == "/job/manual/build"]) == 2
    assert len(harness.sim.builds("manual")) == 1
    assert [e["event"] for e in harness.logs.events() if e["event"] == "fire_reposted"] == ["fire_reposted"]


def test_a_500_after_jenkins_queued_the_build_is_looked_up_not_posted_again(make_harness):
    """The seed's intermittent "Failed to persist config.xml": processed, then an error."""
    harness = make_harness(job_token="deploy-job-token")
    harness.sim.fault(path="/build$", method="POST", status=500, process=True, times=1)
    harness.write("deploy", "job: manual\n")
    harness.start()
    wait_for(lambda: harness.runs("deploy")[0].status == "building", what="the build to be found and followed")
    wait_for(lambda: any(e["event"] == "fire_found" for e in harness.logs.events()), what="the log line, "
             "written just after the store says building")
    assert [r.status for r in harness.sim.requests if r.path == "/job/manual/build"] == [500]
    assert len(harness.sim.builds("manual")) == 1


# -- Refused is not fired ------------------------------------------------------------------------

def test_a_refusal_is_not_a_fire_the_run_is_posted_again_once_jenkins_accepts(harness):
    """A job that does not exist yet: 404, and the revision is not done. Once the job exists, it fires."""
    harness.refused_min = 0.05
    harness.write("later", "job: not-yet\n")
    harness.start()
    wait_for(lambda: harness.runs("later") and harness.runs("later")[0].status == "refused", what="the refusal")
    assert "404" in harness.runs("later")[0].last_error
    harness.sim.state.jenkins.jobs["not-yet"] = JobDef("not-yet", concurrent=True)
    harness.sim.state.jenkins.builds["not-yet"] = {}
    wait_for(lambda: harness.runs("later")[0].status in ("building", "completed"), what="the run posted again")
    [run] = harness.runs("later")
    assert len(harness.sim.builds("not-yet")) == 1 and run.attempts >= 2
    assert "refused" in harness.events("later") and "queued" in harness.events("later")


def test_a_refused_lookup_waits_longer_after_each_refusal_as_a_refused_post_does(make_harness):
    """A job token and a fresh store: each run is looked up before its POST. An SSO or a token without read
    permission answers that lookup 401: each refusal doubles the wait (refused_min 1 s here), as after a
    refused POST, instead of asking again every refused_min forever."""
    harness = make_harness(job_token="deploy-job-token")
    harness.refused_min = 1.0
    harness.sim.fault(path="^/queue/api/json", method="GET", status=401, times=3)
    harness.write("deploy", "job: manual\n")
    harness.start()
    wait_for(lambda: harness.sim.triggers("manual"), timeout=30, what="the POST once the lookups are answered")
    refusals = [e for e in harness.logs.events() if e["event"] == "fire_refused"]
    assert [e["retry_in"] for e in refusals] == [1, 2, 4]
    at = [datetime.fromisoformat(e["timestamp"]).timestamp() for e in refusals]
    waited = [later - earlier for earlier, later in itertools.pairwise(at)]
    assert 1 <= waited[0] < 7 and 2 <= waited[1] < 8, waited  # kept to, and not left to the loop's 10 s heartbeat
    assert all("looking the run up before posting it" in e["error"] and e["status"] == 401 for e in refusals)
    [run] = harness.runs("deploy")
    assert run.attempts == 4 and len(harness.sim.triggers("manual")) == 1
    assert harness.events("deploy")[:4] == ["decided", "refused", "refused", "refused"]


def test_reconciler_retry_makes_a_refused_run_due_at_once(harness):
    harness.refused_min = 3600.0  # without `retry`, an hour
    harness.sim.fault(path="/build$", status=403, times=1)
    harness.write("deploy", "job: plain\n")
    harness.start()
    wait_for(lambda: harness.runs("deploy") and harness.runs("deploy")[0].status == "refused")
    result = subprocess.run([sys.executable, "-m", "reconciler", "retry", "deploy", "--state", str(harness.state)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "1 refused run due again" in result.stderr
    wait_for(lambda: harness.runs("deploy")[0].status == "completed", timeout=30, what="the retried run")
    assert len(harness.sim.builds("plain")) == 1


def test_a_refused_run_whose_spec_changed_is_superseded_not_retried(harness):
    harness.refused_min = 0.05
    harness.write("deploy", "job: not-there\n")
    harness.start()
    wait_for(lambda: harness.runs("deploy") and harness.runs("deploy")[0].status == "refused")
    harness.write("deploy", "job: plain\n")  # the fix: a new revision, which fires
    wait_for(lambda: sorted(r.status for r in harness.runs("deploy")) == ["completed", "failed"])
    old = next(r for r in harness.runs("deploy") if r.status == "failed")
    assert old.job == "not-there" and "the spec changed since" in old.last_error


def test_a_closed_stdout_costs_the_log_lines_not_the_daemon(harness):
    """A pipe whose reader exited: writing a log line raises BrokenPipeError."""
    read, write = os.pipe()
    os.close(read)
    env = {**os.environ, "JENKINS_URL": harness.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN}
    harness.triggers.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--triggers", str(harness.triggers),
                             "--state", str(harness.state), "--history", str(harness.history)],
                            env=env, stdout=write, stderr=subprocess.DEVNULL)
    os.close(write)
    try:
        harness.write("later", "job: plain\n")
        wait_for(lambda: harness.sim.triggers("plain"), timeout=30, what="a fire with no one reading the logs")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_what_the_build_ran_with_is_on_record_and_a_dropped_parameter_is_called_out(make_harness):
    """The seed article's gotcha: Jenkins drops a parameter the job does not define, and says nothing."""
    harness = make_harness(job_token="deploy-job-token")
    harness.write("deploy", "job: deploy\nparameters: {ENV: prod, VERSION: '2', TYPO: x}\n")
    harness.start()
    wait_for(lambda: any(e["event"] == "parameter_ignored" for e in harness.logs.events()),
             what="the dropped parameter to be called out while the build runs")
    [warning] = [e for e in harness.logs.events() if e["event"] == "parameter_ignored"]
    assert warning["dropped"] == ["TYPO"] and warning["trigger"] == "deploy"
    harness.sim.finish("deploy", 1, "SUCCESS")
    wait_for(lambda: harness.events("deploy") == ["decided", "queued", "started", "completed"])
    [done] = [e for e in History(harness.history).read("deploy") if e["event"] == "completed"]
    assert done["ran_with"] == {"ENV": "prod", "VERSION": "2", "DRY_RUN": "true", "SECRET": "****"}
    assert done["ignored"] == ["TYPO"] and any("Started by remote host" in c for c in done["causes"])


# -- Who asked for it ----------------------------------------------------------------------------

def git(repo, *args, author=("Alice", "alice@example.com")):
    subprocess.run(["git", "-C", str(repo), "-c", f"user.name={author[0]}", "-c", f"user.email={author[1]}", *args],
                   check=True, capture_output=True)


def test_each_fire_names_the_commit_behind_its_spec_in_the_cause_history_and_status(harness):
    """git-sync's layout: a worktree behind a symlink, in a repository the daemon did not create."""
    repo = harness.tmp / "repo"
    (repo / "triggers").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "triggers" / "deploy.yaml").write_text("job: manual\ncause: deploy 1.4.2\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "deploy 1.4.2")
    (repo / "triggers" / "other.yaml").write_text("job: plain\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "other", author=("Bob", "bob@example.com"))
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD~1"], capture_output=True, text=True).stdout.strip()
    git(repo, "worktree", "add", "-q", str(harness.tmp / "wt"), "HEAD")
    harness.tmp.joinpath("current").symlink_to(harness.tmp / "wt")
    harness.triggers.symlink_to(harness.tmp / "current" / "triggers")
    harness.job_token = "deploy-job-token"
    harness.start()
    wait_for(lambda: harness.runs("deploy") and harness.runs("deploy")[0].status == "building")
    [build] = harness.sim.builds("manual")
    note = build.causes[0]["note"]
    assert note.startswith(f"deploy 1.4.2 — {sha[:7]} by Alice <alice@example.com> [reconciler run ")
    [decided] = [e for e in History(harness.history).read("deploy") if e["event"] == "decided"]
    assert decided["provenance"]["sha"] == sha and decided["provenance"]["subject"] == "deploy 1.4.2"
    assert harness.runs("deploy")[0].provenance["email"] == "alice@example.com"
    wait_for(lambda: harness.runs("other") and harness.runs("other")[0].provenance)
    assert harness.runs("other")[0].provenance["author"] == "Bob"


def test_the_commit_behind_a_spec_can_be_sent_as_build_parameters(make_harness):
    harness = make_harness(jobs=[{"name": "traced", "duration": None, "parameters": ["GIT_COMMIT", "BY", "ENV"]}])
    repo = harness.triggers
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    harness.write("deploy", "job: traced\nparameters: {ENV: prod}\nprovenance_parameters: {sha: GIT_COMMIT, "
                            "email: BY}\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "deploy")
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    harness.start()
    wait_for(lambda: harness.sim.triggers("traced"))
    [sent] = harness.sim.triggers("traced")
    assert (sent.param("GIT_COMMIT"), sent.param("BY"), sent.param("ENV")) == (sha, "alice@example.com", "prod")


def test_without_git_metadata_a_fire_carries_no_commit_and_nothing_breaks(harness):
    harness.write("deploy", "job: plain\ncause: no git here\n")
    harness.start()
    wait_for(lambda: harness.runs("deploy") and harness.runs("deploy")[0].status in ("building", "completed"))
    assert harness.runs("deploy")[0].provenance is None
    assert harness.sim.builds("plain")[0].causes[0]["shortDescription"].startswith("Started by user")
    harness.write("traced", "job: deploy\nparameters: {ENV: prod}\nprovenance_parameters: {sha: VERSION}\n")
    wait_for(lambda: harness.sim.triggers("deploy"), what="the spec asking for a commit git does not know")
    assert harness.sim.triggers("deploy")[0].param("VERSION") == ""
