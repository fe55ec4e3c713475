"""The command line as people and machines read it: one JSON document per view, each with its schema
in schema/; missing inputs named in one line with a non-zero exit; a quiet end when the reader goes
away; console logs on a terminal and JSON in a pipe; completion; help that fits the terminal; jobs
written the way people copy them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import pytest

from .test_cli import ROOT, jenkins_env, reconciler

SCHEMAS = ROOT / "schema"


def conforms(name: str, text: str) -> object:
    """`text` is one JSON document of the shape schema/<name>.schema.json describes."""
    document = json.loads(text)
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)
    return document


@pytest.fixture
def ran(tmp_path, simulator):
    """A triggers folder the daemon has run once over: a fired one-shot, a schedule, an invalid spec."""
    triggers = tmp_path / "t"
    (triggers / "team").mkdir(parents=True)
    (triggers / "team" / "deploy.yaml").write_text("job: deploy\nparameters: {ENV: prod}\ncause: ship it\n")
    (triggers / "nightly.yaml").write_text("job: plain\nschedule: '@daily'\n")
    (triggers / "broken.yaml").write_text("job: plain\nparamters: {A: b}\n")
    simulator.state.jenkins.jobs["deploy"].duration = 0.0
    common = ["--triggers", str(triggers), "--state", str(tmp_path / "s.db")]
    once = reconciler("run", "--once", "--wait", *common, "--history", str(tmp_path / "h"), env=jenkins_env(simulator))
    assert once.returncode == 1, once.stdout + once.stderr  # the invalid spec; the others ran
    return triggers, common, tmp_path / "h"


def test_every_view_prints_one_json_document_of_its_schema(ran, simulator):
    triggers, common, history = ran
    env = jenkins_env(simulator)
    status = conforms("status", reconciler("status", "--json", *common).stdout)
    rows = {row["trigger"]: row for row in status}
    assert rows["team/deploy"]["last_run"]["result"] == "SUCCESS" and rows["team/deploy"]["kind"] == "one-shot"
    assert rows["nightly"]["kind"] == "schedule" and rows["nightly"]["schedule"]["next_tick"]
    assert rows["broken"]["state"] == "invalid" and rows["broken"]["errors"] == [
        {"path": "broken.yaml", "line": 2, "column": 1,
         "message": "unknown key 'paramters' (did you mean 'parameters'?)"}]
    assert reconciler("status", "-o", "json", *common).stdout == reconciler("status", "--json", *common).stdout

    plan = conforms("plan", reconciler("plan", "--json", *common, "--history", str(history), env=env).stdout)
    assert {v["trigger"]: v["action"] for v in plan} == {"broken": "invalid", "nightly": "scheduled",
                                                         "team/deploy": "up to date"}
    validate = conforms("validate", reconciler("validate", str(triggers), "--json").stdout)
    assert (validate["checked"], validate["invalid"]) == (3, 1)
    check = conforms("check", reconciler("check", str(triggers / "team"), "--json", env=env).stdout)
    assert check["problems"] == [] and check["users"] == {"default": "alice"}
    nxt = conforms("next", reconciler("next", "nightly", "--count", "2", "--json", *common[:2]).stdout)
    assert len(nxt["ticks"]) == 2 and nxt["cron"] == "0 0 * * *"
    events = conforms("history", reconciler("history", "team/deploy", "--json", "--history", str(history)).stdout)
    assert [e["event"] for e in events["events"]] == ["decided", "queued", "started", "completed"]
    lines = reconciler("history", "team/deploy", "--jsonl", "--history", str(history)).stdout.splitlines()
    assert [json.loads(line) for line in lines] == events["events"]
    build = conforms("logs", reconciler("logs", "team/deploy", "--json", *common, env=env).stdout)
    assert build["build_number"] == 1 and build["build_url"].startswith(simulator.url)


def test_the_history_in_text_says_what_was_sent_what_jenkins_kept_and_who_asked(ran):
    _, _, history = ran
    lines = reconciler("history", "team/deploy", "--history", str(history)).stdout.splitlines()
    decided, completed = lines[0], lines[-1]
    assert "parameters ENV=prod" in decided and "cause 'ship it [reconciler run " in decided
    assert "SUCCESS" in completed and "ran with DRY_RUN=true, ENV=prod, SECRET=****" in completed
    assert "cause note dropped by Jenkins (the job has no build token)" in completed  # no job token here


def test_each_missing_input_exits_non_zero_naming_it(tmp_path, ran):
    triggers, common, history = ran
    nowhere = str(tmp_path / "nowhere")
    cases = [
        (("status", "--triggers", nowhere, "--state", common[3]), 2, f"no triggers folder at {nowhere}"),
        (("status", "--triggers", str(triggers), "--state", nowhere), 2, f"no state store at {nowhere}"),
        (("logs", "team/deploy", "--triggers", str(triggers), "--state", nowhere), 2, f"no state store at {nowhere}"),
        (("retry", "--triggers", str(triggers), "--state", nowhere), 2, f"no state store at {nowhere}"),
        (("history", "team/deploy", "--history", nowhere), 2, f"no history folder at {nowhere}"),
        (("validate", nowhere), 2, f"no such file or folder: {nowhere}"),
        (("plan", "--triggers", nowhere, "--state", common[3]), 2, f"no triggers folder at {nowhere}"),
        (("next", "nope", "--triggers", str(triggers)), 1, "no trigger nope"),
        (("history", "nope", "--triggers", str(triggers), "--history", str(history)), 1, "no trigger nope"),
        (("logs", "nope", *common), 1, "no trigger nope"),
        (("retry", "nope", "team/deploy", *common), 1, "no trigger nope"),
        (("run", "--once", "--triggers", nowhere, "--state", common[3]), 2, f"no triggers folder at {nowhere}"),
    ]
    for args, code, said in cases:
        result = reconciler(*args, env={"JENKINS_URL": "http://127.0.0.1:9/"})
        last = result.stderr.strip().splitlines()[-1:]
        assert result.returncode == code and last and last[0].startswith(f"reconciler: {said}"), (args, last)
        assert "Traceback" not in result.stderr


def test_a_reader_that_goes_away_ends_the_output_quietly(tmp_path):
    from reconciler.store.open import open_store

    triggers = tmp_path / "t"
    triggers.mkdir()
    for i in range(3000):  # far more than a pipe holds: the writer meets the closed pipe
        (triggers / f"trigger-{i:04}.yaml").write_text("job: plain\n")
    open_store(tmp_path / "s.db").close()
    result = subprocess.run(f"{sys.executable} -m reconciler status --triggers {triggers} --state {tmp_path}/s.db "
                            "| head -1", shell=True, capture_output=True, text=True, timeout=120)
    assert result.stdout.startswith("TRIGGER\tKIND") and result.stderr == ""


def _under_a_terminal(args: list[str], env: dict[str, str]) -> str:
    """What a process prints to a pseudo-terminal (a person's terminal, as far as it can tell)."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(args, stdout=follower, stderr=follower, env={**os.environ, **env})
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    proc.wait(timeout=60)
    return shown.decode(errors="replace")


def test_the_daemon_logs_for_people_on_a_terminal_and_json_in_a_pipe(tmp_path, simulator):
    triggers = tmp_path / "t"
    triggers.mkdir()
    (triggers / "a.yaml").write_text("job: plain\n")
    args = [sys.executable, "-m", "reconciler", "run", "--once", "--triggers", str(triggers)]
    env = jenkins_env(simulator)

    def fresh(n: int) -> list[str]:
        return ["--state", str(tmp_path / f"{n}.db"), "--history", str(tmp_path / f"h{n}")]

    coloured = _under_a_terminal([*args, *fresh(1)], {**env, "NO_COLOR": ""})
    assert "fire_decided" in coloured and '"event"' not in coloured and "\033[" in coloured
    plain = _under_a_terminal([*args, *fresh(2)], {**env, "NO_COLOR": "1"})
    assert "fire_decided" in plain and '"event"' not in plain and "\033[" not in plain
    forced = _under_a_terminal([*args, *fresh(3), "--log-format", "json"], env)
    assert '"event": "fire_decided"' in forced  # --log-format wins
    piped = reconciler(*args[3:], *fresh(4), env=env)
    assert next(json.loads(line)["event"] for line in piped.stdout.splitlines()) == "fire_decided"
    assert "\033[" not in piped.stdout


def test_status_is_a_table_on_a_terminal_and_escapes_what_specs_say(tmp_path):
    from reconciler.store.open import open_store

    triggers = tmp_path / "t"
    triggers.mkdir()
    (triggers / "[red]x.yaml").write_text("job: plain\n")  # rich markup in a name stays text
    (triggers / "broken.yaml").write_text("jbo: x\n")
    open_store(tmp_path / "s.db").close()
    shown = _under_a_terminal([sys.executable, "-m", "reconciler", "status", "--triggers", str(triggers),
                               "--state", str(tmp_path / "s.db")], {"NO_COLOR": "", "COLUMNS": "200"})
    assert "[red]x" in shown and "TRIGGER" in shown and "\t" not in shown
    assert "\033[31m" in shown  # invalid, in red


def test_completion_scripts_for_bash_zsh_and_fish_and_the_program_completes_itself(tmp_path):
    for shell in ("bash", "zsh", "fish"):
        script = reconciler("completion", shell)
        assert script.returncode == 0 and "reconciler" in script.stdout and "_ARGCOMPLETE" in script.stdout
    out = tmp_path / "completions"
    subprocess.run([sys.executable, "-m", "reconciler"], env={**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE":
                   "reconciler sta", "COMP_POINT": "14", "_ARGCOMPLETE_STDOUT_FILENAME": str(out)},
                   timeout=60, check=True)
    assert out.read_text().split() == ["status"]


def test_help_is_wrapped_to_the_terminal():
    for command in ("run", "validate", "status", "plan"):
        text = reconciler(command, "--help", env={"COLUMNS": "80"}).stdout
        assert all(len(line) <= 80 for line in text.splitlines()
                   if not line.lstrip().startswith("[")), command  # a usage option is never split


def test_jobs_written_as_people_copy_them(tmp_path, simulator):
    triggers = tmp_path / "t"
    triggers.mkdir()
    (triggers / "seed.yaml").write_text("# from the article\njob: view/testing/job/plain\n")
    (triggers / "folders.yaml").write_text("job: job/team%20a/job/d%C3%ABploy%20%C3%BC\nparameters: {TARGET: eu}\n")
    checked = reconciler("validate", str(triggers))
    assert checked.returncode == 0 and checked.stdout == ""
    assert f"{triggers}/seed.yaml:2:6: note: job 'view/testing/job/plain' read as `job: plain`; `view/testing/` " \
           "dropped: Jenkins finds a job by its folders, not its views" in checked.stderr.splitlines()
    plan = json.loads(reconciler("plan", "--json", "--triggers", str(triggers), "--state", str(tmp_path / "s.db"),
                                 "--history", str(tmp_path / "h"), env=jenkins_env(simulator)).stdout)
    assert {v["trigger"]: v["job"] for v in plan} == {"folders": "team a/dëploy ü", "seed": "plain"}
    once = reconciler("run", "--once", "--triggers", str(triggers), "--state", str(tmp_path / "s.db"),
                      "--history", str(tmp_path / "h"), env=jenkins_env(simulator))
    assert once.returncode == 0, once.stdout
    assert len(simulator.triggers("plain")) == 1 and len(simulator.triggers("team a/dëploy ü")) == 1

    (triggers / "url.yaml").write_text("job: https://ci.example.com/view/testing/job/sample_selenium_test/"
                                       "buildWithParameters\n")
    refused = reconciler("validate", str(triggers / "url.yaml"))
    assert refused.returncode == 1 and refused.stdout.strip() == (
        f"{triggers}/url.yaml:1:6: job: a job is named by its path, never a URL (a spec names no host: the server "
        "comes from the operator's config); write `job: sample_selenium_test`")


def test_the_view_schemas_are_valid_json_schemas():
    for path in SCHEMAS.glob("*.schema.json"):
        jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_validate_shows_every_problem_of_a_file_at_once(tmp_path):
    (tmp_path / "a.yaml").write_text("job: ''\ntimezone: UTC\n")
    result = reconciler("validate", str(tmp_path / "a.yaml"))
    assert result.returncode == 1 and result.stdout.splitlines() == [
        f"{tmp_path}/a.yaml:1:6: job: is empty",
        f"{tmp_path}/a.yaml:1:1: timezone applies only to scheduled triggers: add `schedule:`"]
