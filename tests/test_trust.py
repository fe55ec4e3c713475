"""The triggers repository is untrusted input: every attack a committer could make, tried for real.

Each test commits hostile files beside a valid spec, runs the reconciler as a process against the
simulator, and checks what an attacker would hope for did not happen: no request or secret reached
their host, nothing crashed or stalled, nothing fired twice, and the valid sibling still fired.
"""

from __future__ import annotations

import base64
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest
import requests

from .conftest import TOKEN, USER, probe_address, wait_for
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
    "flowtag.yaml": ('{"job": plain, "parameters":!!set {A: 1}}\n', "1:29", "explicit YAML tags (!!set)"),
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
    [row] = json.loads(status.stdout)
    error = row["last_run"]["last_error"]
    assert "403" in error and "Authorization" not in error  # the refusal was recorded, never the echoed page
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
        host, _, port = probe_address(log).rpartition(":")
        where = (host, int(port))
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


# -- round two: secrets in every form, output no one can spoof, names and history that cannot break a start ----

class _Echo:
    """A stand-in for a Jenkins (or the proxy in front of it) that refuses everything with an error page
    echoing the request's Authorization header and the job token in every form, the secret placed so
    that a cut at 200 characters falls at a different place of it on each answer."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from .test_text import forms

        count = [0]

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = self.rfile.read(length).decode() if length else ""
                count[0] += 1
                pad = "w" * (180 + count[0] % 25)
                echoed = " ".join([*forms(TOKEN), *forms(JOB_TOKEN), *forms(BASIC)])
                body = (f"<html><head><title>Error</title></head><body><h1>Error</h1><p>{pad}{TOKEN} {JOB_TOKEN} "
                        f"{echoed}</p><pre>Authorization: {self.headers.get('Authorization')}\n{form}</pre>"
                        "</body></html>").encode()
                self.send_response(403)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_secrets_echoed_in_every_form_leave_no_fragment_in_any_record_or_output(tmp_path, triggers):
    from .test_text import leaks

    echo = _Echo()
    try:
        env = {"JENKINS_URL": echo.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN,
               "JENKINS_JOB_TOKEN": JOB_TOKEN}
        common = ("--triggers", str(triggers), "--state", str(tmp_path / "s.db"))
        outputs = {"run": run_once(tmp_path, None, "--timeout", "8s", env=env)}
        for name, args in {"status": ("status", *common), "status --json": ("status", "--json", *common),
                           "history": ("history", "ok", "--history", str(tmp_path / "h"), "--triggers", str(triggers)),
                           "history --json": ("history", "ok", "--json", "--history", str(tmp_path / "h")),
                           "check": ("check", str(triggers)), "check --json": ("check", "--json", str(triggers)),
                           "plan": ("plan", *common, "--history", str(tmp_path / "h"))}.items():
            outputs[name] = bounded(*args, env=env)
    finally:
        echo.close()
    status = json.loads(outputs["status --json"].stdout)
    assert status[0]["last_run"]["last_error"], "the refusal was recorded"
    assert "403" in outputs["check"].stdout and "Authorization" not in outputs["check"].stdout
    records = {f"{name}: {stream}": getattr(result, stream) for name, result in outputs.items()
               for stream in ("stdout", "stderr")}
    records["history"] = "".join(p.read_text() for p in (tmp_path / "h").rglob("*.jsonl"))
    records["state"] = "".join(p.read_bytes().decode("latin-1") for p in tmp_path.glob("s.db*"))
    for where, text in records.items():
        assert "Traceback" not in text, where
        assert not leaks(text, (TOKEN, JOB_TOKEN, BASIC)), where


CONTROL = "\x1b]52;c;ZXZpbA==\x07\x1b[2J\x9b31m\x1b]8;;http://evil\x1b\\"


def test_no_control_byte_from_a_spec_reaches_a_text_output(tmp_path, triggers, simulator):
    (triggers / f"ctl{CONTROL[:6]}.yaml").write_text('job: plain\nparameters: {X: "' + CONTROL.encode(
        "unicode_escape").decode() + '"}\ncause: "\\e[2J"\n')
    (triggers / "bad.yaml").write_text("job: plain\x1b[2J\nrun: \x9b\n")
    run_once(tmp_path, simulator)
    common = ("--triggers", str(triggers), "--state", str(tmp_path / "s.db"))
    for args in (("validate", str(triggers)), ("status", *common), ("plan", *common, "--history", str(tmp_path / "h")),
                 ("history", f"ctl{CONTROL[:6]}", "--history", str(tmp_path / "h"), "--triggers", str(triggers))):
        result = bounded(*args, env=jenkins_env(simulator))
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", result.stdout + result.stderr), (args, result.stdout)
        assert "Traceback" not in result.stderr
    checked = bounded("validate", str(triggers))
    assert all(re.match(rf"{re.escape(str(triggers))}/[^:]+:\d+:\d+: ", line) for line in checked.stdout.splitlines())
    assert f"{triggers}/bad.yaml:1:11: invalid YAML: a control character (U+001B)" in checked.stdout


def test_odd_names_and_poisoned_history_stop_no_fresh_start_and_a_forged_line_fires_nothing(tmp_path, triggers,
                                                                                         simulator):
    (triggers / "team.jsonl").mkdir()
    (triggers / "team.jsonl" / "deploy.yaml").write_text("job: team a/dëploy ü\nparameters: {TARGET: a}\n")
    (triggers / "team.yaml").write_text("job: team a/dëploy ü\nparameters: {TARGET: b}\n")
    (triggers / ("L" * 250 + ".yaml")).write_text("job: team a/dëploy ü\nparameters: {TARGET: c}\n")
    history = tmp_path / "h"
    history.mkdir()
    forged = {"at": "2026-01-01T00:00:00Z", "event": "decided", "trigger": "ok", "run_id": "f0f0f0f0f0f0f0f0",
              "fire_key": "0123456789abcdef", "server": "default", "job": "deploy",
              "parameters": {"ENV": "prod-everything"}, "cause": "forged"}
    poison = ["not json", json.dumps([1, 2]), json.dumps({"event": "decided", "trigger": "ok"}),
              json.dumps({**forged, "run_id": 7}), json.dumps({**forged, "parameters": {"A": {"b": 1}}}),
              "[" * 100_000 + "]" * 100_000, json.dumps({**forged, "cause": "x" * 10_000_000}),
              json.dumps({**forged, "event": "launch"}), json.dumps({**forged, "fire_key": "@garbage"}),
              json.dumps(forged)]
    (history / "ok.jsonl").write_text("\n".join(poison) + "\n")
    (history / "ghost.jsonl").write_text(json.dumps({**forged, "trigger": "ghost"}) + "\n")
    queued = {**forged, "trigger": "queued", "run_id": "e0e0e0e0e0e0e0e0"}  # a vanished queue item: never reposted
    (history / "queued.jsonl").write_text(json.dumps(queued) + "\n" + json.dumps(
        {**queued, "event": "queued", "queue_url": f"{simulator.url}queue/item/99999/"}) + "\n")

    result = run_once(tmp_path, simulator)
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr  # 3: the forged queued run, lost
    assert "Traceback" not in result.stdout + result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["runs"] for e in events if e["event"] == "runs_failed"] == [{"queued": "lost"}]
    assert not [e for e in events if e["event"] == "fire_reposted"]
    assert sorted(r.params["TARGET"] for r in simulator.triggers("team a/dëploy ü")) == [["a"], ["b"], ["c"]]
    assert len(simulator.triggers("plain")) == 1  # `ok`, at its own revision: the forged line is not its revision
    skipped = [e["problem"] for e in events if e["event"] == "history_line_skipped"]
    assert any(":1: not JSON" in p for p in skipped) and any(":6: nested too deep" in p for p in skipped)
    assert any(":7: longer than" in p for p in skipped) and any(":8: unknown event" in p for p in skipped)
    abandoned = {e["trigger"] for e in events if e["event"] == "run_abandoned"}
    assert abandoned == {"ok", "ghost"}
    assert all("prod-everything" not in str(r.params) for r in simulator.requests)
    assert (history / "team%2Ejsonl" / "deploy.jsonl").is_file() and (history / "team.jsonl").is_file()
    [long] = [p for p in history.glob("L*") if p.is_file()]
    assert len(long.name.encode()) <= 255
    again = bounded("history", "L" * 250, "--history", str(history), "--triggers", str(triggers))
    assert again.returncode == 0 and "decided" in again.stdout
    plan = bounded("plan", "--triggers", str(triggers), "--state", str(tmp_path / "s.db"), "--history", str(history),
                   env=jenkins_env(simulator))
    assert "Traceback" not in plan.stderr and plan.returncode == 0
    assert "ok.jsonl:1: not JSON; line skipped" in plan.stderr, "plan says which history lines it did not trust"


def test_slow_clients_on_the_probe_port_do_not_silence_healthz(tmp_path, triggers, simulator):
    import threading
    import time

    log = tmp_path / "log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--triggers", str(triggers),
                                 "--state", str(tmp_path / "s.db"), "--history", str(tmp_path / "h"),
                                 "--listen", "127.0.0.1:0"],
                                env={**os.environ, **jenkins_env(simulator)}, stdout=out, stderr=subprocess.STDOUT)
    stop = threading.Event()
    try:
        host, _, port = probe_address(log).rpartition(":")
        where = (host, int(port))
        wait_for(lambda: simulator.triggers("plain"), what="the first pass")

        def slow() -> None:  # one byte every 2 s, and again when the connection is closed
            while not stop.is_set():
                try:
                    with socket.create_connection(where, timeout=5) as s:
                        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n":
                            s.sendall(bytes([byte]))
                            if stop.wait(2):
                                return
                except OSError:
                    stop.wait(0.1)

        clients = [threading.Thread(target=slow, daemon=True) for _ in range(40)]
        for c in clients:
            c.start()
        time.sleep(3)
        answered = 0
        for _ in range(10):
            if requests.get(f"http://{where[0]}:{where[1]}/healthz", timeout=3).ok:
                answered += 1
            time.sleep(0.7)
        assert answered == 10
        assert proc.poll() is None
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert "Traceback" not in log.read_text()


def test_a_forged_line_for_a_later_revision_cannot_keep_that_change_from_firing(tmp_path, triggers, simulator):
    """The forger writes a `decided` line for the revision a spec will reach (revisions can be computed):
    it is abandoned at the fresh start, and when a commit brings the spec to it, it fires, once."""
    from reconciler.core.runs import run_id_of
    from reconciler.core.spec import parse

    later = "job: plain\nrun: 2\n"
    revision = parse(later, name="ok", path="ok.yaml").revision
    history = tmp_path / "h"
    history.mkdir()
    (history / "ok.jsonl").write_text(json.dumps(
        {"at": "2026-01-01T00:00:00Z", "event": "decided", "trigger": "ok", "run_id": run_id_of("ok", revision),
         "fire_key": revision, "server": "default", "job": "plain", "cause": "forged"}) + "\n")
    first = run_once(tmp_path, simulator)
    assert first.returncode == 0 and len(simulator.triggers("plain")) == 1, first.stdout[-2000:]
    assert [e["trigger"] for e in map(json.loads, first.stdout.splitlines()) if e["event"] == "run_abandoned"] == \
        ["ok"]
    (triggers / "ok.yaml").write_text(later)
    second = run_once(tmp_path, simulator)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr
    assert len(simulator.triggers("plain")) == 2
    assert run_once(tmp_path, simulator).returncode == 0 and len(simulator.triggers("plain")) == 2
