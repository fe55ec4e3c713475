"""Bounded under load: heavy files beside ordinary specs, a real `reconciler run` process, its probes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from .conftest import TOKEN, USER, probe_address, wait_for

SIZE = 256 * 1024 - 64
"""Just under the catalog's limit: what a committer can legally write."""


def _fill(head: str, item: str, tail: str = "") -> str:
    return head + item * ((SIZE - len(head) - len(tail)) // len(item)) + tail


HEAVY = {  # the four shapes of the measurement, each just under the size limit
    "flow-list": lambda i: _fill(f"job: plain\nlist: [{i},", "1,", "1]\n"),
    "many-keys": lambda i: "job: plain\n" + "".join(f"k{n:06}: {i}\n" for n in range(SIZE // 12)),
    "parameters": lambda i: "job: plain\nparameters:\n" + "".join(f"  P{n:06}: v{i}\n" for n in range(SIZE // 14)),
    "nested-flow": lambda i: _fill(f"job: plain\nparameters: [{i},", "{a: [b, {c: d}]},", "x]\n"),
}


def write_heavy(directory: Path, count: int, generation: int = 0) -> list[Path]:
    shapes = list(HEAVY)
    out = []
    for i in range(count):
        path = directory / f"heavy-{i:02}.yaml"
        path.write_text(HEAVY[shapes[i % len(shapes)]](i + 1000 * generation)[:SIZE])
        out.append(path)
    return out


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_heavy_files_beside_ordinary_specs(tmp_path, simulator):
    """20 heavy files (four shapes) beside 5 ordinary specs: the ordinary ones are POSTed, /healthz
    answers 200 throughout, the heavy ones are invalid with a position, and memory stays bounded,
    also after five of them are rewritten."""
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    write_heavy(triggers, 20)
    for i in range(5):
        (triggers / f"ordinary-{i}.yaml").write_text(f"job: plain\ncause: ordinary {i}\n")
    env = {**os.environ, "JENKINS_URL": simulator.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN,
           "RECONCILER_LISTEN": "127.0.0.1:0", "RECONCILER_POLL_INTERVAL": "0.1"}
    log = tmp_path / "log"
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--triggers", str(triggers),
                                 "--state", str(tmp_path / "s.db"), "--history", str(tmp_path / "h")],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    failures: list[int] = []
    polls = 0
    done = threading.Event()
    try:
        base = f"http://{probe_address(log)}"

        def poll() -> None:
            nonlocal polls
            while not done.is_set():
                status = requests.get(base + "/healthz", timeout=10).status_code
                polls += 1
                if status != 200:
                    failures.append(status)
                done.wait(0.1)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        wait_for(lambda: len(simulator.triggers("plain")) == 5, timeout=30, what="the 5 ordinary specs' POSTs")
        assert time.monotonic() - started < 30
        wait_for(lambda: requests.get(base + "/readyz", timeout=5).status_code == 200, what="readiness")
        invalid = [json.loads(line) for line in log.read_text().splitlines() if '"spec_invalid"' in line]
        assert sorted(e["trigger"] for e in invalid) == [f"heavy-{i:02}" for i in range(20)]
        assert all(":" in e["errors"][0] for e in invalid)  # each with its file:line:col
        assert peak_rss_mib(proc.pid) < 200

        write_heavy(triggers, 5, generation=1)  # rewritten: read again, judged again
        wait_for(lambda: log.read_text().count('"spec_invalid"') >= 25, timeout=30, what="the rewritten files")
        assert peak_rss_mib(proc.pid) < 200
        assert len(simulator.triggers("plain")) == 5
        done.set()
        poller.join(timeout=15)
        assert polls > 0 and failures == []
    finally:
        done.set()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


class ShiftedClock:
    def __init__(self, at: float):
        self.now = at

    def __call__(self) -> float:
        return self.now


def test_a_one_shot_is_not_queued_behind_a_tick_backlog(harness):
    """1,000 schedules due at one minute (5,000 in bench/), and a one-shot written just after: its
    POST is among the first, not after the ticks."""
    minute = (int(time.time()) // 60 + 5) * 60
    clock = ShiftedClock(minute - 1)
    for i in range(1000):
        harness.write(f"ticks/t{i:04}", f"job: plain\ncause: tick {i}\nschedule: '* * * * *'\n")
    daemon = harness.build(clock)
    daemon.bootstrap()
    daemon.pass_once()
    clock.now = minute + 1
    fired = daemon.tick()
    # The whole minute in one turn of the loop: each tick decided at its minute, before any of its POSTs
    # start (a turn decided while 32 workers post the one before it is ten times slower).
    assert len(fired) == 1000 and daemon.tick() == []
    harness.write("one-shot", "job: manual\n")
    daemon.reconcile(daemon.catalog.refresh([str(harness.triggers / "one-shot.yaml")]))
    posted_before = len(harness.sim.triggers())  # the ticks already POSTed when the one-shot was decided
    wait_for(lambda: len(harness.sim.triggers()) == 1001, timeout=120, what="1,001 POSTs")
    jobs = ["/job/manual/" in r.path for r in harness.sim.triggers()]
    # Behind at most what was in flight then (the lanes take turns), never behind the backlog: with one
    # queue per server it came 1,001st.
    assert jobs.index(True) <= posted_before + 2 * harness.concurrency < 1000


def test_every_tick_of_a_crowded_minute_names_the_commit_behind_its_spec(harness):
    """More ticks due than a turn of the loop takes are decided over several turns; the git log is walked
    once for all of them."""
    minute = (int(time.time()) // 60 + 5) * 60
    clock = ShiftedClock(minute - 1)
    harness.triggers.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(harness.triggers)], check=True)
    for i in range(600):
        harness.write(f"ticks/t{i:04}", f"job: plain\ncause: tick {i}\nschedule: '* * * * *'\n")
    subprocess.run(["git", "-C", str(harness.triggers), "add", "."], check=True)
    subprocess.run(["git", "-C", str(harness.triggers), "-c", "user.name=Alice", "-c", "user.email=alice@example.com",
                    "commit", "-qm", "six hundred schedules"], check=True)
    daemon = harness.build(clock)
    daemon.tick_batch = 250
    daemon.bootstrap()
    daemon.pass_once()
    clock.now = minute + 1
    fired = []
    while batch := daemon.tick():
        fired.append(batch)
    assert len(fired) > 1 and sum(map(len, fired)) == 600
    assert {(r.provenance or {}).get("subject") for batch in fired for r in batch} == {"six hundred schedules"}


def test_a_burst_drains_at_the_servers_rate_and_readyz_shows_the_backlog(harness):
    harness.rate = 20.0
    daemon = harness.start()
    for i in range(30):
        harness.write(f"burst/b{i:02}", "job: plain\n" + f"cause: b{i}\n")
    wait_for(lambda: any("backlog on server default" in n and "held: rate: 20/s" in n
                         for n in daemon.readiness_notes()), what="a backlog held by the rate")
    wait_for(lambda: len(harness.sim.triggers("plain")) == 30, timeout=30, what="30 POSTs")
    arrivals = sorted(r.at for r in harness.sim.triggers("plain"))
    assert arrivals[-1] - arrivals[0] >= 29 / 20 * 0.9  # evenly spaced at 20/s, not all at once
    assert not any("backlog" in n for n in daemon.readiness_notes())


def test_retry_after_holds_every_post_to_the_server(harness):
    harness.sim.fault(path="/build$", method="POST", status=429, headers={"Retry-After": "2"}, times=1)
    harness.concurrency = 4
    harness.start()
    for i in range(16):
        harness.write(f"burst/b{i:02}", "job: plain\n")
    wait_for(lambda: len(harness.sim.triggers("plain")) == 16, timeout=30, what="16 POSTs")
    too_many = [r.at for r in harness.sim.requests if r.status == 429]
    assert len(too_many) == 1
    after = [r.at for r in harness.sim.triggers("plain") if r.at > too_many[0]]
    assert len(after) == 16
    # Within the Retry-After, only what was already under way when the 429 was read (each other worker's
    # POST, and one more each that it may have started before the 429 reached us) and the refused one's
    # own retry (after the client's backoff, 50 ms here). Without the hold all 16 land at once.
    within = [t for t in after if t < too_many[0] + 1.8]
    assert len(within) <= 2 * (harness.concurrency - 1) + 1, len(within)


def test_a_servers_rate_and_max_queued_are_read_from_the_operators_config(tmp_path):
    import pytest

    from reconciler.config import load_servers
    from reconciler.core.errors import ConfigError

    config = tmp_path / "reconciler.yaml"
    config.write_text("servers:\n  ci:\n    url: https://ci.example.com\n    rate: 600/m\n    max_queued: 50\n")
    server = load_servers(config, {})["ci"]
    assert (server.rate, server.max_queued) == (10.0, 50)
    config.write_text("servers:\n  ci:\n    url: https://ci.example.com\n    rate: fast\n")
    with pytest.raises(ConfigError, match="rate"):
        load_servers(config, {})


def test_max_queued_holds_posts_while_jenkins_queue_is_full_and_plan_shows_the_backlog(make_harness):
    """One executor, builds that run until finished: items pile up in Jenkins' queue. With `max_queued: 3`
    the daemon stops POSTing once the queue holds 3, /readyz and `plan` say what waits and why, and a
    build finishing (an item leaving the queue) lets the next POST through."""
    harness = make_harness(executors=1, jobs=[{"name": "slow", "duration": None, "concurrent": True,
                                               "parameters": ["N"]}])
    harness.max_queued = 3
    daemon = harness.start()
    for i in range(8):
        harness.write(f"q/q{i}", f"job: slow\nparameters: {{N: 'n{i}'}}\n")

    def jenkins_queue() -> int:
        return len(requests.get(f"{harness.sim.url}queue/api/json", auth=(USER, TOKEN), timeout=5).json()["items"])

    wait_for(lambda: jenkins_queue() == 3, timeout=30, what="Jenkins' queue holding 3 items")
    wait_for(lambda: any("held: Jenkins' queue holds 3 items (max_queued: 3)" in n for n in daemon.readiness_notes()),
             timeout=10, what="/readyz naming the hold")
    time.sleep(2.5)  # two more readings of the queue: still full, nothing more is POSTed
    assert len(harness.sim.triggers("slow")) == 4 and jenkins_queue() == 3  # one building, three queued

    config = harness.tmp / "operator.yaml"
    config.write_text(f"servers:\n  default:\n    url: {harness.sim.url}\n    user: {USER}\n"
                      "    token: {env: JENKINS_API_TOKEN}\n    max_queued: 3\n")
    plan = subprocess.run([sys.executable, "-m", "reconciler", "plan", "--triggers", str(harness.triggers),
                           "--state", str(harness.state), "--history", str(harness.history), "--config", str(config)],
                          capture_output=True, text=True, env={**os.environ, "JENKINS_API_TOKEN": TOKEN}, timeout=60)
    assert "backlog: 4 runs decided for server default, waiting to be POSTed, held to max_queued 3 by the " \
           "operator's config" in plan.stderr, plan.stderr
    assert plan.stdout.count("pending") == 4  # the four runs themselves: decided, not yet accepted

    harness.sim.finish("slow")  # the build ends; the next item takes the executor and leaves the queue
    wait_for(lambda: len(harness.sim.triggers("slow")) == 5, timeout=10, what="the next POST")
    assert jenkins_queue() == 3
