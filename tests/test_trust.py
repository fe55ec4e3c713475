"""The triggers repository is untrusted input: every attack a committer could make, tried for real.

Each test commits hostile files beside a valid spec, runs the reconciler as a process against the
simulator, and checks what an attacker would hope for did not happen: no request or secret reached
their host, nothing crashed or stalled, nothing fired twice, and the valid sibling still fired.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import signal
import socket
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest
import requests

from .conftest import TOKEN, USER, wait_for
from .test_cli import jenkins_env, reconciler

JOB_TOKEN = "deploy-job-token"
BASIC = base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()


def bounded(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A reconciler command with 1 GiB of address space and a minute: whatever a file costs, it fails fast."""
    return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)))


def run_once(tmp_path: Path, sim, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return bounded("run", "--once", "--triggers", str(tmp_path / "triggers"), "--state", str(tmp_path / "s.db"),
                   "--history", str(tmp_path / "h"), *extra, env={**(jenkins_env(sim) if sim else {}), **(env or {})})


@pytest.fixture
def triggers(tmp_path: Path) -> Path:
    path = tmp_path / "triggers"
    path.mkdir()
    (path / "ok.yaml").write_text("job: plain\n")
    return path


def test_a_committed_server_config_moves_no_request_and_no_secret(tmp_path, triggers, simulator, make_simulator):
    attacker = make_simulator()
    (triggers / "reconciler.yaml").write_text(
        f"servers:\n  default:\n    url: {attacker.url}\n    user: {USER}\n    token: {{env: JENKINS_API_TOKEN}}\n"
        f"  exfil:\n    url: {attacker.url}\n    token: {{file: /etc/hostname}}\n")
    (triggers / "stolen.yaml").write_text("job: plain\nserver: exfil\n")

    result = run_once(tmp_path, simulator)
    assert attacker.requests == []
    assert len(simulator.triggers("plain")) == 1  # the valid sibling, on the operator's Jenkins
    assert "Traceback" not in result.stdout + result.stderr

    checked = reconciler("validate", str(triggers))
    assert checked.returncode == 1
    assert f"{triggers}/reconciler.yaml:1:1: server configuration does not belong in the triggers repository" \
        in checked.stdout

    pointed = run_once(tmp_path, simulator, "--config", str(triggers / "reconciler.yaml"))
    assert pointed.returncode == 2
    assert "inside the triggers directory" in pointed.stderr
    assert attacker.requests == []


HOSTILE = {
    "maybe.yaml": ("job: plain\nsuspend: !!bool maybe\n", "2:10", "explicit YAML tags (!!bool)"),
    "digits.yaml": ("job: plain\nrun: " + "9" * 5000 + "\n", "2:6", "a number of more than 64 digits"),
    "hex.yaml": ("job: plain\nrun: !!int 0xZZ\n", "2:6", "explicit YAML tags (!!int)"),
    "float.yaml": ("job: plain\nparameters: {A: !!float abc}\n", "2:17", "explicit YAML tags (!!float)"),
    "date.yaml": ("job: plain\nparameters: {A: !!timestamp 2001-13-45}\n", "2:17", "explicit YAML tags"),
    "deadline.yaml": ("job: plain\nschedule: '* * * * *'\nstarting_deadline: 99999999999999999999999h\n", "3:20",
                      "starting_deadline: cannot read duration"),
    "tab.yaml": ("job: plain\nparam\teters: {}\n", "2:1", "unknown key 'param\\teters'"),
    "merge.yaml": ("job: plain\n<<: {cause: x}\n", "2:1", "YAML merge keys (<<) are not accepted"),
    "dots.yaml": ("job: ../../script\n", "1:6", "`.` or `..` segment"),
    "token.yaml": ("job: deploy\nparameters: {token: guessed, cause: spoofed}\n", "2:13",
                   "parameter name 'token' and 'cause': Jenkins reads these fields itself"),
    "laughs.yaml": ("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"  # 9 ** 9 strings, in 1 KB
                    + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in pairwise("abcdefghi"))
                    + "job: plain\n", "1:4", "YAML anchors and aliases (&name, *name) are not accepted"),
}


def test_no_value_in_a_file_crashes_or_exhausts_anything_and_each_gets_its_position(tmp_path, triggers, simulator):
    for name, (text, _, _) in HOSTILE.items():
        (triggers / name).write_text(text)

    checked = bounded("validate", str(triggers))
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    lines = checked.stdout.splitlines()
    for name, (_, where, message) in HOSTILE.items():
        mine = [line for line in lines if line.startswith(f"{triggers}/{name}:")]
        assert len(mine) == 1 and mine[0].startswith(f"{triggers}/{name}:{where}: ") and message in mine[0], mine

    result = run_once(tmp_path, simulator)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert len(simulator.triggers("plain")) == 1
    invalid = {e["trigger"] for e in map(json.loads, result.stdout.splitlines()) if e["event"] == "spec_invalid"}
    assert invalid == {name.removesuffix(".yaml") for name in HOSTILE}


def test_links_out_of_the_tree_loops_and_linked_folders_are_refused_not_followed(tmp_path, triggers, simulator):
    (triggers / "team").mkdir()
    (triggers / "team" / "deploy.yaml").write_text("job: deploy\nparameters: {ENV: prod}\n")
    (triggers / "loop").symlink_to(".")
    (triggers / "root").symlink_to("/")
    (triggers / "usr").symlink_to("/usr")
    (triggers / "team" / "again").symlink_to("..")
    for i in range(12):
        (triggers / f"copy{i}").symlink_to("team")
    (triggers / "alias.yaml").symlink_to("team/deploy.yaml")
    outside = tmp_path / "outside.yaml"
    outside.write_text("jbo: value-from-outside-the-tree\n")
    (triggers / "outside.yaml").symlink_to(outside)
    (triggers / "nothing.yaml").symlink_to(tmp_path / "missing")

    checked = bounded("validate", str(triggers))
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    out = checked.stdout
    for folder in ("loop", "root", "usr", "team/again", *(f"copy{i}" for i in range(12))):
        assert f"{triggers}/{folder}:1:1: a symlink to a folder, not followed" in out
    assert f"{triggers}/alias.yaml:1:1: a symlink to team/deploy.yaml, which is a trigger of its own" in out
    assert f"{triggers}/outside.yaml:1:1: a symlink that leads out of the triggers directory: not read" in out
    assert f"{triggers}/nothing.yaml:1:1: a symlink to nothing" in out
    assert "value-from-outside-the-tree" not in out
    assert "2 specs checked" not in checked.stderr

    result = run_once(tmp_path, simulator)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert len(simulator.triggers("deploy")) == 1  # one file, one trigger, however many paths lead to it
    assert len(simulator.triggers("plain")) == 1


def test_a_running_daemon_keeps_watching_beside_a_link_to_the_root_of_the_filesystem(tmp_path, triggers, simulator):
    (triggers / "root").symlink_to("/")
    (triggers / "loop").symlink_to(".")
    log = tmp_path / "log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--triggers", str(triggers),
                                 "--state", str(tmp_path / "s.db"), "--history", str(tmp_path / "h"),
                                 "--resync-interval", "3600"],
                                env={**os.environ, **jenkins_env(simulator)}, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: simulator.triggers("plain"), what="the first pass")
        (triggers / "later").mkdir()
        wait_for(lambda: '"event": "pass_completed"' in log.read_text(), what="the first pass to end")
        (triggers / "later" / "new.yaml").write_text("job: deploy\nparameters: {ENV: prod}\n")
        wait_for(lambda: simulator.triggers("deploy"), timeout=30, what="the watcher to see a new spec")
        assert proc.poll() is None
        assert "watch_restarted" not in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_credentials_in_the_url_are_refused_at_start_without_being_repeated(tmp_path, triggers, simulator):
    url = simulator.url.replace("http://", f"http://{USER}:hunter2-in-the-url@")
    result = run_once(tmp_path, simulator, env={"JENKINS_URL": url})
    assert result.returncode == 2
    assert "JENKINS_USER" in result.stderr
    assert "hunter2-in-the-url" not in result.stdout + result.stderr
    assert simulator.requests == []


def test_a_secret_that_jenkins_echoes_back_is_scrubbed_from_every_record(tmp_path, triggers, make_simulator):
    sim = make_simulator()
    sim.fault(path="/build$", method="POST", status=403, echo=True)
    env = {"JENKINS_JOB_TOKEN": JOB_TOKEN}
    result = run_once(tmp_path, sim, env=env)
    assert [r.status for r in sim.requests if r.path.endswith("/build")] == [403]
    status = reconciler("status", "--json", "--triggers", str(tmp_path / "triggers"), "--state",
                        str(tmp_path / "s.db"), env={**jenkins_env(sim), **env})
    [run] = json.loads(status.stdout)
    assert "Authorization: Basic ***" in run["last_run"]["last_error"]  # the echo recorded, its secrets not
    history = "".join(p.read_text() for p in (tmp_path / "h").rglob("*.jsonl"))
    records = {"log": result.stdout + result.stderr, "status": status.stdout, "history": history,
               "state": (tmp_path / "s.db").read_bytes().decode("latin-1") +
               (tmp_path / "s.db-wal").read_bytes().decode("latin-1") if (tmp_path / "s.db-wal").exists() else ""}
    for where, text in records.items():
        for secret in (TOKEN, BASIC, JOB_TOKEN):
            assert secret not in text, f"{secret} in {where}"


def test_held_connections_to_the_probe_port_do_not_stop_fires(tmp_path, triggers, simulator):
    log = tmp_path / "log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--triggers", str(triggers),
                                 "--state", str(tmp_path / "s.db"), "--history", str(tmp_path / "h"),
                                 "--listen", "127.0.0.1:0"],
                                env={**os.environ, **jenkins_env(simulator)}, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)))
    held: list[socket.socket] = []
    try:
        def address() -> tuple[str, int] | None:
            for line in log.read_text().splitlines():
                if '"probes_listening"' in line:
                    host, _, port = json.loads(line)["address"].rpartition(":")
                    return host, int(port)
            return None

        where = wait_for(address, what="the probe port")
        wait_for(lambda: simulator.triggers("plain"), what="the first pass")
        for _ in range(300):  # more than the daemon may open: uncapped, each would hold a thread and a descriptor
            held.append(socket.create_connection(where, timeout=5))
        (triggers / "new.yaml").write_text("job: deploy\nparameters: {ENV: prod}\n")
        wait_for(lambda: simulator.triggers("deploy"), timeout=30, what="a fire while the port is flooded")
        assert proc.poll() is None
        for s in held:
            s.close()
        held.clear()
        wait_for(lambda: requests.get(f"http://{where[0]}:{where[1]}/healthz", timeout=2).ok, timeout=30,
                 what="the probes to answer again")
    finally:
        for s in held:
            s.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_insecure_server_settings_are_warned_about_at_start(tmp_path, triggers):
    (triggers / "ok.yaml").unlink()  # nothing to fire: no request is made to these made-up hosts
    config = tmp_path / "servers.yaml"
    config.write_text("servers:\n  lax:\n    url: https://jenkins.example.com/\n    verify: false\n"
                      "  anonymous:\n    url: https://other.example.com/\n")
    result = run_once(tmp_path, None, "--config", str(config),
                      env={"JENKINS_URL": "http://jenkins.example.com/", "JENKINS_USER": USER,
                           "JENKINS_API_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    warnings = [e["warning"] for e in map(json.loads, result.stdout.splitlines()) if e["event"] == "server_insecure"]
    assert warnings == ["server default: credentials are sent over plain http to jenkins.example.com: use https",
                        "server lax: TLS certificates are not verified (verify: false): anyone on the path can "
                        "read the API token; give ca_bundle instead",
                        "server lax: no API token or user is configured, so requests are anonymous and Jenkins "
                        "will likely refuse them: set JENKINS_USER and JENKINS_API_TOKEN (or user: and token: in "
                        "the config)",
                        "server anonymous: no API token or user is configured, so requests are anonymous and "
                        "Jenkins will likely refuse them: set JENKINS_USER and JENKINS_API_TOKEN (or user: and "
                        "token: in the config)"]
