"""--listen: liveness, readiness and Prometheus metrics, from a real `reconciler run` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import requests

from .conftest import TOKEN, USER, probe_address, wait_for


def test_health_readiness_and_metrics(tmp_path, simulator):
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    (triggers / "ok.yaml").write_text("job: plain\n")
    (triggers / "broken.yaml").write_text("jbo: plain\n")
    (triggers / "elsewhere.yaml").write_text("job: plain\nserver: nowhere\n")  # invalid too: no such server
    env = {**os.environ, "JENKINS_URL": simulator.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN,
           "RECONCILER_LISTEN": "127.0.0.1:0", "RECONCILER_POLL_INTERVAL": "0.1"}
    log = tmp_path / "log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--triggers", str(triggers),
                                 "--state", str(tmp_path / "s.db"), "--history", str(tmp_path / "h")],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://{probe_address(log)}"
        wait_for(lambda: requests.get(base + "/readyz", timeout=5).status_code == 200, what="readiness")
        assert requests.get(base + "/healthz", timeout=5).text == "ok\n"

        def metric(line_start: str) -> float | None:
            for line in requests.get(base + "/metrics", timeout=5).text.splitlines():
                if line.startswith(line_start):
                    return float(line.rsplit(" ", 1)[1])
            return None

        wait_for(lambda: metric('reconciler_fires_total{job="plain",outcome="success",server="default"}') == 1,
                 what="the fire to be counted")
        assert metric("reconciler_invalid_specs") == 2
        assert metric("reconciler_runs_in_flight") == 0
        assert metric("reconciler_fire_latency_seconds_count") == 1
        assert metric("reconciler_last_successful_pass_timestamp_seconds") > 0
        assert requests.get(base + "/nope", timeout=5).status_code == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_not_ready_before_the_first_pass(harness):
    daemon = harness.build()
    assert daemon.readiness_problems() == ["the first pass has not completed", "the watcher is not running"]
    assert daemon.liveness_problems() == []


def test_readyz_waits_for_a_triggers_folder_not_checked_out_yet_and_the_daemon_fires_once_it_is(tmp_path, simulator):
    """git-sync checks the repository out after the daemon starts, and links it into place: until then
    /readyz says what it waits for; then the daemon reads the folder and fires, without a restart."""
    triggers = tmp_path / "git" / "triggers"  # the link git-sync makes, to a worktree it checks out
    env = {**os.environ, "JENKINS_URL": simulator.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN,
           "RECONCILER_LISTEN": "127.0.0.1:0"}
    log = tmp_path / "log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--triggers", str(triggers),
                                 "--state", str(tmp_path / "s.db"), "--history", str(tmp_path / "h")],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://{probe_address(log)}"
        waiting = wait_for(lambda: (r := requests.get(base + "/readyz", timeout=5)).status_code == 503 and
                           f"waiting for the triggers folder {triggers}" in r.text and r.text, what="/readyz to wait")
        assert "git-sync" in waiting and proc.poll() is None
        assert requests.get(base + "/healthz", timeout=5).status_code == 200  # waiting is not dead

        worktree = tmp_path / "git" / ".worktrees" / "abc123"
        worktree.mkdir(parents=True)
        (worktree / "deploy.yaml").write_text("job: plain\n")
        triggers.symlink_to(worktree)
        wait_for(lambda: simulator.triggers("plain"), timeout=30, what="the fire once the folder is there")
        ready = wait_for(lambda: (r := requests.get(base + "/readyz", timeout=5)).status_code == 200 and r.text,
                         what="readiness")
        assert "waiting for the triggers folder" not in ready
        assert len(simulator.triggers("plain")) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
