"""The command line, run as a user runs it: a real process, real files, the simulator over HTTP."""

from __future__ import annotations

import json
import os
import resource
import socket
import struct
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from .conftest import TOKEN, USER, wait_for

ROOT = Path(__file__).parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "specs"


def reconciler(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout)


def jenkins_env(sim) -> dict[str, str]:
    return {"JENKINS_URL": sim.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN}


def test_validate_passes_the_bundled_examples():
    result = reconciler("validate", str(ROOT / "triggers"))
    assert result.returncode == 0, result.stdout
    assert "0 invalid" in result.stderr


def test_validate_prints_file_line_column_per_error_and_exits_1():
    result = reconciler("validate", str(FIXTURES))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"{FIXTURES}/unknown-key.yaml:2:1: unknown key 'paramters' (did you mean 'parameters'?)" in lines
    assert f"{FIXTURES}/duplicate-key.yaml:3:1: duplicate key \"job\"" in lines
    assert not any("valid.yaml:" in line and "/valid.yaml" in line for line in lines)


def test_validate_fails_files_the_daemon_would_reject_by_their_names(tmp_path):
    (tmp_path / "a.yaml").write_text("job: a\n")
    (tmp_path / "a.yml").write_text("job: a\n")
    with open(os.fsencode(tmp_path) + b"/caf\xe9.yaml", "wb") as f:
        f.write(b"job: b\n")
    result = reconciler("validate", str(tmp_path))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"{tmp_path}/a.yml:1:1: trigger 'a' is already defined by a.yaml",
                                          f"{tmp_path}/caf\\xe9.yaml:1:1: the file name is not UTF-8 text: "
                                          "rename the file"]
    assert "3 specs checked, 2 invalid" in result.stderr


def test_validate_judges_the_files_pre_commit_passes_as_the_daemon_judges_them(tmp_path):
    (tmp_path / "a.yaml").write_text("job: a\n")
    (tmp_path / "a.yml").write_text("job: a\n")
    (tmp_path / "big.yaml").write_text("job: a\n" + "# padding\n" * 30_000)
    latin1 = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.yaml")
    Path(latin1).write_text("job: a\n")
    files = [str(tmp_path / "a.yaml"), str(tmp_path / "a.yml"), str(tmp_path / "big.yaml"), latin1]
    result = reconciler("validate", *files)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{tmp_path}/a.yml:1:1: trigger 'a' is already defined by a.yaml",
        f"{tmp_path}/big.yaml:1:1: cannot read: larger than 256 KiB, where a trigger spec takes a few hundred bytes",
        f"{tmp_path}/caf\\xe9.yaml:1:1: the file name is not UTF-8 text: rename the file"]
    assert "4 specs checked, 3 invalid" in result.stderr


def test_validate_refuses_a_spec_nested_a_hundred_thousand_deep_without_crashing(tmp_path):
    """Composing it recursed in C until the process died (SIGSEGV): the daemon would have too."""
    (tmp_path / "deep.yaml").write_text("job: plain\nparameters: {A: " + "[" * 100_000 + "]" * 100_000 + "}\n")
    result = reconciler("validate", str(tmp_path / "deep.yaml"))
    assert (result.returncode, result.stdout) == (
        1, f"{tmp_path}/deep.yaml:2:47: nested more than 32 levels deep; a trigger spec needs two\n")


def test_validate_refuses_a_huge_file_a_pipe_and_a_link_to_dev_zero_without_stalling(tmp_path):
    (tmp_path / "big.yaml").write_text("job: a\n" + "# padding\n" * 30_000)  # 300 KB
    os.mkfifo(tmp_path / "pipe.yaml")  # opened for reading, a pipe waits for a writer
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")  # git keeps links; this one never ends
    (tmp_path / "ok.yaml").write_text("job: ok\n")
    result = subprocess.run([sys.executable, "-m", "reconciler", "validate", str(tmp_path)], capture_output=True,
                            text=True, timeout=60,  # 1 GiB of address space: reading /dev/zero whole fails fast
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)))
    too_big = "1:1: cannot read: larger than 256 KiB, where a trigger spec takes a few hundred bytes"
    assert result.stdout.splitlines() == [f"{tmp_path}/big.yaml:{too_big}",
                                          f"{tmp_path}/pipe.yaml:1:1: not a regular file (a pipe, socket or "
                                          "device): not read",
                                          f"{tmp_path}/zero.yaml:1:1: a symlink that leads out of the triggers "
                                          "directory: not read"]
    assert result.returncode == 1


def test_run_refuses_a_server_config_nested_a_hundred_thousand_deep_in_one_line(tmp_path, simulator):
    (tmp_path / "reconciler.yaml").write_text("servers: " + "[" * 100_000 + "]" * 100_000 + "\n")
    (tmp_path / "triggers").mkdir()
    result = reconciler("run", "--once", "--triggers", str(tmp_path / "triggers"), "--config",
                        str(tmp_path / "reconciler.yaml"), "--state", str(tmp_path / "s.db"),
                        "--history", str(tmp_path / "h"), env=jenkins_env(simulator))
    assert (result.returncode, result.stderr.splitlines()[-1]) == (
        2, f"reconciler: {tmp_path}/reconciler.yaml:1:41: nested more than 32 levels deep")


def test_a_folder_named_like_a_history_file_stops_no_start(tmp_path, simulator):
    (tmp_path / "h" / "a.jsonl").mkdir(parents=True)  # a "history file" that is a folder: not a history file
    (tmp_path / "t" / "a.jsonl").mkdir(parents=True)  # and a trigger in a folder named like one
    (tmp_path / "t" / "a.jsonl" / "deploy.yaml").write_text("job: deploy\nparameters: {ENV: prod}\n")
    (tmp_path / "t" / "team.yaml").write_text("job: plain\n")
    result = reconciler("run", "--once", "--triggers", str(tmp_path / "t"), "--state", str(tmp_path / "s.db"),
                        "--history", str(tmp_path / "h"), env=jenkins_env(simulator))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert len(simulator.triggers("plain")) == 1 and len(simulator.triggers("deploy")) == 1
    assert (tmp_path / "h" / "a%2Ejsonl" / "deploy.jsonl").is_file() and (tmp_path / "h" / "a.jsonl").is_dir()


def test_validate_takes_single_files():
    assert reconciler("validate", str(FIXTURES / "valid.yaml")).returncode == 0
    assert reconciler("validate", str(FIXTURES / "empty.yaml")).returncode == 1


def test_plan_says_per_trigger_what_a_pass_would_do(tmp_path, simulator):
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    (triggers / "a.yaml").write_text("job: plain\n")
    (triggers / "b.yaml").write_text("job: plain\nsuspend: true\n")
    (triggers / "c.yaml").write_text("jb: plain\n")
    result = reconciler("plan", "--json", "--triggers", str(triggers), "--state", str(tmp_path / "s.db"),
                        "--history", str(tmp_path / "h"), env=jenkins_env(simulator))
    assert result.returncode == 1  # an invalid spec
    verdicts = {v["trigger"]: (v["action"], v["endpoint"]) for v in json.loads(result.stdout)}
    assert verdicts == {"a": ("fire", "build"), "b": ("suspended", "build"), "c": ("invalid", None)}


def test_run_once_status_and_history(tmp_path, simulator):
    triggers = tmp_path / "triggers"
    (triggers / "team").mkdir(parents=True)
    (triggers / "team" / "deploy.yaml").write_text("job: deploy\nparameters: {ENV: prod}\n")
    env = {**jenkins_env(simulator), "RECONCILER_TRIGGERS": str(triggers),
           "RECONCILER_STATE": str(tmp_path / "state.db"), "RECONCILER_HISTORY": str(tmp_path / "history")}
    simulator.state.jenkins.jobs["deploy"].duration = 0.0
    result = reconciler("run", "--once", "--wait", env=env)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line)["event"] for line in result.stdout.splitlines()]
    assert events[:1] == ["fire_decided"] and "build_completed" in events
    assert TOKEN not in result.stdout + result.stderr

    status = json.loads(reconciler("status", "--json", env=env).stdout)
    assert [(s["trigger"], s["state"], s["last_run"]["result"]) for s in status] == \
        [("team/deploy", "fired", "SUCCESS")]
    history = reconciler("history", "team/deploy", env=env).stdout.splitlines()
    assert [line.split()[1] for line in history] == ["decided", "queued", "started", "completed"]

    again = reconciler("run", "--once", env=env)
    assert again.returncode == 0 and len(simulator.triggers("deploy")) == 1


def adopt_one(tmp_path, simulator, name: str, text: str):
    """A triggers directory holding one spec, and `reconciler adopt` run over it."""
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    (triggers / f"{name}.yaml").write_text(text)
    common = ["--triggers", str(triggers), "--state", str(tmp_path / "s.db"), "--history", str(tmp_path / "h")]
    return common, reconciler("adopt", *common, env=jenkins_env(simulator))


def test_adopt_marks_existing_one_shots_done_without_firing(tmp_path, simulator):
    common, adopted = adopt_one(tmp_path, simulator, "old", "job: plain\n")
    assert adopted.returncode == 0 and "adopted old" in adopted.stdout
    assert reconciler("run", "--once", *common, env=jenkins_env(simulator)).returncode == 0
    assert simulator.triggers() == []


def test_run_without_a_server_explains_what_to_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JENKINS_")}
    result = subprocess.run([sys.executable, "-m", "reconciler", "run", "--once", "--triggers", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert "set JENKINS_URL" in result.stderr


def test_simulator_command_serves_until_stopped_and_says_nothing_of_a_client_killed_mid_request(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "simulator", "--port", "0", "--job", "a/b c",
                             "--user", "bob:bob-token", "--quiet-period", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as killed:  # half a request, then a reset (RST)
            killed.sendall(b"POST /job/a/job/b%20c/build HTTP/1.1\r\nHost: x\r\n")
            killed.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        r = requests.post(url + "job/a/job/b%20c/build", auth=("bob", "bob-token"), timeout=10)
        assert r.status_code == 201
        assert requests.get(url + "_sim/requests", timeout=10).json()[0]["user"] == "bob"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "Traceback" not in err and "reset" not in err, err


def test_simulator_help_documents_it():
    out = reconciler("simulator", "--help").stdout
    for flag in ("--port", "--config", "--job", "--user", "--no-csrf", "--quiet-period"):
        assert flag in out


def test_the_demo_shows_builds_firing_and_completing(tmp_path):
    result = reconciler("demo", "--triggers", str(ROOT / "triggers"), "--workdir", str(tmp_path / "demo"),
                        timeout=120)
    assert result.returncode == 0, result.stderr
    assert "deploy #1: SUCCESS  (ENV=staging, VERSION=1.4.2)" in result.stdout
    wait_for(lambda: (tmp_path / "demo" / "history" / "deploy-staging.jsonl").exists())


def test_the_checked_in_schema_matches_the_code():
    """Editors read schema/trigger.schema.json; regenerate it with `reconciler schema`."""
    assert reconciler("schema").stdout == (ROOT / "schema" / "trigger.schema.json").read_text()


def test_adopt_leaves_schedules_alone(tmp_path, simulator):
    _, adopted = adopt_one(tmp_path, simulator, "nightly", "job: plain\nschedule: '@daily'\n")
    assert adopted.returncode == 0 and "0 triggers adopted" in adopted.stderr



def test_run_once_wait_exits_3_when_a_build_fails_or_a_run_is_refused_and_0_when_all_succeed(tmp_path, make_simulator):
    sim = make_simulator(jobs=[{"name": "good", "duration": 0}, {"name": "bad", "duration": 0, "result": "FAILURE"}])
    triggers = tmp_path / "t"
    triggers.mkdir()
    (triggers / "good.yaml").write_text("job: good\n")
    common = ["--triggers", str(triggers), "--state", str(tmp_path / "s.db"), "--history", str(tmp_path / "h")]
    assert reconciler("run", "--once", "--wait", *common, env=jenkins_env(sim)).returncode == 0
    (triggers / "bad.yaml").write_text("job: bad\n")
    failed = reconciler("run", "--once", "--wait", *common, env=jenkins_env(sim))
    assert failed.returncode == 3 and '"runs_failed"' in failed.stdout and '"bad": "FAILURE"' in failed.stdout
    (triggers / "missing.yaml").write_text("job: missing\n")
    refused = reconciler("run", "--once", *common, env=jenkins_env(sim))
    assert refused.returncode == 3 and '"missing": "refused"' in refused.stdout
    wrong_token = reconciler("run", "--once", *common, env={**jenkins_env(sim), "JENKINS_API_TOKEN": "wrong"})
    assert wrong_token.returncode == 3  # the refused run is tried again at start, and refused again
    planned = dict(line.split("\t")[:2] for line in reconciler("plan", *common, env=jenkins_env(sim)).stdout
                   .splitlines()[1:])
    assert planned == {"bad": "up to date", "good": "up to date", "missing": "pending"}  # and the refused one


def test_run_once_timeout_bounds_the_wait_and_exits_4(tmp_path, make_simulator):
    sim = make_simulator(jobs=[{"name": "slow", "duration": None}])
    triggers = tmp_path / "t"
    triggers.mkdir()
    (triggers / "slow.yaml").write_text("job: slow\n")
    result = reconciler("run", "--once", "--wait", "--timeout", "2s", "--triggers", str(triggers), "--state",
                        str(tmp_path / "s.db"), "--history", str(tmp_path / "h"), env=jenkins_env(sim))
    assert result.returncode == 4 and '"wait_timed_out"' in result.stdout


def test_version_is_printed():
    result = reconciler("--version")
    assert result.returncode == 0 and result.stdout.startswith("reconciler 0.")


def test_status_lists_every_trigger_never_run_invalid_and_deleted_marked(tmp_path, simulator):
    triggers = tmp_path / "t"
    triggers.mkdir()
    (triggers / "done.yaml").write_text("job: plain\n")
    (triggers / "gone.yaml").write_text("job: team a/dëploy ü\nparameters: {TARGET: eu}\n")  # its own job: #1
    common = ["--triggers", str(triggers), "--state", str(tmp_path / "s.db")]
    assert reconciler("run", "--once", "--wait", *common, "--history", str(tmp_path / "h"),
                      env=jenkins_env(simulator)).returncode == 0
    (triggers / "gone.yaml").unlink()
    (triggers / "new.yaml").write_text("job: plain\nrun: 3\n")
    (triggers / "broken.yaml").write_text("jbo: plain\n")
    lines = reconciler("status", *common).stdout.splitlines()
    assert lines[0].split("\t") == ["TRIGGER", "KIND", "STATE", "LAST RUN", "BUILD", "AGE", "NEXT TICK", "DETAIL"]
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in lines[1:]}
    assert rows["done"][:3] == ["one-shot", "fired", "SUCCESS"] and rows["done"][3].startswith(simulator.url)
    assert rows["gone"][:3] == ["", "deleted", "SUCCESS"]
    assert rows["new"][:2] == ["one-shot", "pending"] and rows["new"][6].endswith("not fired yet")
    assert rows["broken"][1] == "invalid" and rows["broken"][6].startswith("broken.yaml:1:1: ")
    [done] = [r for r in json.loads(reconciler("status", "--json", *common).stdout) if r["trigger"] == "done"]
    run = done["last_run"]
    assert (done["state"], done["job"], done["server"], run["build_number"]) == ("fired", "plain", "default", 1)
    assert run["duration_ms"] is not None and run["build_url"].startswith(simulator.url)


def test_bad_listen_values_and_busy_addresses_are_one_line_with_exit_2(tmp_path, simulator):
    triggers = tmp_path / "t"
    triggers.mkdir()
    common = ["run", "--triggers", str(triggers), "--state", str(tmp_path / "s.db"), "--history", str(tmp_path / "h")]
    bad = reconciler(*common, "--listen", "localhost:notaport", env=jenkins_env(simulator))
    assert (bad.returncode, bad.stderr.strip().splitlines()[-1]) == (
        2, "reconciler: --listen 'localhost:notaport': expected HOST:PORT with a port number, e.g. 0.0.0.0:9090")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = reconciler(*common, "--listen", f"127.0.0.1:{port}", env=jenkins_env(simulator))
    assert taken.returncode == 2 and "Traceback" not in taken.stderr
    assert taken.stderr.strip().splitlines()[-1] == \
        f"reconciler: --listen 127.0.0.1:{port}: cannot listen there: Address already in use"


def test_next_and_history_tell_a_missing_trigger_from_one_without_ticks_or_runs(tmp_path):
    triggers = tmp_path / "t"
    triggers.mkdir()
    (triggers / "once.yaml").write_text("job: plain\n")
    (triggers / "nightly.yaml").write_text("job: plain\nschedule: '@daily'\n")
    assert "no trigger nope" in reconciler("next", "nope", "--triggers", str(triggers)).stderr
    assert "one-shot trigger" in reconciler("next", "once", "--triggers", str(triggers)).stderr
    (tmp_path / "h").mkdir()
    fresh = reconciler("history", "nightly", "--triggers", str(triggers), "--history", str(tmp_path / "h"))
    assert (fresh.returncode, fresh.stderr.strip()) == (0, "reconciler: nightly has no runs yet")
    assert reconciler("history", "nope", "--triggers", str(triggers), "--history", str(tmp_path / "h")).returncode == 1


def test_a_spec_naming_an_unknown_server_is_invalid_to_validate_run_once_and_the_daemon(tmp_path, simulator):
    triggers = tmp_path / "t"
    triggers.mkdir()
    (triggers / "ok.yaml").write_text("job: plain\n")
    (triggers / "elsewhere.yaml").write_text("# deploys to the release Jenkins\njob: plain\nserver: release\n")
    env = jenkins_env(simulator)
    checked = reconciler("validate", str(triggers), env=env)
    assert checked.returncode == 1
    assert checked.stdout.strip() == f"{triggers}/elsewhere.yaml:3:9: server 'release' is not configured " \
                                     "(known: default)"
    assert reconciler("validate", str(triggers / "elsewhere.yaml"), env=env).returncode == 1
    assert reconciler("validate", str(triggers), env={"JENKINS_URL": ""}).returncode == 0  # no servers known here
    once = reconciler("run", "--once", "--triggers", str(triggers), "--state", str(tmp_path / "s.db"),
                      "--history", str(tmp_path / "h"), env=env)
    assert once.returncode == 1 and len(simulator.triggers("plain")) == 1
    invalid = [json.loads(line) for line in once.stdout.splitlines() if '"spec_invalid"' in line]
    assert [e["trigger"] for e in invalid] == ["elsewhere"]


def test_every_subcommand_has_a_description_and_an_example():
    for command in ("run", "validate", "check", "plan", "next", "status", "history", "logs", "adopt", "retry",
                    "simulator", "schema", "demo"):
        text = reconciler(command, "--help").stdout
        _, _, rest = text.partition("\n\n")  # after the usage lines
        assert rest.strip() and not rest.startswith(("positional", "options")), command  # a description
        assert "example" in text, command


def test_validate_judges_the_servers_config_as_config_with_its_position(tmp_path):
    triggers = tmp_path / "t"
    triggers.mkdir()
    (triggers / "ok.yaml").write_text("job: plain\n")
    config = tmp_path / "servers.yaml"
    config.write_text("servers:\n  default:\n    url: https://ci.example.com/\n    ussr: bot\n")
    result = reconciler("validate", str(triggers / "ok.yaml"), str(config), "--config", str(config))
    assert result.returncode == 1
    assert result.stdout.strip() == f"{config}:4:5: unknown key servers.default.ussr (did you mean 'user'?)"
    config.write_text("servers:\n  default:\n    url: https://ci.example.com/\n")
    assert reconciler("validate", str(triggers / "ok.yaml"), str(config), "--config", str(config)).returncode == 0


def test_plan_at_a_later_time_agrees_on_a_fresh_store_and_after_the_daemon_ran(tmp_path, simulator):
    triggers = tmp_path / "t"
    triggers.mkdir()
    (triggers / "hourly.yaml").write_text("job: plain\nschedule: '0 * * * *'\nstarting_deadline: 59m\n")
    at = (datetime.now(UTC) + timedelta(hours=2)).replace(minute=30).isoformat()
    common = ["--triggers", str(triggers), "--state", str(tmp_path / "s.db"), "--history", str(tmp_path / "h")]
    fresh = reconciler("plan", *common, "--at", at, env=jenkins_env(simulator)).stdout.splitlines()[1].split()[:2]
    assert reconciler("run", "--once", *common, env=jenkins_env(simulator)).returncode == 0
    after = reconciler("plan", *common, "--at", at, env=jenkins_env(simulator)).stdout.splitlines()[1].split()[:2]
    assert fresh == after == ["hourly", "fire"]


def test_status_is_coloured_on_a_terminal_and_plain_when_piped(tmp_path):
    import pty

    triggers = tmp_path / "t"
    triggers.mkdir()
    (triggers / "broken.yaml").write_text("jbo: x\n")
    assert reconciler("adopt", "--triggers", str(triggers), "--state", str(tmp_path / "s"), "--history",
                      str(tmp_path / "h")).returncode == 1  # makes the store; the broken spec is invalid
    args = [sys.executable, "-m", "reconciler", "status", "--triggers", str(triggers), "--state", str(tmp_path / "s")]
    assert "\033[" not in subprocess.run(args, capture_output=True, text=True, timeout=60).stdout
    leader, follower = pty.openpty()
    proc = subprocess.Popen(args, stdout=follower, stderr=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": ""})
    os.close(follower)
    proc.wait(timeout=60)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert b"\033[31minvalid" in shown


def test_logs_prints_the_console_of_the_latest_build(tmp_path, simulator):
    triggers = tmp_path / "t"
    triggers.mkdir()
    (triggers / "deploy.yaml").write_text("job: plain\n")
    common = ["--triggers", str(triggers), "--state", str(tmp_path / "s.db")]
    assert reconciler("run", "--once", "--wait", *common, "--history", str(tmp_path / "h"),
                      env=jenkins_env(simulator)).returncode == 0
    shown = reconciler("logs", "deploy", "--follow", *common, env=jenkins_env(simulator))
    assert shown.returncode == 0
    assert "Started by user Alice Example" in shown.stdout and "Finished: SUCCESS" in shown.stdout
    assert reconciler("logs", "nope", *common, env=jenkins_env(simulator)).returncode == 1  # no such trigger


def test_logs_follow_waits_for_the_build_of_a_newer_run_still_queued(tmp_path, harness):
    """A new revision's run waits in the queue behind the previous build (the job runs one build at a
    time): `logs --follow` waits for its build rather than show the previous one, then prints it."""
    harness.write("deploy", "job: serial\nparameters: {N: first}\n")
    harness.start()
    wait_for(lambda: harness.runs("deploy")[0].status == "building", what="the first build")
    harness.write("deploy", "job: serial\nparameters: {N: second}\n")
    wait_for(lambda: len(harness.runs("deploy")) == 2 and harness.runs("deploy")[0].status == "queued",
             what="the new run queued behind the first build")
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("w") as stdout, err.open("w") as stderr:
        follower = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "logs", "deploy", "--follow", "--triggers", str(harness.triggers),
             "--state", str(harness.state)], stdout=stdout, stderr=stderr,
            env={**os.environ, **jenkins_env(harness.sim)})
    try:
        wait_for(lambda: "waiting for its build to start" in err.read_text(), timeout=30, what="the wait said")
        time.sleep(1.5)  # the command reads the store each second: it would have shown build #1 by now
        assert out.read_text() == "" and follower.poll() is None
        assert harness.runs("deploy")[0].status == "queued"

        harness.sim.finish("serial", 1)  # the new run's build starts
        wait_for(lambda: "N=second" in out.read_text(), timeout=30, what="the new build's console")
        harness.sim.finish("serial", 2)
        assert follower.wait(timeout=30) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    shown = out.read_text()
    assert "N=first" not in shown and "Finished: SUCCESS" in shown
    assert harness.runs("deploy")[0].build_number == 2
