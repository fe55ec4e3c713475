"""`reconciler check`: specs against the live (simulated) Jenkins, read-only, one read per job."""

from __future__ import annotations

import json

import pytest

from reconciler.jenkins.client import JobDefinition, ParameterDefinition
from reconciler.jenkins.contract import explain_500

from .test_cli import jenkins_env, reconciler

JOBS = [
    {"name": "deploy", "parameters": [{"name": "ENV", "type": "choice", "choices": ["staging", "prod"]},
                                      "VERSION", {"name": "DRY_RUN", "type": "boolean", "default": True}]},
    {"name": "plain"},
    {"name": "off", "disabled": True},
    {"name": "needs", "parameters": [{"name": "TICKET", "default": None}, "NOTE"]},
]

SPECS = {
    "wrong-values": "job: deploy\nparameters:\n  ENV: qa\n  DRY_RUN: maybe\n  VERSION: '1'\n  TYPO: x\n",
    "no-params-job": "job: plain\nparameters: {A: '1'}\n",
    "params-job": "job: deploy\n",
    "disabled": "job: off\n",
    "missing": "job: nowhere\n",
    "tag": "job: deploy\nparameters: {ENV: prod}\nrun_id_parameter: RUN_ID\n",
    "required": "job: needs\nparameters: {NOTE: hi}\n",
    "commit": "job: deploy\nparameters: {ENV: prod}\nprovenance_parameters:\n  sha: GIT_COMMIT\n",
    "fine": "job: deploy\nparameters: {ENV: prod, VERSION: '2', DRY_RUN: false}\n",
}


@pytest.fixture
def sim(make_simulator):
    return make_simulator(jobs=JOBS)


def write(tmp_path, specs):
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    for name, text in specs.items():
        (triggers / f"{name}.yaml").write_text(text)
    return triggers


def test_check_reports_each_mismatch_at_its_position_and_sends_no_post(tmp_path, sim):
    triggers = write(tmp_path, SPECS)
    result = reconciler("check", str(triggers), env=jenkins_env(sim))
    assert result.returncode == 1
    found = set(result.stdout.splitlines())
    t = triggers
    assert found == {
        f"{t}/wrong-values.yaml:3:3: 'qa' is not one of ENV's choices: staging, prod",
        f"{t}/wrong-values.yaml:4:3: DRY_RUN is a boolean parameter: write true or false",
        f"{t}/wrong-values.yaml:6:3: job 'deploy' does not define parameter 'TYPO' (it defines: ENV, VERSION, "
        "DRY_RUN): Jenkins would silently drop it",
        f"{t}/no-params-job.yaml:2:1: job 'plain' takes no parameters: buildWithParameters would fail; remove "
        "`parameters`",
        f"{t}/params-job.yaml:1:1: job 'deploy' is parameterized: a POST to build without parameters is refused; "
        "add `parameters:` (even empty: `parameters: {}`)",
        f"{t}/disabled.yaml:1:1: job 'off' is disabled in Jenkins: it would answer 409",
        f"{t}/missing.yaml:1:1: job 'nowhere' not found on server 'default', or user 'alice' may not read it",
        f"{t}/tag.yaml:3:1: job 'deploy' defines no parameter 'RUN_ID': Jenkins would drop it, and the run could "
        "not be found by it after a crash",
        f"{t}/required.yaml:2:1: job parameter 'TICKET' has no default and the spec does not set it",
        f"{t}/commit.yaml:4:3: job 'deploy' defines no parameter 'GIT_COMMIT': Jenkins would drop it",
    }
    assert "9 specs checked against 5 jobs in 6 reads, as alice on default; 10 problems" in result.stderr
    assert {r.method for r in sim.requests} == {"GET"}


def test_check_reads_each_job_once_however_many_specs_name_it(tmp_path, sim):
    triggers = write(tmp_path, {f"n{i:02}": f"job: plain\nrun: {i + 1}\n" for i in range(40)})
    result = reconciler("check", str(triggers), "--json", env=jenkins_env(sim))
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["problems"] == []
    assert (report["specs"], report["jobs"], report["reads"]) == (40, 1, 2)  # who we are, then the job
    assert len([r for r in sim.requests if r.path == "/job/plain/api/json"]) == 1


def test_check_behind_an_sso_proxy_says_so_for_every_spec(tmp_path, sim):
    sim.sso()
    triggers = write(tmp_path, {"a": "job: plain\n", "b": "job: deploy\nparameters: {ENV: prod}\n"})
    result = reconciler("check", str(triggers), env=jenkins_env(sim))
    assert result.returncode == 2  # the server could not be asked: configuration, not the specs
    assert all("is an SSO proxy in front of Jenkins?" in line for line in result.stdout.splitlines())
    assert "reconciler: server 'default' not checked: " in result.stderr
    assert len(result.stdout.splitlines()) == 2 and {r.method for r in sim.requests} <= {"GET"}


DEFINED = JobDefinition(True, {"ENV": ParameterDefinition("ChoiceParameterDefinition", ("staging", "prod")),
                               "UPSTREAM": ParameterDefinition("RunParameterDefinition"),
                               "VERSION": ParameterDefinition("StringParameterDefinition")})
NO_PARAMETERS = JobDefinition(True, None)


@pytest.mark.parametrize(("parameters", "definition", "version", "words"), [
    ((("ENV", "qa"),), DEFINED, (2, 528, 1), "Illegal choice for parameter 'ENV': 'qa' is not one of staging, prod; "
                                             "change `parameters.ENV` in the spec"),
    ((("VERSION", "1"), ("VERSION", "2")), DEFINED, (2, 528, 1), "parameter 'VERSION' is sent 2 times"),
    ((("UPSTREAM", "build-7"),), DEFINED, (2, 528, 1), "write JOB#NUMBER in `parameters.UPSTREAM`"),
    ((("A", "1"),), NO_PARAMETERS, (2, 462, 3), "job 'j' is not parameterized (Jenkins 2.462.3 answers"),
    ((("A", "1"),), NO_PARAMETERS, None, "is not parameterized (Jenkins of unknown version answers"),
    (None, DEFINED, (2, 528, 1), "job 'j' is parameterized, so a POST to build without parameters fails"),
])
def test_a_bare_500_is_explained_by_the_job_definitions_naming_what_to_change(parameters, definition, version,
                                                                               words):
    assert words in explain_500("j", parameters, definition, version)


@pytest.mark.parametrize(("parameters", "definition", "version"), [
    ((("ENV", "prod"), ("UPSTREAM", "app#7"), ("UNDEFINED", "x"), ("UNDEFINED", "y")), DEFINED, (2, 528, 1)),
    ((("A", "1"),), NO_PARAMETERS, (2, 528, 1)),  # since 2.524 that would have been a 400
    (None, NO_PARAMETERS, (2, 462, 3)),
])
def test_a_500_the_definitions_do_not_explain_is_left_unexplained(parameters, definition, version):
    assert explain_500("j", parameters, definition, version) is None


def test_validate_and_check_warn_where_a_run_cannot_be_looked_up_after_a_crash(tmp_path, sim):
    """Without a job token and without run_id_parameter no run id reaches Jenkins: both commands say so
    at the spec's `job`, suggest the remedies, and still pass (a warning, not an error)."""
    triggers = write(tmp_path, {"untagged": "# a comment\njob: plain\n",
                                "tagged": "job: deploy\nparameters: {ENV: prod}\nrun_id_parameter: RUN_ID\n"})
    for command in ("validate", "check"):
        done = reconciler(command, "--triggers", str(triggers), env=jenkins_env(sim))
        warned = [line for line in done.stderr.splitlines() if ": warning: " in line]
        assert len(warned) == 1 and warned[0].startswith(f"{triggers / 'untagged.yaml'}:2:6: warning: cannot be "
                                                         "made exactly-once after a crash"), done.stderr
        assert "run_id_parameter" in warned[0] and "job_token" in warned[0] and "`unknown`" in warned[0]
        assert command == "check" or done.returncode == 0, done.stdout + done.stderr
    with_token = reconciler("validate", "--triggers", str(triggers),
                            env={**jenkins_env(sim), "JENKINS_JOB_TOKEN": "t"})
    assert ": warning: " not in with_token.stderr and with_token.returncode == 0
