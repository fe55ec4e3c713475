"""The operator's policy: a pure function from a spec and the rules to what the spec may not ask, with
the offending key's position. No I/O; the globs and the rules are checked against a naive reference."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.policy import Rule, Violation, glob_problem, matches, problems, violations
from reconciler.core.spec import parse

TEAM_A = Rule(triggers=("team-a/**",), servers=("default",), jobs=("team-a/*", "shared/lint"),
              parameters=(("ENV", ("staging", "qa-*")),), schedule=False)


def spec(name: str, text: str):
    return parse(text, name=name, path=f"{name}.yaml")


def test_an_allowed_spec_has_no_violation():
    allowed = spec("team-a/deploy", "job: team-a/deploy\nparameters:\n  ENV: qa-3\n  OTHER: anything\n")
    assert violations(allowed, [TEAM_A]) == []
    assert violations(spec("team-a/lint", "job: shared/lint\n"), [TEAM_A]) == []


def test_without_a_policy_everything_is_allowed():
    assert violations(spec("x", "job: prod/deploy\nschedule: '@daily'\n"), None) == []


def test_each_violation_names_the_key_the_rule_and_what_it_allows():
    text = ("server: other\n"
            "job: prod/deploy\n"
            "parameters:\n"
            "  ENV: production\n"
            "schedule: '@daily'\n")
    found = violations(spec("team-a/x", text), [TEAM_A])
    assert [v.loc for v in found] == [("server",), ("job",), ("schedule",), ("parameters", "ENV")]
    rule = "policy rule 1 (triggers: team-a/**)"
    assert found[0].message == f"server 'other' is not allowed by {rule}: it allows servers default"
    assert found[1].message == f"job 'prod/deploy' is not allowed by {rule}: it allows jobs team-a/*, shared/lint"
    assert rule in found[2].message and "schedule: false" in found[2].message
    assert found[3].message == f"parameter ENV='production' is not allowed by {rule}: it allows ENV staging, qa-*"
    assert [(p.line, p.column) for p in problems(text, found)] == [(1, 1), (2, 1), (5, 1), (4, 3)]


def test_a_trigger_no_rule_matches_may_fire_nothing():
    found = violations(spec("team-b/deploy", "job: team-a/deploy\n"), [TEAM_A])
    assert len(found) == 1 and found[0].loc == ()
    assert "no policy rule covers trigger 'team-b/deploy' (the rules cover team-a/**)" in found[0].message
    assert violations(spec("x", "job: j\n"), []) != []  # `policy: []`: nothing may fire


def test_the_first_matching_rule_applies_not_the_most_permissive():
    rules = [Rule(triggers=("team-a/prod/**",), jobs=("team-a/prod-*",), number=1),
             Rule(triggers=("team-a/**",), number=2)]
    assert violations(spec("team-a/prod/x", "job: team-a/other\n"), rules)[0].loc == ("job",)
    assert violations(spec("team-a/dev/x", "job: team-a/other\n"), rules) == []


def test_a_restricted_parameter_cannot_be_filled_from_the_commit_the_run_or_the_tick():
    """The commit's subject is whatever the committer typed: it would carry any value past the policy."""
    text = "job: team-a/x\nprovenance_parameters: {subject: ENV}\nrun_id_parameter: OTHER\n"
    found = violations(spec("team-a/x", text), [TEAM_A])
    assert [v.loc for v in found] == [("provenance_parameters", "subject")]
    assert "sets parameter ENV" in found[0].message
    assert [v.loc for v in violations(spec("team-a/y", "job: team-a/x\nrun_id_parameter: ENV\n"), [TEAM_A])] == \
        [("run_id_parameter",)]


def test_star_stays_in_one_segment_and_double_star_crosses_them():
    assert matches("team-a/*", "team-a/deploy") and not matches("team-a/*", "team-a/sub/deploy")
    assert matches("team-a/**", "team-a/sub/deploy") and matches("team-a/**", "team-a/deploy")
    assert not matches("team-a/**", "team-a") and not matches("team-a/**", "team-ab/x")
    assert matches("**/lint", "lint") and matches("**/lint", "a/b/lint") and not matches("**/lint", "a/lint2")
    assert matches("a/**/z", "a/z") and matches("a/**/z", "a/b/c/z")
    assert matches("qa-*", "qa-") and not matches("qa-*", "qa-1/2")
    assert matches("a?[b]", "a?[b]") and not matches("a?[b]", "ab")  # only * is special


def test_a_double_star_inside_a_segment_is_refused_with_a_reason():
    assert glob_problem("team-**") is not None and "whole path segments" in glob_problem("team-**")
    assert glob_problem("") is not None
    assert glob_problem("team-a/**") is None and glob_problem("*/x*y") is None


# -- against a naive reference ------------------------------------------------------------------------

def ref_segment(pattern: str, text: str) -> bool:
    """One segment, `*` any run of characters: tried at every split, no regular expressions."""
    if not pattern:
        return not text
    if pattern[0] == "*":
        return any(ref_segment(pattern[1:], text[i:]) for i in range(len(text) + 1))
    return bool(text) and text[0] == pattern[0] and ref_segment(pattern[1:], text[1:])


def ref_match(pattern: str, name: str) -> bool:
    """Segment by segment; `**` is any number of whole segments, and at least one at the end."""
    def go(ps: list[str], ns: list[str]) -> bool:
        if not ps:
            return not ns
        if ps[0] == "**":
            least = 1 if len(ps) == 1 else 0
            return any(go(ps[1:], ns[i:]) for i in range(least, len(ns) + 1))
        return bool(ns) and ref_segment(ps[0], ns[0]) and go(ps[1:], ns[1:])
    return go(pattern.split("/"), name.split("/"))


def ref_violations(name: str, job: str, server: str, params: dict[str, str], scheduled: bool,
                   rules: list[Rule] | None) -> set[tuple[str, ...]]:
    if rules is None:
        return set()
    for rule in rules:
        if any(ref_match(p, name) for p in rule.triggers):
            break
    else:
        return {()}
    out: set[tuple[str, ...]] = set()
    if rule.servers is not None and not any(ref_match(p, server) for p in rule.servers):
        out.add(("server",))
    if rule.jobs is not None and not any(ref_match(p, job) for p in rule.jobs):
        out.add(("job",))
    if scheduled and not rule.schedule:
        out.add(("schedule",))
    for key, value in params.items():
        for pname, globs in rule.parameters:
            if pname == key and not any(ref_match(g, value) for g in globs):
                out.add(("parameters", key))
    return out


segment = st.text(alphabet="ab-", min_size=1, max_size=3)
names = st.lists(segment, min_size=1, max_size=4).map("/".join)
glob_segment = st.one_of(st.text(alphabet="ab*", min_size=1, max_size=3), st.just("**"))
globs = st.lists(glob_segment, min_size=1, max_size=4).map("/".join)


@settings(max_examples=600, deadline=None)
@given(globs, names)
def test_globs_match_as_the_naive_reference_does(pattern: str, name: str):
    assert matches(pattern, name) == ref_match(pattern, name)


rules = st.builds(
    Rule, triggers=st.lists(globs, min_size=1, max_size=2).map(tuple),
    servers=st.none() | st.lists(st.sampled_from(["default", "prod", "*"]), max_size=2).map(tuple),
    jobs=st.none() | st.lists(globs, max_size=2).map(tuple),
    parameters=st.lists(st.tuples(st.sampled_from(["ENV", "V"]), st.lists(segment | globs, max_size=2).map(tuple)),
                        max_size=2, unique_by=lambda p: p[0]).map(tuple),
    schedule=st.booleans())


@settings(max_examples=300, deadline=None)
@given(name=names, job=names, server=st.sampled_from(["default", "prod"]),
       params=st.dictionaries(st.sampled_from(["ENV", "V", "W"]), segment, max_size=3),
       scheduled=st.booleans(), policy=st.none() | st.lists(rules, max_size=3))
def test_violations_are_what_the_naive_reference_finds(name, job, server, params, scheduled, policy):
    text = f"job: '{job}'\nserver: {server}\n" + ("schedule: '@daily'\n" if scheduled else "") + \
        ("parameters:\n" + "".join(f"  {k}: '{v}'\n" for k, v in params.items()) if params else "")
    found = violations(spec(name, text), policy)
    assert {v.loc for v in found} == ref_violations(name, job, server, params, scheduled, policy)
    assert all(isinstance(v, Violation) and v.message for v in found)


# -- end to end: a real daemon process, a simulated Jenkins ---------------------------------------------

POLICY = """\
policy:
  - triggers: ["team-a/**"]
    servers: [default]
    jobs: ["team-a/*", "shared/lint"]
    parameters: {ENV: [staging, "qa-*"]}
    schedule: false
"""
ALLOWED = "job: team-a/deploy\nparameters:\n  ENV: staging\n"
REFUSED = {  # trigger: (spec, the position and words of its error)
    "team-a/wrong-job": ("# moved\njob: prod/deploy\n", "2:1", "job 'prod/deploy' is not allowed by policy rule 1"),
    "team-a/wrong-env": ("job: team-a/deploy\nparameters:\n  ENV: production\n", "3:3",
                         "parameter ENV='production' is not allowed by policy rule 1 (triggers: team-a/**): "
                         "it allows ENV staging, qa-*"),
    "team-a/nightly": ("# nightly\njob: team-a/deploy\nschedule: '@daily'\n", "3:1", "`schedule:` is not allowed"),
    "team-b/deploy": ("job: team-a/deploy\n", "1:1", "no policy rule covers trigger 'team-b/deploy'"),
}


def test_the_policy_lets_its_specs_fire_and_refuses_the_others_with_positions_never_posting_them(
        make_harness, tmp_path):
    import subprocess
    import sys

    from .conftest import TOKEN, USER

    harness = make_harness(jobs=[{"name": "team-a/deploy", "duration": 0, "parameters": ["ENV"],
                                  "concurrent": True},
                                 {"name": "prod/deploy", "duration": 0, "concurrent": True}])
    config = tmp_path / "operator.yaml"
    config.write_text(POLICY)
    harness.write("team-a/ok", ALLOWED)
    for name, (text, _, _) in REFUSED.items():
        harness.write(name, text)
    env = {"JENKINS_URL": harness.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}

    def reconciler(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "reconciler", *args, "--triggers", str(harness.triggers),
                               "--config", str(config)], env=env, capture_output=True, text=True, timeout=60)

    validate = reconciler("validate")
    assert validate.returncode == 1
    for name, (_, position, words) in REFUSED.items():
        line = next(line for line in validate.stdout.splitlines() if f"{name}.yaml:" in line)
        assert line.startswith(f"{harness.triggers / name}.yaml:{position}: ") and words in line, line
    assert "team-a/ok" not in validate.stdout

    check = reconciler("check")
    assert check.returncode == 1
    assert all(f"{harness.triggers / name}.yaml:{position}: " in check.stdout for name, (_, position, _) in
               REFUSED.items())
    assert "team-a/ok" not in check.stdout and "against 1 job in" in check.stderr  # only the allowed spec is read

    plan = reconciler("plan", "--state", str(harness.state), "--history", str(harness.history))
    rows = {line.split()[0]: line for line in plan.stdout.splitlines()}
    assert rows["team-a/ok"].split()[1] == "fire"
    assert all(rows[name].split()[1] == "invalid" for name in REFUSED)

    once = reconciler("run", "--once", "--state", str(harness.state), "--history", str(harness.history))
    assert once.returncode == 1, once.stdout + once.stderr  # invalid specs: exit 1, the valid one fired
    posts = [r for r in harness.sim.requests if r.method == "POST"]
    assert [r.path for r in posts] == ["/job/team-a/job/deploy/buildWithParameters"]
    assert [[(p.name, v) for p, v in b.parameters] for b in harness.sim.builds("team-a/deploy")] == \
        [[("ENV", "staging")]]
    assert not harness.sim.builds("prod/deploy")
    refused = [line for line in once.stdout.splitlines() if '"spec_invalid"' in line]
    assert len(refused) == len(REFUSED) and all("policy" in line for line in refused)

    status = reconciler("status", "--state", str(harness.state))
    rows = {line.split()[0]: line for line in status.stdout.splitlines()[1:]}
    row = rows["team-a/wrong-env"].split("\t")
    assert row[2] == "invalid" and "team-a/wrong-env.yaml:3:3: parameter ENV='production' is not allowed by policy" \
        in row[-1]


def test_a_rotated_token_file_is_read_again_and_used_without_a_restart_and_never_logged(harness, tmp_path):
    import argparse
    from functools import partial

    from reconciler.cli.run import _read_again

    from .conftest import TOKEN, USER, wait_for

    token = tmp_path / "secrets" / "token"
    token.parent.mkdir()
    token.write_text("stale-token\n")
    config = tmp_path / "operator.yaml"
    config.write_text(f"servers:\n  default:\n    url: {harness.url}\n    user: {USER}\n    token: {{file: {token}}}\n")
    args = argparse.Namespace(config=config, triggers=harness.triggers, state=harness.state)

    harness.start(before=lambda daemon: daemon.follow_config(partial(_read_again, args), str(config)))
    [stale] = harness.logs.wait_for("config_reloaded")  # the file's token replaces the harness's
    assert stale["changed"] == ["servers.default.token"]
    token.write_text(TOKEN + "\n")
    rotated = harness.logs.wait_for("config_reloaded", 2)[1]
    assert rotated["changed"] == ["servers.default.token"]
    harness.write("deploy", "job: plain\n")
    wait_for(lambda: harness.sim.triggers("plain"), what="a POST with the rotated token")
    assert [r.status for r in harness.runs("deploy")] != ["refused"]
    assert "stale-token" not in harness.logs.getvalue() and TOKEN not in harness.logs.getvalue()


def test_violations_are_counted_in_metrics_and_a_policy_that_allows_the_spec_lets_it_fire(harness):
    from reconciler.config import Policy

    harness.write("team-b/deploy", "job: plain\n")
    daemon = harness.build()
    daemon.policy = Policy(rules=(TEAM_A,))
    daemon.bootstrap()
    assert daemon.pass_once() == []
    assert b"reconciler_policy_violations 1.0" in daemon.executor.metrics.render()
    [invalid] = harness.logs.wait_for("spec_invalid")
    assert invalid["errors"] == ["team-b/deploy.yaml:1:1: no policy rule covers trigger 'team-b/deploy' (the rules "
                                 "cover team-a/**), and with a policy a trigger no rule names may fire nothing: ask "
                                 "the operator for a rule, or move the file where one applies"]
    daemon.policy = Policy(rules=(TEAM_A, Rule(triggers=("team-b/**",), jobs=("plain",), number=2)))
    [run] = daemon.pass_once()
    assert run.trigger == "team-b/deploy"
    assert b"reconciler_policy_violations 0.0" in daemon.executor.metrics.render()


def test_plan_base_says_a_change_becomes_invalid_by_the_policy_and_that_it_was_not_checked_without_it(tmp_path):
    """CI is given the operator's published config (a policy holds no secrets); without it, it says so."""
    import subprocess

    from .test_cli import reconciler
    from .test_preview import git

    repo = tmp_path / "repo"
    (repo / "triggers" / "team-a").mkdir(parents=True)
    (repo / "triggers" / "team-a" / "deploy.yaml").write_text(ALLOWED)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    (repo / "triggers" / "team-a" / "deploy.yaml").write_text(REFUSED["team-a/wrong-env"][0])
    published = tmp_path / "policy.yaml"
    published.write_text(POLICY + "servers:\n  default: {url: 'https://jenkins.example', token: {env: UNSET}}\n")

    checked = reconciler("plan", "--base", "main", "--triggers", str(repo / "triggers"),
                         "--history", str(repo / "history"), "--config", str(published))
    assert checked.returncode == 1, checked.stderr
    assert "team-a/deploy: becomes invalid (policy): parameter ENV='production' is not allowed by policy rule 1" \
        in checked.stdout
    unchecked = reconciler("plan", "--base", "main", "--triggers", str(repo / "triggers"),
                           "--history", str(repo / "history"))
    assert unchecked.returncode == 0
    assert "team-a/deploy: will fire" in unchecked.stdout and "policy: not checked" in unchecked.stdout
