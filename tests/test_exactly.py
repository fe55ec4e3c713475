"""Never twice, at the edges too: real processes killed, paused and cut off from their database, and a
job with more builds since the fire than Jenkins lists by default. What the simulator received (it lists
`builds` as the newest 100, `allBuilds` and `{M,N}` ranges as Jenkins does) is the verdict."""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from reconciler.config import Server
from reconciler.jenkins.client import Client

from .conftest import TOKEN, USER, wait_for
from .test_daemon import daemon_process, db_status
from .test_ha import Replicas, assert_once_but_what_was_said, seqs
from .test_writeback import (
    origin,  # noqa: F401 (a fixture)
    pushed,
    write_config,
)

BUSY = {"name": "busy", "duration": 0, "token": "deploy-job-token", "concurrent": True, "parameters": ["WHO"]}
LOOKUP_TREE = "causes[note],parameters[name,value]]"


def writeback_process(harness, config: Path) -> subprocess.Popen[bytes]:
    """`reconciler run` with history write-back, its log in a file (a pipe nobody reads would fill)."""
    env = {**os.environ, "JENKINS_URL": harness.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN,
           "JENKINS_JOB_TOKEN": harness.job_token or ""}
    with (config.parent / f"{config.stem}.log").open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--triggers", str(harness.triggers),
                                 "--state", str(harness.state), "--config", str(config)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)


def build_elsewhere(sim, count: int) -> None:
    """Builds of the same job that someone else starts (a person, another tool)."""
    with requests.Session() as s:
        for i in range(count):
            r = s.post(f"{sim.url.rstrip('/')}/job/busy/buildWithParameters", data={"WHO": f"other-{i}"},
                       auth=(USER, TOKEN), allow_redirects=False, timeout=10)
            assert r.status_code == 201, r.text


def builds_of(sim, who: str) -> list[int]:
    return [b.number for b in sim.builds("busy") if dict((p.name, v) for p, v in b.parameters).get("WHO") == who]


def test_kill_9_while_posting_then_120_builds_since_and_an_ingress_that_hides_the_queue(make_harness):
    """Killed while its POST was in Jenkins' hands; 120 builds of the job follow before the restart, so
    the build is not among the newest 100; and the restarted daemon reaches Jenkins through an ingress
    that routes only /job/… (the queue answers 404). The lookup still finds the build, in two reads."""
    harness = make_harness(job_token="deploy-job-token", jobs=[BUSY])
    sim = harness.sim
    slow = sim.fault(path="/job/busy/buildWithParameters$", latency=1.0, times=1)
    harness.write("mine", "job: busy\nparameters: {WHO: us}\n")
    proc = daemon_process(harness)
    try:
        wait_for(lambda: db_status(harness) == "posting" and slow.times == 0, 30, "the POST to reach Jenkins")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    [ours] = wait_for(lambda: builds_of(sim, "us"), what="Jenkins to act on the POST")
    build_elsewhere(sim, 120)
    newest = sorted(b.number for b in sim.builds("busy"))[-100:]
    assert ours not in newest, "the build is past the newest 100: what `builds` lists"
    sim.fault(path="^/queue/api/json$", status=404)  # the ingress routes only /job/…
    asked = len(sim.requests)
    harness.start()
    wait_for(lambda: harness.runs("mine")[0].status in ("building", "completed"), 30, "the run to be found")
    assert builds_of(sim, "us") == [ours], "built once"
    assert harness.runs("mine")[0].build_number == ours
    lookups = [r for r in sim.requests[asked:] if r.path == "/job/busy/api/json" and
               LOOKUP_TREE in (r.params.get("tree") or [""])[0]]
    assert 1 <= len(lookups) <= 2, f"the lookup read the job {len(lookups)} times"
    assert harness.logs.wait_for("fire_found")


def test_a_fresh_pod_after_150_unpushed_fires_at_one_job_finds_every_build(make_harness, origin,  # noqa: F811
                                                                            tmp_path):
    """A pod fires 150 one-shots at one job and dies before it pushes a line; a new pod, its store and
    clone empty, looks each one up (50 of them past the newest 100 builds), posts none again, and its
    pushed history names the build Jenkins ran for each, one line per build."""
    harness = make_harness(job_token="deploy-job-token", jobs=[BUSY])
    sim = harness.sim
    for i in range(150):
        harness.write(f"burst/s{i:03}", f"job: busy\nparameters: {{WHO: s{i}}}\n")
    first = writeback_process(harness, write_config(tmp_path / "slow.yaml", origin, tmp_path / "one", 3600))
    try:
        wait_for(lambda: len(sim.triggers("busy")) == 150, 120, "the burst to be posted")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert pushed(origin) == [], "the first pod pushed nothing"
    harness.state.unlink()
    shutil.rmtree(tmp_path / "one")
    fresh = writeback_process(harness, write_config(tmp_path / "fast.yaml", origin, tmp_path / "two", 0.5))
    try:
        wait_for(lambda: len([e for e in pushed(origin) if e["event"] == "completed"]) == 150, 120,
                 "every outcome pushed by the fresh pod")
    finally:
        fresh.terminate()
        fresh.wait(timeout=20)
    sent = collections.Counter(r.param("WHO") for r in sim.triggers("busy"))
    assert len(sent) == 150 and set(sent.values()) == {1}, "each fired once"
    lines = pushed(origin)
    started = [e for e in lines if e["event"] == "started"]
    assert len(started) == 150 and len({e["number"] for e in started}) == 150, "one line per build"
    jenkins = {b.number: dict((p.name, v) for p, v in b.parameters)["WHO"] for b in sim.builds("busy")}
    decided = {e["run_id"]: e["parameters"]["WHO"] for e in lines if e["event"] == "decided"}
    assert all(jenkins[e["number"]] == decided[e["run_id"]] for e in started), "each line names its build"


def test_a_leader_paused_mid_burst_past_two_leases_sends_no_prepared_post_and_stands_by(make_harness, pg_dsn,
                                                                                         tmp_path):
    """SIGSTOP of the leader while it posts a burst (POSTs in flight), for longer than two leases and a
    takeover; the new leader posts the rest; SIGCONT: the old one writes no byte of a prepared POST,
    and stays alive as a standby. A thread stopped between its last check and its write (README, "What
    is left") writes once it runs again: at most that one POST, and it is said (`fire_sent_late`)."""
    harness = make_harness(job_token="deploy-job-token", jobs=[{
        "name": "ha", "duration": 0, "concurrent": True, "token": "deploy-job-token", "parameters": ["SEQ", "TICK"]}])
    harness.triggers.mkdir(parents=True)
    group = Replicas(harness, pg_dsn, tmp_path)
    try:
        for name in ("a", "b"):
            group.start(name)
        leader = wait_for(group.leader, timeout=30, what="a leader")
        harness.sim.fault(path="/buildWithParameters$", latency=0.05)
        for i in range(120):
            harness.write(f"burst/p{i:03}", f"job: ha\nparameters: {{SEQ: p{i}}}\n")
        wait_for(lambda: len(harness.sim.triggers("ha")) >= 10, 60, "the burst under way")
        paused = group.procs[leader]
        paused.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        assert len(harness.sim.triggers("ha")) < 120, "stopped mid-burst"
        wait_for(lambda: group.leader() not in (None, leader), 30, "another to take over")
        wait_for(lambda: len(seqs(harness.sim)) == 120, 90, "the new leader to post the rest")
        time.sleep(max(0.0, 3 * float("2") - (time.monotonic() - stopped)))  # more than two leases stopped
        paused.send_signal(signal.SIGCONT)
        wait_for(lambda: '"event": "standing_by_again"' in group.logs(), 30, "the old leader to stand by")
        time.sleep(2.0)  # time for any late POST to show
        assert_once_but_what_was_said(group)
        assert paused.poll() is None, "alive, a standby"
    finally:
        group.stop()


def test_postgresql_stopped_under_three_replicas_all_live_and_later_specs_fire(make_harness, pg_dsn, postgres,
                                                                             tmp_path):
    """PostgreSQL away for 5 s under three replicas: the leader's lease lapses, no replica exits, each
    is unready while the database is away, one leads again, and specs written afterwards fire once."""
    harness = make_harness(job_token="deploy-job-token", jobs=[{
        "name": "ha", "duration": 0, "concurrent": True, "token": "deploy-job-token", "parameters": ["SEQ", "TICK"]}])
    harness.triggers.mkdir(parents=True)
    group = Replicas(harness, pg_dsn, tmp_path)

    def ready(name: str) -> int | None:
        try:
            return requests.get(f"http://127.0.0.1:{group.ports[name]}/readyz", timeout=5).status_code
        except requests.ConnectionError:
            return None

    try:
        for name in ("a", "b", "c"):
            group.start(name)
        wait_for(group.leader, timeout=30, what="a leader")
        harness.write("before", "job: ha\nparameters: {SEQ: before}\n")
        wait_for(lambda: seqs(harness.sim) == {"before": 1}, 30, "the first fire")
        wait_for(lambda: all(ready(n) == 200 for n in "abc"), 30, "all ready")
        postgres.ctl("stop", "-m", "fast")
        try:
            wait_for(lambda: all(ready(n) == 503 for n in "abc"), 15, "every replica unready")
            time.sleep(5)
        finally:
            postgres.ctl("start", *postgres.options)
        wait_for(group.leader, timeout=60, what="a leader again")
        for i in range(10):
            harness.write(f"after/a{i}", f"job: ha\nparameters: {{SEQ: a{i}}}\n")
        wait_for(lambda: len(seqs(harness.sim)) == 11, 60, "the specs written afterwards to fire")
        wait_for(lambda: all(ready(n) == 200 for n in "abc"), 60, "all ready again")
        assert all(p.poll() is None for p in group.procs.values()), "no replica exited"
        assert set(group.starts.values()) == {1}
        assert set(seqs(harness.sim).values()) == {1}
    finally:
        group.stop()


def test_builds_that_start_between_the_lookups_reads_do_not_push_the_run_out_of_its_reach(make_harness):
    """The lookup reads the newest builds with the job's next number, then the rest of the builds since
    the run's recorded number. Builds that start in between (the restarted daemon's own POSTs to the
    same job) push the older ones down the list: the run's build, the oldest of them, must still be read."""
    harness = make_harness(job_token="deploy-job-token", jobs=[BUSY])
    sim = harness.sim
    client = Client(Server(name="default", url=harness.url, user=USER, token=TOKEN, job_token="deploy-job-token"))
    since = client.next_build_number("busy")
    client.trigger("busy", (("WHO", "us"),), "mine [reconciler run 0123456789abcdef]")
    [ours] = wait_for(lambda: builds_of(sim, "us"), what="our build")
    build_elsewhere(sim, 30)
    sim.fault(path="^/job/busy/api/json$", latency=1.0, process=True, times=1)  # the first read, answered late
    meanwhile = threading.Thread(target=lambda: (time.sleep(0.3), build_elsewhere(sim, 5)))
    meanwhile.start()
    try:
        found = client.find("busy", run_id="0123456789abcdef", since=since)
    finally:
        meanwhile.join()
        client.close()
    assert found is not None and found.build_number == ours, "not found: it would be posted again"
