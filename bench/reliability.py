"""Reliability: issue 30's edges rerun against an independent Jenkins stand-in (bench/standin.py), and a
kill -9 torture over the setups. Each scenario counts, from what the stand-in built:

- doubles: builds beyond the first that carry one run id (a run id is decided once: UNIQUE in the store);
- lost: runs decided and closed in the store with no build carrying their id, other than those
  recorded `refused` or `unknown` (which say so honestly);
- misrecorded: runs recorded `lost` whose build in fact ran.

Every daemon is `reconciler run` in a process of its own, killed with SIGKILL, paused with SIGSTOP.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.support import wait_for
from reconciler.store.open import open_store

HERE = Path(__file__).parent
USER, TOKEN, JOB_TOKEN = "rel", "rel-api-token", "rel-job-token"
RUN_ID = re.compile(r"reconciler run ([0-9a-f]{16})")
OPEN = {"decided", "posting", "queued", "building"}
HONEST = {"refused", "unknown"}


# -- the stand-in ---------------------------------------------------------------------------------

class Standin:
    """bench/standin.py in its own process on loopback."""

    def __init__(self, work: Path, jobs: list[dict[str, Any]], root_url: str | None = None,
                 quiet_period: float = 0.2, host: str = "127.0.0.1"):
        config = work / f"standin-{time.time_ns()}.json"
        config.write_text(json.dumps({"users": {USER: TOKEN}, "jobs": jobs, "root_url": root_url, "host": host,
                                      "quiet_period": quiet_period, "executors": 64}))
        self.proc = subprocess.Popen([sys.executable, str(HERE / "standin.py"), str(config)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        self.session = requests.Session()

    def ledger(self) -> dict[str, Any]:
        return self.session.get(f"{self.url}_standin/ledger", timeout=60).json()

    def fault(self, **fault: Any) -> None:
        self.session.post(f"{self.url}_standin/faults", json=fault, timeout=30).raise_for_status()

    def clear(self) -> None:
        self.session.delete(f"{self.url}_standin/faults", timeout=30).raise_for_status()

    def elsewhere(self, job: str, count: int) -> None:
        self.session.post(f"{self.url}_standin/elsewhere", json={"job": job, "count": count},
                          timeout=30).raise_for_status()

    def settled(self) -> bool:
        return self.ledger()["waiting"] == 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def built_ids(ledger: dict[str, Any], tag_param: str = "RID") -> collections.Counter[str]:
    """How many builds carry each run id (in a cause note, or as the tag parameter)."""
    count: collections.Counter[str] = collections.Counter()
    for builds in ledger["builds"].values():
        for b in builds:
            ids = {m for note in b["notes"] for m in RUN_ID.findall(note)}
            if b["params"].get(tag_param):
                ids.add(b["params"][tag_param])
            count.update(ids)
    return count


@dataclass
class Tally:
    """One scenario's figures."""

    name: str
    decided: int = 0
    doubles: int = 0
    lost: int = 0
    misrecorded: int = 0
    unknown: int = 0
    rounds: int = 0
    kills: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    """What else the scenario must hold and did not (a history that does not match, a replica gone)."""

    def count(self, runs: dict[str, str], ledger: dict[str, Any]) -> None:
        """`runs`: run id → status as the store has it, every run closed."""
        built = built_ids(ledger)
        self.decided += len(runs)
        for run_id, status in runs.items():
            n = built.get(run_id, 0)
            if n > 1:
                self.doubles += n - 1
                self.details.append(f"double: {run_id} built {n}×")
            if n == 0 and status not in HONEST:
                self.lost += 1
                self.details.append(f"lost: {run_id} ({status})")
            if n and status == "lost":
                self.misrecorded += 1
            if status == "unknown":
                self.unknown += 1

    @property
    def ok(self) -> bool:
        return self.doubles == 0 and self.lost == 0 and self.misrecorded == 0 and not self.failures


def store_runs(location: Path | str) -> dict[str, str]:
    store = open_store(location)
    try:
        return {r.run_id: str(r.status) for r in store.runs(limit=1_000_000)}
    finally:
        store.close()


def wait_closed(location: Path | str, expected: int, timeout: float, what: str) -> dict[str, str]:
    def closed() -> dict[str, str] | None:
        try:
            runs = store_runs(location)
        except Exception:  # the file is being created, or the database restarting
            return None
        return runs if len(runs) >= expected and not OPEN & set(runs.values()) else None

    return wait_for(closed, timeout, what, 0.25)


# -- daemons --------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    """`reconciler run` as its own process; its log in a file."""

    url: str
    triggers: Path
    state: Path | str
    workdir: Path
    job_token: str | None = JOB_TOKEN
    extra: tuple[str, ...] = ()
    name: str = ""
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.workdir / f"daemon{('-' + self.name) if self.name else ''}.log"

    def start(self) -> Daemon:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.port = free_port()
        env = {**os.environ, "JENKINS_URL": self.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN,
               "JENKINS_JOB_TOKEN": self.job_token or "", **({"POD_NAME": self.name} if self.name else {})}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "run", "--triggers", str(self.triggers), "--state",
                 str(self.state), "--history", str(self.workdir / "history"), "--resync-interval", "3600",
                 "--poll-interval", "0.5", "--listen", f"127.0.0.1:{self.port}", *self.extra],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def events(self, event: str) -> int:
        """How many times the daemon logged `event`, over all its starts."""
        return self.log.read_bytes().count(f'"event": "{event}"'.encode()) if self.log.exists() else 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> int | None:
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/readyz", timeout=5).status_code
        except requests.RequestException:
            return None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write(triggers: Path, name: str, text: str) -> None:
    path = triggers / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def busy_job(name: str = "busy", token: str | None = JOB_TOKEN, params: tuple[str, ...] = ("WHO",)
             ) -> dict[str, Any]:
    return {"name": name, "token": token, "parameters": list(params), "duration": 0.05}


# -- (1) and (6): kill -9 while posting, more than 100 builds since, a queue-hiding ingress ----------

def over_100(work: Path, rounds: int, burst: int, queue_404: bool) -> Tally:
    """Per round: a burst of `burst` specs at one job, POSTs answered late; kill -9 once POSTs are in
    Jenkins' hands; 120 builds of the job from elsewhere; restart (behind an ingress that routes only
    /job/… when `queue_404`, from the start); every run closed."""
    tally = Tally("(6) queue 404 ingress, kill -9 while posting, 120 builds since" if queue_404 else
                  "(1) kill -9 while posting, then 120 builds of the job from elsewhere")
    started = time.monotonic()
    jenkins = Standin(work, [busy_job()])
    name = "q404" if queue_404 else "over100"
    triggers, home = work / f"{name}-triggers", work / name
    state = home / "state.db"
    try:
        if queue_404:
            jenkins.fault(path="^/queue/", status=404)
        daemon = Daemon(jenkins.url, triggers, state, home)
        rng = random.Random(30)
        total = 0
        for r in range(rounds):
            jenkins.fault(path="/job/busy/buildWithParameters$", method="POST", latency=0.3, after=bool(r % 2))
            for i in range(burst):
                write(triggers, f"r{r}/s{i:03}", f"job: busy\nparameters: {{WHO: r{r}s{i}}}\n")
            total += burst
            posts0 = len(jenkins.ledger()["posts"])
            daemon.start()
            want = posts0 + rng.randint(1, burst)
            wait_for(lambda want=want: len(jenkins.ledger()["posts"]) >= want, 120, "POSTs in Jenkins' hands", 0.01)
            daemon.kill()
            tally.kills += 1
            jenkins.clear()
            if queue_404:
                jenkins.fault(path="^/queue/", status=404)
            jenkins.elsewhere("busy", 120)
            wait_for(jenkins.settled, 60, "the builds from elsewhere", 0.1)
            daemon.start()
            wait_closed(state, total, 180, f"round {r}'s runs closed")
            daemon.stop()
            tally.rounds += 1
        tally.count(store_runs(state), jenkins.ledger())
        tally.notes.append(f"found by the lookup after a restart: {daemon.events('fire_found')} runs")
    finally:
        jenkins.stop()
    tally.seconds = time.monotonic() - started
    return tally


# -- (2) a fresh pod after a pod that never pushed --------------------------------------------------

def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "P", "GIT_AUTHOR_EMAIL": "p@x",
           "GIT_COMMITTER_NAME": "P", "GIT_COMMITTER_EMAIL": "p@x"}
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True, env=env).stdout


def pushed(origin: Path) -> list[dict[str, Any]]:
    try:
        names = git(origin, "ls-tree", "-r", "--name-only", "reconciler-history", "--", "history").split()
    except subprocess.CalledProcessError:
        return []
    return [json.loads(line) for n in names for line in git(origin, "show", f"reconciler-history:{n}").splitlines()]


def writeback_config(path: Path, origin: Path, clone: Path, interval: float) -> Path:
    path.write_text(f"history:\n  repository: {origin}\n  clone: {clone}\n  interval: {interval}\n"
                    "  author: {name: reconciler-bot, email: bot@example.com}\n")
    return path


def fresh_pod(work: Path, rounds: int, n: int) -> Tally:
    """Per round: a pod fires `n` one-shots at one job with write-back every hour and is killed (once
    every POST is in, or mid-burst); a new pod, its store and clone empty, takes over. Its pushed
    history must name, one line per build, the build Jenkins ran for each run."""
    tally = Tally(f"(2) a fresh pod after a pod that never pushed, {n} one-shots at one job")
    started = time.monotonic()
    rng = random.Random(2)
    for r in range(rounds):
        jenkins = Standin(work, [busy_job()])
        home = work / f"fresh-{r}"
        triggers = home / "triggers"
        origin = home / "origin.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
        try:
            for i in range(n):
                write(triggers, f"burst/s{i:03}", f"job: busy\nparameters: {{WHO: s{i}}}\n")
            first = Daemon(jenkins.url, triggers, home / "one.db", home / "one",
                           extra=("--config", str(writeback_config(home / "slow.yaml", origin, home / "c1", 3600))))
            first.start()
            want = n if r % 2 == 0 else rng.randint(n // 3, n - 1)
            wait_for(lambda want=want, j=jenkins: len(j.ledger()["posts"]) >= want, 180, "the burst posted", 0.05)
            first.kill()
            tally.kills += 1
            before = store_runs(home / "one.db")
            if pushed(origin):
                tally.notes.append(f"round {r}: the first pod pushed before it was killed")
            fresh = Daemon(jenkins.url, triggers, home / "two.db", home / "two",
                           extra=("--config", str(writeback_config(home / "fast.yaml", origin, home / "c2", 0.5))))
            fresh.start()
            try:
                wait_for(lambda o=origin: sum(e["event"] in ("completed", "unknown", "lost", "refused")
                                              for e in pushed(o)) >= n, 240, "every outcome pushed", 0.5)
                wait_for(jenkins.settled, 60, "the queue empty", 0.1)
            finally:
                fresh.stop()
            runs = store_runs(home / "two.db")
            for run_id, status in before.items():
                runs.setdefault(run_id, status)
            ledger = jenkins.ledger()
            tally.count(runs, ledger)
            numbers = {b["number"]: b for b in ledger["builds"]["busy"]}
            lines = pushed(origin)
            decided = {e["run_id"]: e["parameters"]["WHO"] for e in lines if e["event"] == "decided"}
            started_lines = [e for e in lines if e["event"] == "started"]
            if len(started_lines) != len({e["number"] for e in started_lines}) or \
                    len(started_lines) != len(numbers) or \
                    any(numbers[e["number"]]["params"]["WHO"] != decided.get(e["run_id"]) for e in started_lines):
                tally.notes.append(f"round {r}: the pushed history does not match Jenkins one line per build "
                                   f"({len(started_lines)} `started` lines, {len(numbers)} builds)")
                tally.failures.append(f"history mismatch in round {r}")
            tally.rounds += 1
        finally:
            jenkins.stop()
    tally.seconds = time.monotonic() - started
    return tally


# -- (3) and (4): replicas on PostgreSQL -------------------------------------------------------------

LEASE = "2"


def leader_of(dsn: str, replicas: dict[str, Daemon]) -> str | None:
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as db:
            holder, live = db.execute("SELECT holder, expires_at > now() FROM leader").fetchone()
    except Exception:
        return None
    name, _, pid = (holder or "").partition("/")
    d = replicas.get(name)
    return name if live and d is not None and d.alive() and d.proc is not None and str(d.proc.pid) == pid else None


def replicas_on(jenkins: Standin, triggers: Path, dsn: str, home: Path, names: str) -> dict[str, Daemon]:
    return {n: Daemon(jenkins.url, triggers, dsn, home / n, name=n, extra=("--lease", LEASE)).start() for n in names}


def paused_leader(work: Path, pg: Any, rounds: int, n: int) -> Tally:
    """Per round: `n` specs to `n` jobs, POSTs answered in 50 ms; SIGSTOP of the leader once 10 have
    arrived, for three leases (more than two and a takeover); SIGCONT once the new leader has posted
    them all; the old one must post nothing late and stand by again."""
    tally = Tally(f"(3) SIGSTOP of the leader mid-burst for 3 leases ({LEASE} s each), {n} specs to {n} jobs")
    started = time.monotonic()
    jenkins = Standin(work, [busy_job(f"ha-{j:03}", params=("SEQ",)) for j in range(n)])
    home = work / "paused"
    triggers = home / "triggers"
    triggers.mkdir(parents=True)
    dsn = pg.database("paused")
    replicas = replicas_on(jenkins, triggers, dsn, home, "ab")
    alive_after = True
    try:
        for r in range(rounds):
            leader = wait_for(lambda: leader_of(dsn, replicas), 60, "a leader", 0.1)
            jenkins.fault(path="/buildWithParameters$", method="POST", latency=0.05)
            posts0 = len(jenkins.ledger()["posts"])
            for j in range(n):
                write(triggers, f"r{r}/p{j:03}", f"job: ha-{j:03}\nparameters: {{SEQ: r{r}p{j}}}\n")
            wait_for(lambda posts0=posts0: len(jenkins.ledger()["posts"]) >= posts0 + 10, 60, "the burst", 0.01)
            replicas[leader].signal(signal.SIGSTOP)
            stopped = time.monotonic()
            tally.kills += 1
            wait_for(lambda leader=leader: leader_of(dsn, replicas) not in (None, leader), 60, "a takeover", 0.1)
            wait_closed(dsn, (r + 1) * n, 180, "the round's runs closed")
            time.sleep(max(0.0, 3 * float(LEASE) - (time.monotonic() - stopped)))
            mark = replicas[leader].log.stat().st_size
            replicas[leader].signal(signal.SIGCONT)
            wait_for(lambda leader=leader, mark=mark: b"standing_by_again" in
                     replicas[leader].log.read_bytes()[mark:], 30, "the old leader to stand by", 0.1)
            time.sleep(2.0)  # time for a late POST to show
            jenkins.clear()
            alive_after = alive_after and all(d.alive() for d in replicas.values())
            tally.rounds += 1
        tally.count(wait_closed(dsn, rounds * n, 120, "every run closed"), jenkins.ledger())
    finally:
        for d in replicas.values():
            d.stop()
        jenkins.stop()
    withheld = sum(d.events("post_withheld") for d in replicas.values())
    found = sum(d.events("fire_found") for d in replicas.values())
    tally.notes.append(f"both replicas alive after every round: {'yes' if alive_after else 'no'}; POSTs withheld "
                       f"by a paused leader: {withheld}; runs left `posting` found by the next leader: {found}")
    if not alive_after:
        tally.failures.append("a replica exited")
    tally.seconds = time.monotonic() - started
    return tally


def outage(work: Path, pg: Any, rounds: int, after: int = 10) -> Tally:
    """PostgreSQL stopped for 5 s and started under three replicas: every replica alive and ready
    again, one leads, and `after` specs written afterwards fire once."""
    tally = Tally("(4) PostgreSQL stopped for 5 s under three replicas, specs written afterwards")
    started = time.monotonic()
    jenkins = Standin(work, [busy_job("ha", params=("SEQ",))])
    home = work / "outage"
    triggers = home / "triggers"
    triggers.mkdir(parents=True)
    dsn = pg.database("outage")
    replicas = replicas_on(jenkins, triggers, dsn, home, "abc")
    alive, ready_after, unready = 0, 0, 0
    try:
        wait_for(lambda: leader_of(dsn, replicas), 60, "a leader", 0.1)
        write(triggers, "before", "job: ha\nparameters: {SEQ: before}\n")
        wait_closed(dsn, 1, 60, "the first fire")
        for r in range(rounds):
            wait_for(lambda: all(d.ready() == 200 for d in replicas.values()), 60, "all ready", 0.2)
            pg.ctl("stop", "-m", "fast")
            try:
                t0 = time.monotonic()
                seen = wait_for(lambda: all(d.ready() == 503 for d in replicas.values()), 15, "unready", 0.1)
                unready += bool(seen)
                time.sleep(max(0.0, 5 - (time.monotonic() - t0)))
            finally:
                pg.ctl("start", *pg.options)
            tally.kills += 1
            wait_for(lambda: leader_of(dsn, replicas), 60, "a leader again", 0.2)
            for i in range(after):
                write(triggers, f"after{r}/a{i}", f"job: ha\nparameters: {{SEQ: r{r}a{i}}}\n")
            wait_closed(dsn, 1 + (r + 1) * after, 90, "the specs written afterwards fired")
            try:
                wait_for(lambda: all(d.ready() == 200 for d in replicas.values()), 60, "all ready again", 0.2)
                ready_after += 1
            except TimeoutError:
                pass
            alive += all(d.alive() and d.starts == 1 for d in replicas.values())
            tally.rounds += 1
        tally.count(store_runs(dsn), jenkins.ledger())
    finally:
        for d in replicas.values():
            d.stop()
        jenkins.stop()
    tally.notes.append(f"all three replicas alive (never restarted) after {alive} of {rounds} outages, "
                       f"all unready during {unready}, all ready again after {ready_after}")
    if alive != rounds:
        tally.failures.append(f"a replica exited or was left unready ({alive} of {rounds} outages survived)")
    tally.seconds = time.monotonic() - started
    return tally


# -- the kill -9 torture -----------------------------------------------------------------------------

SETUPS = {
    "job token (run id in the cause note)": dict(token=True, param=False, root=None, host="127.0.0.1"),
    "run_id_parameter (no job token)": dict(token=False, param=True, root=None, host="127.0.0.1"),
    "root URL ≠ reach URL (job token)": dict(token=True, param=False, root="http://127.0.0.2:9/jenkins/",
                                              host="127.0.0.1"),
    "localhost (reached as localhost, root URL 127.0.0.1; job token)": dict(
        token=True, param=False, root="http://127.0.0.1:{port}/", host="localhost"),
}


def torture(work: Path, setup: str, kills: int, budget: float, burst: int) -> Tally:
    """Kill -9 at random moments while bursts are posted and followed, builds from elsewhere pile up
    past 100 between kills; then one last start that settles everything."""
    s = SETUPS[setup]
    tally = Tally(f"kill -9 torture: {setup}")
    started = time.monotonic()
    rng = random.Random(hash(setup) & 0xFFFF)
    params = ("WHO", "RID") if s["param"] else ("WHO",)
    jenkins = Standin(work, [busy_job("busy", JOB_TOKEN if s["token"] else None, params)], root_url=s["root"])
    url = jenkins.url.replace("127.0.0.1", s["host"]) if s["host"] != "127.0.0.1" else jenkins.url
    home = work / f"torture-{len(list(work.glob('torture-*')))}"
    triggers, state = home / "triggers", home / "state.db"
    daemon = Daemon(url, triggers, state, home, job_token=JOB_TOKEN if s["token"] else None)
    written = 0
    try:
        while tally.kills < kills and time.monotonic() - started < budget:
            for i in range(rng.randint(burst // 2, burst)):
                extra = "run_id_parameter: RID\n" if s["param"] else ""
                write(triggers, f"k{tally.kills}/s{i:03}", f"job: busy\nparameters: {{WHO: k{tally.kills}s{i}}}\n"
                      + extra)
                written += 1
            latency = rng.choice((0.02, 0.1, 0.3))
            jenkins.fault(path="/job/busy/buildWithParameters$", method="POST", latency=latency,
                          after=rng.random() < 0.5)
            posts0 = len(jenkins.ledger()["posts"])
            daemon.start()
            if rng.random() < 0.7:  # most kills while POSTs are in Jenkins' hands; the rest at any moment
                want = posts0 + rng.randint(1, 10)
                with contextlib.suppress(TimeoutError):  # everything was posted before the kill came
                    wait_for(lambda want=want: len(jenkins.ledger()["posts"]) >= want, 20, "POSTs", 0.01)
                time.sleep(rng.uniform(0, 1.5 * latency))
            else:
                time.sleep(rng.uniform(0.3, 3.0))
            daemon.kill()
            tally.kills += 1
            jenkins.clear()
            if rng.random() < 0.5:
                jenkins.elsewhere("busy", rng.randint(20, 120))
        daemon.start()
        runs = wait_closed(state, written, 300, "every run closed")
        wait_for(jenkins.settled, 60, "the queue empty", 0.1)
        daemon.stop()
        tally.rounds = 1
        tally.count(runs, jenkins.ledger())
        tally.notes.append(f"found by the lookup after a restart: {daemon.events('fire_found')} runs")
        if written != len(runs):
            tally.notes.append(f"{written} specs written, {len(runs)} runs decided")
    finally:
        daemon.stop()
        jenkins.stop()
    tally.seconds = time.monotonic() - started
    return tally


# -- running and reporting ---------------------------------------------------------------------------

def run_all(work: Path, quick: bool, only: set[str] | None = None) -> list[Tally]:
    """Sizes: quick takes a minute or two; full at most ~10 minutes on an unloaded 2-core machine."""
    want = only or {"edges", "replicas", "torture"}
    tallies: list[Tally] = []
    if "edges" in want:
        tallies.append(over_100(work, 2 if quick else 6, 30 if quick else 60, queue_404=False))
        tallies.append(over_100(work, 2 if quick else 4, 30 if quick else 60, queue_404=True))
        tallies.append(fresh_pod(work, 1 if quick else 3, 150))
    if "replicas" in want:
        sys.path.insert(0, str(HERE.parent))
        from tests.postgres import Postgres, pg_bin

        if pg_bin("initdb") is None:
            tallies.append(Tally("(3), (4) replicas on PostgreSQL", notes=["not run: PostgreSQL is not installed"]))
        else:
            pg = Postgres.start()
            try:
                tallies.append(paused_leader(work, pg, 2 if quick else 5, 100 if quick else 200))
                tallies.append(outage(work, pg, 1 if quick else 3))
            finally:
                pg.stop()
    if "torture" in want:
        for setup in SETUPS:
            tallies.append(torture(work, setup, 6 if quick else 20, 40 if quick else 90, 20 if quick else 40))
    return tallies


def section(tallies: list[Tally], quick: bool, stamp: str) -> str:
    lines = [
        "## Reliability",
        "",
        f"{stamp} · {'quick' if quick else 'full'} sizes · `python -m bench --only reliability"
        f"{' --quick' if quick else ''}`",
        "",
        "Issue 30's edges rerun against `bench/standin.py`, a Jenkins stand-in written from Jenkins' API and "
        "source (not from our client): `builds` lists the newest 100, `allBuilds` all, `{M,N}` ranges as "
        "Stapler cuts them, queue items with ids folded as `Queue.schedule2` folds them, `nextBuildNumber` "
        "given when a build starts, cause notes only with the job's token. Each daemon is `reconciler run` in "
        "its own process. Doubles: builds beyond the first carrying one run id. Lost: runs decided, closed, "
        "no build carrying their id, not recorded `refused`/`unknown`. Misrecorded: recorded `lost`, in fact "
        "built.",
        "",
        "| scenario | rounds | kills / stops | runs decided | doubles | lost | misrecorded | notes | time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in tallies:
        lines.append(f"| {t.name} | {t.rounds} | {t.kills} | {t.decided} | {t.doubles} | {t.lost} | {t.misrecorded} "
                     f"| {'; '.join(t.notes)} | {t.seconds:.0f} s |")
    bad = [t for t in tallies if not t.ok]
    total = sum(t.kills for t in tallies if t.name.startswith("kill -9"))
    lines += ["", f"Torture: {total} kills in all. " + (
        "Every scenario: 0 doubles, 0 lost, 0 misrecorded." if not bad else
        "Not met: " + "; ".join(f"{t.name}: {', '.join((t.failures + t.details)[:5])}" for t in bad) + ".")]
    return "\n".join(lines) + "\n" + END + "\n"


END = "<!-- end of the reliability section: `python -m bench --only reliability` replaces what is above -->"


def place(results: Path, text: str) -> None:
    """Put the section into RESULTS.md in place of an earlier one, or after the table; the rest stays."""
    current = results.read_text() if results.exists() else ""
    m = re.search(r"^## Reliability\n.*?" + re.escape(END) + r"\n", current, re.S | re.M)
    if m:
        updated = current[:m.start()] + text + current[m.end():]
    else:
        marker = current.find("\n**Reading the burst rows.**")
        updated = current + "\n" + text if marker < 0 else current[:marker + 1] + text + "\n" + current[marker + 1:]
    results.write_text(updated)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import datetime as dt
    import tempfile

    p = argparse.ArgumentParser(prog="python -m bench.reliability")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--part", choices=("edges", "replicas", "torture"), action="append")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="reconciler-reliab-"))
    try:
        tallies = run_all(work, args.quick, set(args.part) if args.part else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = section(tallies, args.quick, f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    print(text)
    for t in tallies:
        for d in t.details[:20]:
            print(f"{t.name}: {d}")
    if not args.no_write and not args.part:
        place(HERE / "RESULTS.md", text)
    return 0 if all(t.ok for t in tallies) else 1


if __name__ == "__main__":
    sys.exit(main())
