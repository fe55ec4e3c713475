"""Messages through Apprise, to a json:// recorder on loopback: one per change of a trigger's streak."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reconciler.config import CommitStatus, Deliveries, NotifyChannel
from reconciler.core import text
from reconciler.core.alerts import Alert, Streak, glob_pattern, message, next_alert, status_update
from reconciler.core.runs import Run, RunStatus
from reconciler.forge.notify import escaper
from reconciler.store.base import Delivery
from reconciler.store.sqlite import Store

from .conftest import wait_for
from .forge_standins import Forge, Recorder
from .test_forge import FORGE_TOKEN, ForgeHarness

HOOK_KEY = "hookS3cr3tQzv7WkP2xYmN"


@pytest.fixture
def notify_harness(tmp_path: Path, simulator: Any) -> Iterator[Callable[..., tuple[ForgeHarness, Recorder]]]:
    made: list[Any] = []

    def make(*, on: tuple[str, ...] = ("failed", "refused", "lost", "recovered", "paused"),
             triggers: tuple[str, ...] = (), answers: list[int] | None = None,
             status: CommitStatus | None = None, refused_min: float = 60.0) -> tuple[ForgeHarness, Recorder]:
        recorder = Recorder(answers)
        channel = NotifyChannel(recorder.json_url(f"/hooks/{HOOK_KEY}"), on, triggers)
        h = ForgeHarness(tmp_path, simulator, job_token="deploy-job-token", deliveries=Deliveries(status, (channel,)),
                         refused_min=refused_min)
        made.extend([h, recorder])
        return h, recorder

    yield make
    for thing in made:
        thing.stop()


def _fire(harness: ForgeHarness, revision: int, result: str) -> None:
    """A new revision of the spec, its build finished with `result`, and the run's outcome recorded."""
    harness.write("deploy", f"job: manual\nrun: {revision}\n")
    wait_for(lambda: len(harness.sim.builds("manual")) >= revision, what=f"build {revision}")
    harness.sim.finish("manual", revision, result)
    wait_for(lambda: sum(r.status == "completed" for r in harness.runs("deploy")) >= revision,
             what=f"run {revision} to complete")


def _settled(harness: ForgeHarness) -> bool:
    return all(row[3] is not None for row in harness.outbox())


def test_failure_failure_success_gives_exactly_failed_then_recovered(notify_harness):
    harness, recorder = notify_harness()
    harness.start()
    for revision, result in enumerate(["FAILURE", "FAILURE", "SUCCESS"], start=1):
        _fire(harness, revision, result)
    wait_for(lambda: len(recorder.messages()) >= 2 and _settled(harness), what="the messages to be sent")
    messages = recorder.messages()
    assert [(m["title"], m["type"]) for m in messages] == [("deploy failed", "failure"),
                                                          ("deploy recovered", "success")]
    runs = sorted(harness.runs("deploy"), key=lambda r: r.decided_at)
    assert "Job: manual #1" in messages[0]["message"] and "Result: FAILURE" in messages[0]["message"]
    assert f"Build: {runs[0].build_url}" in messages[0]["message"]
    assert "Job: manual #3" in messages[1]["message"] and "Result: SUCCESS" in messages[1]["message"]
    assert recorder.requests[0].path == f"/hooks/{HOOK_KEY}"


def test_a_refused_spec_is_one_message_however_often_it_is_refused(notify_harness):
    harness, recorder = notify_harness(refused_min=0.05)
    harness.write("deploy", "job: no-such-job\n")
    harness.start(resync_interval=0.1)
    wait_for(lambda: harness.runs("deploy") and harness.runs("deploy")[0].attempts >= 3,
             what="the spec to be refused three times")
    wait_for(lambda: recorder.messages() and _settled(harness), what="the message")
    (harness.triggers / "deploy.yaml").unlink()  # the refused run is given up: failed, in a failing streak
    wait_for(lambda: any(r.status == "failed" for r in harness.runs("deploy")), what="the refused run to be given up")
    wait_for(lambda: _settled(harness), what="the outbox to settle")
    [only] = recorder.messages()
    assert only["title"] == "deploy was refused by Jenkins" and only["type"] == "warning"
    assert "no-such-job" in only["message"] and "Reason:" in only["message"]


def test_the_streak_survives_a_new_pod_so_a_failure_is_not_announced_again(notify_harness):
    harness, recorder = notify_harness()
    harness.start()
    _fire(harness, 1, "FAILURE")
    wait_for(lambda: len(recorder.messages()) == 1 and _settled(harness), what="the failed message")
    harness.stop()
    for name in ("state.db", "state.db-wal", "state.db-shm"):  # a new pod: an empty state volume
        (harness.tmp / name).unlink(missing_ok=True)
    harness.start()
    _fire(harness, 2, "FAILURE")
    wait_for(lambda: _settled(harness), what="the outbox to settle")
    assert len(recorder.messages()) == 1, "the failure streak went on; nothing new to say"
    _fire(harness, 3, "SUCCESS")
    wait_for(lambda: len(recorder.messages()) == 2, what="the recovered message")
    assert [m["title"] for m in recorder.messages()] == ["deploy failed", "deploy recovered"]


def test_a_channel_hears_only_the_alerts_and_triggers_it_asked_for(notify_harness):
    harness, recorder = notify_harness(on=("recovered",), triggers=("team-a/**",))
    harness.write("team-b/deploy", "job: plain\n")
    harness.start()
    _fire(harness, 1, "FAILURE")
    _fire(harness, 2, "SUCCESS")
    wait_for(lambda: _settled(harness) and harness.runs("team-b/deploy"), what="the outbox to settle")
    assert recorder.messages() == [], "deploy is not under team-a/, and `failed` was not asked for"
    assert glob_pattern("team-a/**").fullmatch("team-a/x/y") and not glob_pattern("team-a/*").fullmatch("team-a/x/y")


def test_a_chat_that_fails_is_asked_again_and_no_secret_is_written_anywhere(notify_harness, tmp_path):
    forge = Forge("github", "platform/jenkins-triggers", FORGE_TOKEN,
                  script=[(500, {}, {"message": f"token {FORGE_TOKEN} was rejected"})])
    try:
        status = CommitStatus("github", forge.api, "platform/jenkins-triggers", FORGE_TOKEN)
        harness, recorder = notify_harness(answers=[500, 503], status=status)
        sha = harness.commit("deploy", "job: manual\n")
        forge.commits.add(sha)
        harness.start()
        wait_for(lambda: harness.sim.builds("manual"), what="the build")
        harness.sim.finish("manual", 1, "FAILURE")
        wait_for(lambda: recorder.messages() and forge.states()[-1:] == ["failure"] and _settled(harness),
                 what="the message and the status, after their failures")
        retried = [e for e in harness.logs.events() if e["event"] == "delivery_retrying"]
        assert {e["kind"] for e in retried} == {"status", "notify0"}
        assert any("***" in e["error"] for e in retried), "the forge echoed the token: redacted"
        harness.stop()
        status_out = subprocess.run([sys.executable, "-m", "reconciler", "status", "--triggers", str(harness.triggers),
                                     "--state", str(harness.state)], capture_output=True, text=True,
                                    env={**os.environ, "NO_COLOR": "1"})
        status_json = subprocess.run([sys.executable, "-m", "reconciler", "status", "--json", "--triggers",
                                      str(harness.triggers), "--state", str(harness.state)], capture_output=True,
                                     text=True)
        assert "deliveries:" in status_out.stdout
        written = [harness.logs.getvalue(), status_out.stdout, status_out.stderr, status_json.stdout,
                   *(p.read_text() for p in harness.history.rglob("*.jsonl")),
                   *(p.read_bytes().decode("latin-1") for p in tmp_path.glob("state.db*"))]
        for secret in (FORGE_TOKEN, HOOK_KEY):
            assert not any(secret in w for w in written), secret
    finally:
        forge.stop()


# -- the rules, alone ------------------------------------------------------------------------------

def _run(run_id: str, status: RunStatus, result: str | None = None, **fields: Any) -> Run:
    return Run(run_id=run_id, trigger="t", fire_key="rev", server="default", job="deploy", parameters=None, cause=None,
               tag_param=None, status=status, decided_at=1.0, result=result, **fields)


def test_the_streak_says_each_change_once():
    streak, said = Streak(), []
    steps = [("a", RunStatus.COMPLETED, "SUCCESS"), ("b", RunStatus.COMPLETED, "FAILURE"),
             ("c", RunStatus.LOST, None), ("d", RunStatus.CANCELLED, None), ("e", RunStatus.REFUSED, None),
             ("e", RunStatus.COMPLETED, "SUCCESS"), ("f", RunStatus.COMPLETED, "UNSTABLE"),
             ("g", RunStatus.FAILED, None), ("h", RunStatus.COMPLETED, "SUCCESS"), ("i", RunStatus.UNKNOWN, None)]
    for at, (run_id, status, result) in enumerate(steps, start=1):
        alert, streak = next_alert(streak, _run(run_id, status, result), status.value, float(at))
        said.append(alert)
    assert said == [None, Alert.FAILED, Alert.LOST, None, Alert.REFUSED, Alert.RECOVERED, Alert.FAILED, None,
                    Alert.RECOVERED, Alert.UNKNOWN]
    again, same = next_alert(streak, _run("b", RunStatus.COMPLETED, "FAILURE"), "completed", 2.0)
    assert again is None and same == streak, "a step counted before says nothing at a restart"


def test_statuses_map_each_step_and_fit_140_characters():
    run = _run("r", RunStatus.REFUSED, None, provenance={"sha": "a" * 40}, last_error="x" * 400,
               queue_url=None)
    update = status_update(run, "refused", "reconciler/t")
    assert update is not None and update.state == "error" and len(update.description) == 140
    assert update.description.startswith("deploy: refused by Jenkins: xxx") and update.description.endswith("…")
    done = _run("r", RunStatus.COMPLETED, "ABORTED", provenance={"sha": "a" * 40}, build_number=7,
                build_url="http://j/job/deploy/7/")
    assert status_update(done, "completed", "c").description == "deploy #7: ABORTED"
    assert status_update(done, "completed", "c").state == "failure"
    assert status_update(_run("r", RunStatus.COMPLETED, "SUCCESS"), "completed", "c") is None, "no commit: no status"
    tick = replace(_run("r", RunStatus.QUEUED, provenance={"sha": "a" * 40}), fire_key="@2026-01-01T00:00:00Z")
    assert status_update(tick, "queued", "c") is None, "a tick has no commit of its own"


def test_a_message_quotes_spec_commit_and_jenkins_text_inertly_in_chats():
    facts = {"trigger": "team/<!channel>", "job": "deploy_*now*", "number": "3", "result": "FAILURE",
             "url": "http://jenkins/job/deploy/3/", "sha": "0123456789abcdef", "author": "@here",
             "subject": "fix <http://evil.example|click> [x](http://evil.example)", "reason": None}
    assert escaper("slack://T1/B2/C3") is text.chat and escaper("json://127.0.0.1/x") is not text.chat
    title, body = message(Alert.FAILED, facts, text.chat)
    assert "<!channel>" not in title and "<http://evil" not in body and "](http://evil" not in body
    assert "@here" not in body and "Commit: 0123456" in body and "Build: http://jenkins/job/deploy/3/" in body
    _, plain_body = message(Alert.FAILED, {**facts, "subject": "a\x1b]52;c;x\x07b"}, escaper("json://h/x"))
    assert "\x1b" not in plain_body and "\\x1b" in plain_body


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_the_outbox_is_idempotent_and_keeps_the_newest_status_on_both_engines(engine, tmp_path, request):
    if engine == "sqlite":
        store: Any = Store(tmp_path / "state.db")
    else:
        from reconciler.store.postgres import PgStore

        store = PgStore(request.getfixturevalue("pg_dsn"))
    try:
        def row(step: str, at: float, kind: str = "status") -> Delivery:
            return Delivery(f"r1:{kind}:{step}", "r1", "t", kind, "pending", {"sha": "a"}, at, at)

        store.enqueue([row("decided", 1.0)])
        store.enqueue([row("queued", 2.0)], ("t", True, "r1", 2.0))
        store.enqueue([row("queued", 3.0), row("failed", 3.0, "notify0")])  # a step enqueued again: nothing new
        due = store.outbox_due(10.0)
        assert [d.id for d in due] == ["r1:status:queued", "r1:notify0:failed"]
        assert store.streak("t") == (True, "r1", 2.0) and store.has_streaks()
        store.settle(due[0], outcome="given_up", done_at=4.0, attempts=1, last_error="github answered 422: no")
        summary = store.outbox_summary()
        assert summary["counts"]["status"] == {"superseded": 1, "given_up": 1}
        assert summary["counts"]["notify"] == {"waiting": 1} and summary["oldest_waiting"] == 3.0
        assert summary["last_given_up"].last_error == "github answered 422: no"
        assert store.prune_outbox(5.0) == 2 and [d.id for d in store.outbox_due(10.0)] == ["r1:notify0:failed"]
    finally:
        store.close()
