"""`plan --base REV`: what merging would fire, from real git repositories built in the test."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime

import pytest

from reconciler.core import schedule as cron
from reconciler.core.preview import dst_notes
from reconciler.core.spec import parse

from .test_cli import jenkins_env, reconciler


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=T", *args],
                   check=True, capture_output=True)


def fired_line(name: str, text: str) -> str:
    """A history line saying `name` fired at the revision `text` has (as the daemon writes it)."""
    revision = parse(text, name=name, path=name).revision
    decided = json.dumps({"at": "2026-11-30T10:00:00.000Z", "event": "decided", "trigger": name, "run_id": "r1",
                          "fire_key": revision, "server": "default", "job": "plain"}) + "\n"
    return decided + json.dumps({"at": "2026-11-30T10:00:01.000Z", "event": "queued", "trigger": name,
                                 "run_id": "r1", "fire_key": revision, "queue_url": "http://ci/queue/item/1/"}) + "\n"


BASE = {
    "deploy.yaml": "job: deploy\nparameters: {ENV: staging, VERSION: '1.0'}\n",
    "comment.yaml": "job: plain\n",
    "bump.yaml": "job: plain\ncause: weekly\n",
    "nightly.yaml": "job: qa\nschedule: '0 3 * * *'\n",
    "gone.yaml": "job: plain\nrun: 7\n",
    "breaks.yaml": "job: plain\nrun: 3\n",
    "stays.yaml": "job: plain\nrun: 9\n",
}
HEAD = {
    "deploy.yaml": "job: deploy\nparameters: {ENV: prod, VERSION: '1.0'}\n",
    "comment.yaml": "# who owns this: team a\njob: plain\n",
    "bump.yaml": "job: plain\ncause: weekly\nrun: 2\n",
    "nightly.yaml": "job: qa\nschedule: 'H 2 * * *'\ntimezone: Europe/Berlin\n",
    "breaks.yaml": "job: plain\nrun: [3\n",
    "stays.yaml": "job: plain\nrun: 9\n",
    "new.yaml": "job: team a/release\nparameters: {TAG: v2}\ncause: release v2\n",
    "again.yaml": "job: plain\nrun: 4\n",  # fired before under this name, at this revision: history says so
}


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "repo"
    (repo / "triggers").mkdir(parents=True)
    (repo / "history").mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    for name, text in BASE.items():
        (repo / "triggers" / name).write_text(text)
    (repo / "history" / "again.jsonl").write_text(fired_line("again", HEAD["again.yaml"]))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    git(repo, "checkout", "-qb", "change")
    (repo / "triggers" / "gone.yaml").unlink()
    for name, text in HEAD.items():
        (repo / "triggers" / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "change")
    return repo


def plan(repo, *args, env=None):
    return reconciler("plan", "--triggers", str(repo / "triggers"), "--history", str(repo / "history"), *args,
                      env=env)


def test_plan_base_head_says_what_merging_would_fire_and_what_not(repo):
    result = plan(repo, "--base", "main", "--head", "change", "--format", "json")
    assert result.returncode == 1  # a spec becomes invalid
    changes = {c["trigger"]: c for c in json.loads(result.stdout)["changes"]}
    assert {name: c["kind"] for name, c in changes.items()} == {
        "again": "will not fire", "breaks": "becomes invalid", "bump": "will fire", "comment": "will not fire",
        "deploy": "will fire", "gone": "deleted", "new": "will fire", "nightly": "schedule changed"}
    assert changes["deploy"]["why"] == "parameters changed"
    assert changes["deploy"]["request"] == {"server": "default", "path": "/job/deploy/buildWithParameters",
                                            "parameters": {"ENV": "prod", "VERSION": "1.0"},
                                            "cause": "reconciler: trigger deploy"}
    assert changes["new"]["request"]["path"] == "/job/team%20a/job/release/buildWithParameters"
    assert changes["bump"]["why"] == "`run` bumped" and changes["comment"]["why"].startswith("only comments")
    assert "already fired (history)" in changes["again"]["why"]
    assert "is never closed" in changes["breaks"]["why"]
    nightly = changes["nightly"]
    resolved = cron.resolve("H 2 * * *", "nightly")
    assert nightly["why"] == f"'0 3 * * *' in UTC → 'H 2 * * *' = {resolved!r} in Europe/Berlin"  # old → new
    assert len(nightly["ticks"]) == 3
    assert all(("CET" in t or "CEST" in t) and t.endswith("UTC)") for t in nightly["ticks"])


def test_the_markdown_is_a_comment_a_reviewer_reads_in_ten_seconds(repo):
    text = plan(repo, "--base", "main", "--head", "change", "--format", "markdown").stdout
    first, *rest = text.splitlines()
    assert first == ("**reconciler plan main..change**: 3 triggers will fire, 2 triggers will not fire, "
                     "1 schedule changed, 1 trigger becomes invalid, 1 trigger deleted")
    rows = [line for line in rest if line.startswith("| `")]
    assert len(rows) == 8
    deploy = next(r for r in rows if r.startswith("| `deploy`"))
    assert "**will fire**" in deploy and "`POST /job/deploy/buildWithParameters` on `default` with " \
        "`ENV=prod, VERSION=1.0`" in deploy


def test_the_working_tree_is_the_default_head_and_an_unchanged_tree_plans_nothing(repo):
    assert plan(repo, "--base", "change").stdout.strip().splitlines() == [
        "reconciler plan change..working tree: no change to any trigger",
        "policy: not checked (give --config with the operator's published config to check it)"]
    (repo / "triggers" / "stays.yaml").write_text("job: plain\nrun: 10\n")
    out = plan(repo, "--base", "change").stdout.splitlines()
    assert out[0] == "reconciler plan change..working tree: 1 trigger will fire"
    assert out[1] == "stays: will fire: `run` bumped"


def test_plan_base_check_adds_the_live_contract_check_of_what_will_fire(repo, make_simulator):
    sim = make_simulator(jobs=[{"name": "deploy", "parameters": ["ENV"]}, {"name": "plain"}, {"name": "qa"}])
    (repo / "triggers" / "breaks.yaml").write_text("job: plain\nrun: 3\n")
    (repo / "triggers" / "new.yaml").unlink()
    result = plan(repo, "--base", "main", "--check", env=jenkins_env(sim))
    checks = [line for line in result.stdout.splitlines() if line.startswith("check: ")]
    assert checks == ["check: deploy.yaml:2:25: job 'deploy' does not define parameter 'VERSION' (it defines: "
                      "ENV): Jenkins would silently drop it"]
    assert result.returncode == 1 and {r.method for r in sim.requests} == {"GET"}


def test_an_unknown_revision_is_one_line_naming_it(repo):
    result = plan(repo, "--base", "no-such-branch")
    assert result.returncode == 2 and result.stderr.strip().startswith(
        "reconciler: no git revision 'no-such-branch' in ")


def test_dst_notes_flag_the_ticks_a_clock_change_skips_or_repeats():
    schedule = cron.parse("30 2 * * *", "Europe/Berlin")
    notes = dst_notes(schedule, datetime(2026, 3, 1, tzinfo=UTC), days=300)
    assert notes == ["2026-03-29: 02:30 skipped by DST (clocks go forward); fires once at 03:00",
                     "2026-10-25: 02:30 repeated by DST (clocks go back); fires once"]
    assert dst_notes(cron.parse("0 12 * * *", "Europe/Berlin"), datetime(2026, 3, 1, tzinfo=UTC)) == []
    assert dst_notes(cron.parse("30 2 * * *", "UTC"), datetime(2026, 3, 1, tzinfo=UTC)) == []
