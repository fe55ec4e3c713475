"""Several replicas on one PostgreSQL: `reconciler run` processes, killed, cut off, paused and restarted
for real, while specs arrive and a schedule ticks. What the simulator received is the verdict."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from .conftest import TOKEN, USER, wait_for

JOB = {"name": "ha", "duration": 0, "concurrent": True, "token": "deploy-job-token", "parameters": ["SEQ", "TICK"]}
LEASE = "2"


class Replicas:
    """Named `reconciler run` processes on one triggers directory and one database."""

    def __init__(self, harness, dsn: str, tmp: Path):
        self.harness, self.dsn, self.tmp = harness, dsn, tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.starts = collections.Counter()
        self.args: list[str] = []
        """More arguments for every replica (`--config`)."""

    def start(self, name: str) -> None:
        self.starts[name] += 1
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.ports[name] = s.getsockname()[1]
        env = {**os.environ, "JENKINS_URL": self.harness.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN,
               "JENKINS_JOB_TOKEN": "deploy-job-token", "POD_NAME": name}
        log = (self.tmp / f"{name}.{self.starts[name]}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "--triggers", str(self.harness.triggers), "--state", self.dsn,
             "--history", str(self.tmp / f"history-{name}"), "--lease", LEASE, "--poll-interval", "0.5",
             "--listen", f"127.0.0.1:{self.ports[name]}", *self.args], env=env, stdout=log, stderr=subprocess.STDOUT)

    def leader(self) -> str | None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as db:
                holder, live = db.execute("SELECT holder, expires_at > now() FROM leader").fetchone()
        except psycopg.Error:  # no replica has made the table yet, or the database is restarting
            return None
        name, _, pid = (holder or "").partition("/")
        proc = self.procs.get(name)
        alive = proc is not None and proc.poll() is None and str(proc.pid) == pid
        return name if live and alive else None

    def keep_three(self) -> None:
        """Start again whatever exited (a lost lease ends the process; Kubernetes would restart it)."""
        for name, proc in list(self.procs.items()):
            if proc.poll() is not None:
                self.start(name)

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("*.log")))

    def said_late(self) -> set[str]:
        """The run ids a replica logged `fire_sent_late` for: a POST written after its lease lapsed, by a
        thread stalled right between its last check and its write (README, "What is left")."""
        return {json.loads(line)["run_id"] for line in self.logs().splitlines() if '"fire_sent_late"' in line}

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def doubles(sim) -> dict[tuple[str | None, str | None], set[str]]:
    """Each revision (SEQ) or tick (TICK) posted more than once, with the run ids its POSTs carried (in
    the cause)."""
    runs: dict[tuple[str | None, str | None], set[str]] = collections.defaultdict(set)
    posts = collections.Counter((r.param("SEQ"), r.param("TICK")) for r in sim.triggers("ha"))
    for r in sim.triggers("ha"):
        key = (r.param("SEQ"), r.param("TICK"))
        if posts[key] > 1:
            runs[key] |= set(re.findall(r"\[reconciler run (\w+)\]", r.param("cause") or ""))
    return dict(runs)


def assert_once_but_what_was_said(group: Replicas) -> None:
    """Every revision posted once, but for the one a stalled thread may have written late, which must
    be said: a late POST of that run, and at most one (the guard's own tests are in test_jenkins.py)."""
    twice, late = doubles(group.harness.sim), group.said_late()
    assert len(late) <= 1, f"more than one POST written after a lease lapsed: {late}"
    assert all(runs <= late for runs in twice.values()), f"fired more than once, and not said: {twice}"


@pytest.fixture
def replicas(make_harness, pg_dsn, tmp_path):
    harness = make_harness(job_token="deploy-job-token", jobs=[JOB])
    harness.triggers.mkdir(parents=True)
    group = Replicas(harness, pg_dsn, tmp_path)
    yield group
    group.stop()


def seqs(sim) -> collections.Counter[str]:
    return collections.Counter(r.param("SEQ") for r in sim.triggers("ha"))


def test_standbys_are_ready_say_who_leads_and_only_the_leader_fires_and_sends_statuses(replicas, tmp_path,
                                                                                        monkeypatch, request):
    """Two replicas, commit statuses configured: one POST per revision and one status per step, across a
    takeover; the standby sends neither."""
    from .forge_standins import Forge

    forge = Forge("github", "platform/triggers", "ghp_h4TokenForTheReplicasXyz")
    request.addfinalizer(forge.stop)
    config = tmp_path / "operator.yaml"
    config.write_text(f"commit_status:\n  provider: github\n  api_url: {forge.url}\n  repository: platform/triggers\n"
                      "  token: {env: FORGE_TOKEN}\n")
    monkeypatch.setenv("FORGE_TOKEN", forge.token)
    replicas.args = ["--config", str(config)]
    for name in ("a", "b"):
        replicas.start(name)
    leader = wait_for(replicas.leader, timeout=30, what="a leader")
    standby = "b" if leader == "a" else "a"

    def probe(name: str, path: str) -> requests.Response | None:
        try:
            return requests.get(f"http://127.0.0.1:{replicas.ports[name]}{path}", timeout=5)
        except requests.ConnectionError:
            return None

    wait_for(lambda: all(probe(n, "/readyz") is not None and probe(n, "/readyz").status_code == 200
                         for n in ("a", "b")), timeout=30, what="both ready")
    assert probe(leader, "/readyz").text.startswith("ok\nleading (epoch 1)")
    said = f"ok\nstanding by: {leader}/{replicas.procs[leader].pid} leads (epoch 1)"
    # the standby reads the lease twice a second: it may not have seen the leader's first renewal yet
    wait_for(lambda: probe(standby, "/readyz").text.startswith(said), timeout=10, what="the standby to name the leader")
    assert "reconciler_leader 1.0" in probe(leader, "/metrics").text
    assert "reconciler_leader 0.0" in probe(standby, "/metrics").text
    one = replicas.harness.arrive("one", "job: ha\nparameters: {SEQ: one}\n")
    forge.commits.add(one)
    wait_for(lambda: seqs(replicas.harness.sim) == {"one": 1}, timeout=30, what="the leader to fire")
    wait_for(lambda: "success" in forge.states(), timeout=30, what="the leader's statuses")

    def undelivered() -> int:
        with psycopg.connect(replicas.dsn, autocommit=True) as db:
            return db.execute("SELECT count(*) FROM outbox WHERE outcome IS NULL").fetchone()[0]

    # Killed between the forge's answer and its record, a leader's last status is sent again by the
    # next (README: a status sent twice is the same status); here each step is to be sent once.
    wait_for(lambda: undelivered() == 0, timeout=30, what="the leader to record its deliveries")
    replicas.procs[leader].send_signal(signal.SIGKILL)
    wait_for(lambda: replicas.leader() == standby, timeout=30, what="the standby to take over")
    two = replicas.harness.arrive("two", "job: ha\nparameters: {SEQ: two}\n")
    forge.commits.add(two)
    wait_for(lambda: seqs(replicas.harness.sim) == {"one": 1, "two": 1}, timeout=30, what="the new leader to fire")
    wait_for(lambda: [s.state for s in forge.statuses if s.sha == two][-1:] == ["success"], timeout=30,
             what="the new leader's statuses")
    time.sleep(1.0)  # time for a second sender to show
    sent = collections.Counter((s.sha, s.state, s.description) for s in forge.statuses)
    assert {sha for sha, _, _ in sent} == {one, two} and set(sent.values()) == {1}, f"a status sent twice: {sent}"
    assert "reconciler_leader_takeovers_total 1.0" in probe(standby, "/metrics").text
    families = text_string_to_metric_families(probe(standby, "/metrics").text)
    delivered = {s.labels["outcome"]: s.value for family in families if family.name == "reconciler_status_deliveries"
                 for s in family.samples if s.name.endswith("_total")}
    assert delivered == {"delivered": sum(1 for s in forge.statuses if s.sha == two)}, "the new leader's, counted"
    assert '"event": "leader_elected"' in replicas.logs()


def test_three_replicas_through_kills_cuts_pauses_and_a_database_restart_fire_each_revision_once(
        replicas, postgres):
    """Every revision written is built exactly once, and every tick once, whatever happened to whom (but
    for a POST a paused leader wrote late, which is said: README, "What is left")."""
    sim = replicas.harness.sim
    for name in ("a", "b", "c"):
        replicas.start(name)
    wait_for(replicas.leader, timeout=30, what="a first leader")
    replicas.harness.write("nightly", "job: ha\nparameters: {SEQ: tick}\nschedule: '* * * * *'\n"
                                      "scheduled_time_parameter: TICK\nstarting_deadline: 5m\n")
    scheduled_at = time.time()
    written: list[str] = []

    def write_some(k: int = 3) -> None:
        for _ in range(k):
            n = len(written)
            name = f"spec-{n % 7}"  # a few specs, each rewritten to new revisions
            replicas.harness.write(name, f"job: ha\nparameters: {{SEQ: s{n}}}\n")
            written.append(f"s{n}")
            time.sleep(0.05)

    def kill_the_leader() -> None:
        leader = wait_for(replicas.leader, timeout=30, what="a leader to kill")
        replicas.procs[leader].send_signal(signal.SIGKILL)
        replicas.procs[leader].wait()
        replicas.start(leader)

    def cut_the_leaders_connections() -> None:
        leader = wait_for(replicas.leader, timeout=30, what="a leader to cut off")
        with psycopg.connect(replicas.dsn, autocommit=True) as db:
            db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                       (f"reconciler {leader}/{replicas.procs[leader].pid}",))

    def pause_the_leader_past_its_lease() -> None:
        leader = wait_for(replicas.leader, timeout=30, what="a leader to pause")
        replicas.procs[leader].send_signal(signal.SIGSTOP)
        write_some()
        wait_for(lambda: replicas.leader() not in (None, leader), timeout=30, what="another to take over")
        write_some()
        paused = replicas.procs[leader]
        before = replicas.logs().count('"event": "standing_by_again"')
        paused.send_signal(signal.SIGCONT)
        wait_for(lambda: replicas.logs().count('"event": "standing_by_again"') > before, timeout=30,
                 what="the resumed leader to stand by again")
        assert paused.poll() is None, "resumed, it finds its lease gone, sends nothing and stands by, alive"

    disruptions = [kill_the_leader, cut_the_leaders_connections, kill_the_leader, pause_the_leader_past_its_lease,
                   postgres.restart, kill_the_leader, kill_the_leader, cut_the_leaders_connections]
    for disrupt in disruptions:
        write_some()
        time.sleep(0.5)
        disrupt()
        write_some()
        time.sleep(1.0)
        replicas.keep_three()
    replicas.keep_three()
    wait_for(lambda: any(r.param("SEQ") == "tick" for r in sim.triggers("ha")), timeout=75, what="a tick")
    kill_the_leader()  # and once more, right after a tick
    # A revision rewritten before any leader saw it is superseded, not lost: each spec's latest must fire.
    latest = {f"spec-{n % 7}": f"s{n}" for n in range(len(written))}
    wait_for(lambda: set(latest.values()) <= set(seqs(sim)), timeout=60, what="each spec's latest revision")
    time.sleep(3 * float(LEASE))  # time for any second POST to show
    fired = seqs(sim)
    assert_once_but_what_was_said(replicas)
    assert set(fired) - {"tick"} <= set(written)
    ticks = collections.Counter(r.param("TICK") for r in sim.triggers("ha") if r.param("SEQ") == "tick")
    assert all(n == 1 for n in ticks.values()), f"a tick fired twice: {ticks}"
    minutes = [m for m in range(int(scheduled_at // 60) + 1, int((time.time() - 10) // 60) + 1)]
    assert len(ticks) >= len(minutes), f"a tick was lost: {sorted(ticks)} for {len(minutes)} minute(s)"
    with psycopg.connect(replicas.dsn, autocommit=True) as db:
        [epoch] = db.execute("SELECT epoch FROM leader").fetchone()
    assert epoch >= 6, "leadership changed hands at every kill, pause and restart"


def test_every_command_takes_a_postgresql_store(simulator, pg_dsn, tmp_path):
    from .test_cli import jenkins_env, reconciler

    triggers = tmp_path / "triggers"
    triggers.mkdir()
    (triggers / "old.yaml").write_text("job: plain\n")
    common = ["--triggers", str(triggers), "--state", pg_dsn, "--history", str(tmp_path / "history")]
    env = jenkins_env(simulator)
    assert reconciler("adopt", *common, env=env).returncode == 0
    (triggers / "new.yaml").write_text("job: plain\ncause: new\n")
    (triggers / "nope.yaml").write_text("job: does-not-exist\n")
    plan = reconciler("plan", *common, env=env)
    assert "new" in plan.stdout and "old" in plan.stdout, plan.stdout + plan.stderr
    once = reconciler("run", "--once", *common, env=env)
    assert once.returncode == 3, once.stdout + once.stderr  # `nope` was refused: Jenkins has no such job
    shown = reconciler("status", *common[:4], "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    status = {s["trigger"]: s["last_run"]["status"] for s in json.loads(shown.stdout) if s["last_run"]}
    assert (status["old"], status["nope"]) == ("adopted", "refused")
    assert status["new"] in ("queued", "building", "completed")
    retried = reconciler("retry", "--state", pg_dsn, "nope", env=env)
    assert retried.returncode == 0 and "1 refused run due again" in retried.stderr
    assert len(simulator.triggers("plain")) == 1, "adopted `old` did not fire; `new` fired once"
