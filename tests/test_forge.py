"""Commit statuses on the spec's commit, against loopback stand-ins of each forge's documented API."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reconciler import logs
from reconciler.config import CommitStatus, Deliveries, NotifyChannel, load_deliveries
from reconciler.core.alerts import CommitState
from reconciler.core.errors import ConfigError
from reconciler.forge.statuses import forge_for
from reconciler.service.daemon import Daemon, assemble
from reconciler.store.sqlite import Store

from .conftest import TOKEN, Harness, wait_for
from .forge_standins import Forge, Silent, closed_port

FORGE_TOKEN = "ghp_f0rgeTqK8vXw2LmZr5NyHs"


@dataclass
class ForgeHarness(Harness):
    """The conftest harness, with deliveries configured, and its triggers folder a git repository."""

    deliveries: Deliveries = field(default_factory=Deliveries)
    delivery_options: dict[str, Any] = field(default_factory=lambda: {"retry_min": 0.05, "retry_max": 0.2})

    def build(self, clock: Callable[[], float] = time.time, resync_interval: float = 60.0) -> Daemon:
        logs.configure("json", stream=self.logs)
        logs.add_secrets([TOKEN])
        self.triggers.mkdir(parents=True, exist_ok=True)
        daemon = assemble(self.triggers, self.state, self.history, {"default": self.server()}, clock=clock,
                          resync_interval=resync_interval, client_options={"backoff": 0.01, "max_backoff": 0.05},
                          poll_min=0.01, poll_max=0.05, retry_min=self.retry_min, retry_max=max(0.1, self.retry_min),
                          refused_min=self.refused_min, refused_max=self.refused_min * 4,
                          deliveries=self.deliveries, delivery_options=self.delivery_options)
        self._running.append((daemon, None))
        return daemon

    def commit(self, name: str, text: str, subject: str = "deploy", author: str = "Alice") -> str:
        """Write a spec and commit it, as whoever asks for a fire does; its sha."""
        if not (self.triggers / ".git").exists():
            self.triggers.mkdir(parents=True, exist_ok=True)
            subprocess.run(["git", "init", "-q", "-b", "main", str(self.triggers)], check=True)
        self.write(name, text)
        git = ["git", "-C", str(self.triggers), "-c", f"user.name={author}", "-c", "user.email=a@example.com"]
        subprocess.run([*git, "add", "."], check=True)
        subprocess.run([*git, "commit", "-qm", subject], check=True)
        return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()

    def outbox(self) -> list[tuple[Any, ...]]:
        store = Store(self.state)
        try:
            return store._read("SELECT id, kind, state, outcome, attempts, last_error FROM outbox ORDER BY created_at")
        finally:
            store.close()


@pytest.fixture
def forge_harness(tmp_path: Path, simulator: Any) -> Iterator[Callable[..., ForgeHarness]]:
    made: list[ForgeHarness] = []
    standins: list[Any] = []

    def make(provider: str = "github", repository: str = "platform/jenkins-triggers", *,
             notify: tuple[NotifyChannel, ...] = (), script: list[Any] | None = None,
             api_url: str | None = None, **options: Any) -> tuple[ForgeHarness, Forge]:
        forge = Forge(provider, repository, FORGE_TOKEN, script=list(script or []))
        standins.append(forge)
        settings = CommitStatus(provider, api_url or forge.api, repository, FORGE_TOKEN)
        h = ForgeHarness(tmp_path, simulator, job_token="deploy-job-token", deliveries=Deliveries(settings, notify))
        h.delivery_options.update(options)
        made.append(h)
        return h, forge

    yield make
    for h in made:
        h.stop()
    for s in standins:
        s.stop()


def _finish(harness: ForgeHarness, job: str, result: str) -> None:
    wait_for(lambda: harness.sim.builds(job), what=f"a build of {job}")
    harness.sim.finish(job, len(harness.sim.builds(job)), result)


def test_the_specs_commit_gets_pending_then_success_with_the_build_url_and_the_token(forge_harness):
    harness, forge = forge_harness()
    sha = harness.commit("team-a/deploy", "job: manual\ncause: deploy 1.4.2\n", subject="deploy 1.4.2")
    forge.commits.add(sha)
    harness.start()
    wait_for(lambda: "pending" in forge.states(), what="the pending status")
    _finish(harness, "manual", "SUCCESS")
    wait_for(lambda: forge.states()[-1:] == ["success"], what="the success status")
    [request] = forge.requests[-1:]
    assert request.path == f"/repos/platform/jenkins-triggers/statuses/{sha}"
    assert request.headers["authorization"] == f"Bearer {FORGE_TOKEN}"
    assert request.headers["accept"] == "application/vnd.github+json"
    assert request.headers["x-github-api-version"] == "2022-11-28"
    assert {s.context for s in forge.statuses} == {"reconciler/team-a/deploy"}
    assert all(s.sha == sha for s in forge.statuses) and forge.states()[0] == "pending"
    [run] = harness.runs("team-a/deploy")
    final = forge.statuses[-1]
    assert final.target_url == run.build_url and final.description == f"manual #{run.build_number}: SUCCESS"
    assert any(s.target_url == run.queue_url or s.target_url == run.build_url for s in forge.statuses[:-1])
    assert all(len(s.description or "") <= 140 for s in forge.statuses)
    assert all(row[3] in ("delivered", "superseded") for row in harness.outbox())


def test_a_rotated_forge_token_file_is_read_again_and_used_without_a_restart(forge_harness, tmp_path):
    """The forge token lives in a Secret's file; rotated, the next statuses carry the new one within a
    reload, and neither token reaches the log."""
    import argparse
    from functools import partial

    from reconciler.cli.run import _read_again

    from .conftest import USER

    harness, forge = forge_harness()
    stale = "ghp_st4leTokenBeforeRotation0"
    secret, jenkins = tmp_path / "forge-token", tmp_path / "jenkins-token"
    secret.write_text(stale + "\n")
    jenkins.write_text(TOKEN + "\n")
    config = tmp_path / "operator.yaml"
    config.write_text(f"servers:\n  default:\n    url: {harness.url}\n    user: {USER}\n"
                      f"    token: {{file: {jenkins}}}\n"
                      f"commit_status:\n  provider: github\n  api_url: {forge.api}\n"
                      f"  repository: platform/jenkins-triggers\n  token: {{file: {secret}}}\n")
    harness.arrive("team-a/first", "job: plain\n")
    args = argparse.Namespace(config=config, triggers=harness.triggers, state=harness.state)
    harness.start(before=lambda daemon: daemon.follow_config(partial(_read_again, args), str(config)))
    [reloaded] = harness.logs.wait_for("config_reloaded")
    assert "commit_status.token" in reloaded["changed"]
    before = harness.arrive("team-a/before", "job: plain\n")
    forge.commits.add(before)
    wait_for(lambda: any(r.headers.get("authorization") == f"Bearer {stale}" for r in forge.requests),
             what="a status sent with the stale token")
    assert not forge.statuses, "the forge refused the stale token"
    secret.write_text(FORGE_TOKEN + "\n")
    assert harness.logs.wait_for("config_reloaded", 2)[1]["changed"] == ["commit_status.token"]
    after = harness.arrive("team-a/after", "job: plain\n")
    forge.commits.add(after)
    wait_for(lambda: [s.state for s in forge.statuses if s.sha == after][-1:] == ["success"],
             what="the rotated token's statuses")
    assert forge.requests[-1].headers["authorization"] == f"Bearer {FORGE_TOKEN}"
    assert stale not in harness.logs.getvalue() and FORGE_TOKEN not in harness.logs.getvalue()


def test_gitlab_gets_pending_running_then_failed_on_its_project_path(forge_harness):
    harness, forge = forge_harness("gitlab", "platform/ci/jenkins-triggers")
    sha = harness.commit("deploy", "job: manual\n")
    forge.commits.add(sha)
    harness.start()
    wait_for(lambda: "running" in forge.states(), what="the running status, once the build started")
    _finish(harness, "manual", "FAILURE")
    wait_for(lambda: forge.states()[-1:] == ["failed"], what="the failed status")
    assert forge.requests[-1].path == f"/api/v4/projects/platform%2Fci%2Fjenkins-triggers/statuses/{sha}"
    assert forge.requests[-1].headers["private-token"] == FORGE_TOKEN
    assert forge.requests[-1].body["name"] == "reconciler/deploy"
    assert forge.states()[0] == "pending" and forge.states().index("running") < forge.states().index("failed")
    assert "FAILURE" in forge.statuses[-1].description


def test_a_forge_answering_500_twice_still_gets_the_final_state(forge_harness):
    harness, forge = forge_harness()
    sha = harness.commit("deploy", "job: plain\n")
    forge.commits.add(sha)
    forge.script = [(500, {}, {"message": "Server Error"}), (502, {}, {"message": "Bad Gateway"})]
    harness.start()
    wait_for(lambda: forge.states()[-1:] == ["success"], what="the success status after two 500s")
    assert [r for r in forge.requests][:2] and len(forge.requests) >= 3
    retried = [e for e in harness.logs.events() if e["event"] == "delivery_retrying"]
    assert len(retried) == 2 and "500" in retried[0]["error"]


@pytest.mark.parametrize("down", ["refusing connections", "never answering"])
def test_a_forge_that_is_down_does_not_delay_the_jenkins_post(forge_harness, down):
    silent = Silent() if down == "never answering" else None
    try:
        url = silent.url if silent else closed_port()
        harness, _ = forge_harness(api_url=url, forge_options={"read_timeout": 60.0})
        harness.commit("deploy", "job: plain\n")
        harness.start()
        wait_for(lambda: harness.sim.triggers("plain"), what="the Jenkins POST")
        wait_for(lambda: harness.runs("deploy")[0].status == "completed", what="the run to complete")
        if silent is not None:
            assert silent.accepted, "the forge was asked, and has not answered yet"
            assert not any(e["event"] == "delivery_sent" for e in harness.logs.events())
    finally:
        if silent is not None:
            silent.stop()


def test_a_commit_the_forge_does_not_know_is_given_up_with_its_reason(forge_harness):
    harness, forge = forge_harness()
    harness.commit("deploy", "job: plain\n")  # never pushed where the forge could see it
    harness.start()
    wait_for(lambda: any(row[3] == "given_up" for row in harness.outbox()), what="a delivery given up")
    given_up = [row for row in harness.outbox() if row[3] == "given_up"]
    assert "422" in given_up[0][5] and "No commit found for SHA" in given_up[0][5]
    said = [e for e in harness.logs.events() if "deliver" in e["event"] or e["event"].endswith(("_failed", "_crashed"))]
    assert given_up[0][4] == 1, f"a 422 is not tried again: {said}"
    assert forge.statuses == []


def test_githubs_secondary_rate_limit_is_waited_out_as_retry_after_says(forge_harness):
    harness, forge = forge_harness()
    sha = harness.commit("deploy", "job: plain\n")
    forge.commits.add(sha)
    forge.script = [(403, {"retry-after": "1"}, {"message": "You have exceeded a secondary rate limit."})]
    harness.start()
    wait_for(lambda: forge.states()[-1:] == ["success"], what="the status after the rate limit")
    first, second = forge.requests[0], forge.requests[1]
    assert second.at - first.at >= 0.9, "Retry-After: 1 was honoured"


def test_each_provider_is_spoken_to_as_its_documentation_says(tmp_path):
    """The adapters alone, against each stand-in: path, headers, body, and the states in its words."""
    sha = "a" * 40
    github = ("pending", "success", "failure", "error")
    expected = {"github": github, "gitea": github,
                "gitlab": ("running", "success"), "bitbucket": ("INPROGRESS", "SUCCESSFUL", "FAILED", "FAILED")}
    for provider, repository in (("github", "o/r"), ("gitea", "o/r"), ("gitlab", "42"), ("bitbucket", "ws/slug")):
        forge = Forge(provider, repository, FORGE_TOKEN, commits={sha})
        adapter = forge_for(CommitStatus(provider, forge.api, repository, FORGE_TOKEN))
        try:
            states = [CommitState.RUNNING, CommitState.SUCCESS] if provider == "gitlab" else \
                [CommitState.PENDING, CommitState.SUCCESS, CommitState.FAILURE, CommitState.ERROR]
            for state in states:
                answer = adapter.post(sha, "reconciler/deploy", state, "http://jenkins/job/x/1/", "x #1: done")
                assert answer.delivered, (provider, answer)
            assert tuple(forge.states()) == expected[provider]
            again = adapter.post(sha, "reconciler/deploy", states[-1], "http://jenkins/job/x/1/", "again")
            assert again.delivered, f"{provider}: a status set again is set"
            unknown = adapter.post("b" * 40, "reconciler/deploy", CommitState.SUCCESS, "http://j/1/", "x")
            assert not unknown.delivered and unknown.retry_in is None and unknown.status in (404, 422)
        finally:
            adapter.close()
            forge.stop()


def test_the_operators_config_names_the_forge_and_its_channels(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("commit_status:\n  provider: gitlab\n  api_url: http://gitlab.example.com/api/v4\n"
                      "  repository: platform/ci/triggers\n  token: {env: GITLAB_TOKEN}\n  context: ci/{trigger}\n"
                      "notify:\n  - url: {env: HOOK}\n    on: [failed, recovered]\n    triggers: ['team-a/**']\n"
                      "  - url: {file: hook.txt}\n")
    (tmp_path / "hook.txt").write_text("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ\n")
    found = load_deliveries(config, {"GITLAB_TOKEN": "glpat-secret", "HOOK": "json://127.0.0.1:9/hook"})
    assert found.commit_status.context == "ci/{trigger}" and found.commit_status.repository == "platform/ci/triggers"
    assert found.notify[0].on == ("failed", "recovered") and found.notify[0].triggers == ("team-a/**",)
    assert found.notify[1].on == ("failed", "refused", "lost", "recovered", "paused")
    assert "glpat-secret" in found.secrets and "TIiajkdnlazkcOXrIdevi7FQ" in found.secrets
    assert "glpat-secret" not in repr(found) and "T1JJ3T3L2" not in repr(found)
    assert found.warnings() == ["commit_status: the gitlab token is sent over plain http to gitlab.example.com: "
                                "use https"]


@pytest.mark.parametrize(("text", "error"), [
    ("commit_status:\n  provider: sourcehut\n  repository: a/b\n  token: {env: T}\n",
     "c.yaml:2:13: commit_status.provider: Input should be 'github', 'gitlab', 'gitea' or 'bitbucket'"),
    ("commit_status:\n  provider: github\n  repository: a/b\n  token: ghp_literal\n",
     "c.yaml:4:10: commit_status.token: give secrets as a reference"),
    ("commit_status:\n  provider: gitea\n  repository: a/b\n  token: {env: T}\n", "gitea needs `api_url`"),
    ("commit_status:\n  provider: github\n  repository: a\n  token: {env: T}\n", "`repository` is owner/name"),
    ("commit_status:\n  provider: github\n  repository: a/b\n  token: {env: T}\n  context: x/{job}\n",
     "c.yaml:5:12: commit_status.context: the context may use `{trigger}` and no other placeholder"),
    ("commit_status:\n  provider: github\n  repository: a/b\n  token: {env: T}\n  contxt: x\n",
     r"c.yaml:5:3: unknown key commit_status.contxt \(did you mean 'context'"),
    ("notify:\n  - url: {env: T}\n    on: [faild]\n", "c.yaml:3:10: notify.0.on.0: Input should be 'failed'"),
    ("notify:\n  url: {env: T}\n", "c.yaml:2:3: notify: expected a list, got a mapping"),
    ("notify:\n  - url: https://hooks.example.com/x\n", "c.yaml:2:10: notify.0.url: give secrets as a reference"),
    ("notify:\n  - url: {env: T}\n  - url: {env: MISSING}\n",
     "c.yaml:3:10: notify.1.url: environment variable MISSING is not set"),
    ("notify:\n  - on: [failed]\n", "c.yaml:2:5: notify.0: `url` is required"),
])
def test_a_bad_commit_status_or_notify_section_says_what_to_change(tmp_path, text, error):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=error):
        load_deliveries(config, {"T": "tok-value"})


def test_outcomes_recorded_before_a_kill_are_delivered_at_the_next_start(forge_harness):
    """A kill -9 between recording a run's outcome and enqueuing it: the start after enqueues it."""
    harness, forge = forge_harness()
    sha = harness.commit("deploy", "job: plain\n")
    forge.commits.add(sha)
    bare = ForgeHarness(harness.tmp, harness.sim, job_token="deploy-job-token")  # the same daemon, no forge yet
    bare.start()
    wait_for(lambda: harness.runs("deploy") and harness.runs("deploy")[0].status == "completed")
    bare.stop()
    assert forge.requests == []
    harness.start()
    wait_for(lambda: forge.states() == ["success"], what="the outcome's status, from the start's sweep")


def test_a_hanging_forge_holds_only_the_worker_for_its_timeout():
    """Timeouts on every call: the adapter returns, not delivered, when the forge never answers."""
    silent = Silent()
    try:
        adapter = forge_for(CommitStatus("github", silent.url, "o/r", FORGE_TOKEN), read_timeout=0.3)
        answer: list[Any] = []
        thread = threading.Thread(target=lambda: answer.append(adapter.post("a" * 40, "c", CommitState.SUCCESS,
                                                                            None, "d")))
        thread.start()
        thread.join(timeout=10)
        assert answer and not answer[0].delivered and answer[0].retry_in == 0.0
        assert "did not answer" in answer[0].error
    finally:
        silent.stop()


def test_the_kubernetes_example_sets_up_both_from_a_secret(tmp_path):
    from ruamel.yaml import YAML

    root = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes" / "base"
    configmap = YAML(typ="safe").load((root / "configmap.yaml").read_text())
    (tmp_path / "servers.yaml").write_text(configmap["data"]["servers.yaml"])
    env = {"GITHUB_TOKEN": "ghp_example", "SLACK_WEBHOOK_URL": "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"}
    found = load_deliveries(tmp_path / "servers.yaml", env)
    assert found.commit_status.provider == "github" and found.notify[0].triggers == ("team-a/**",)
    deployment = YAML(typ="safe").load((root / "deployment.yaml").read_text())
    [reconciler] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "reconciler"]
    from_secret = {e["name"] for e in reconciler["env"] if "valueFrom" in e}
    assert {"GITHUB_TOKEN", "SLACK_WEBHOOK_URL"} <= from_secret
