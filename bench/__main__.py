"""`python -m bench [--quick]`: every benchmark, side by side with what users would use instead.

Everything runs against the bundled simulator in its own process on loopback. Results go to stdout
and to bench/RESULTS.md. Benchmarks are not tests: they measure, and say whether targets are met.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import reliability
from bench.heavy import write_heavy, write_hostile
from bench.profile import POST, profile_fires, write_summary
from bench.support import (
    LOOK_EACH,
    LOOK_MANY,
    TOKEN,
    USER,
    DaemonProcess,
    SimulatorProcess,
    env_for,
    median,
    percentile,
    run_quiet,
    scratch,
    wait_for,
    write_specs,
)
from reconciler import logs
from reconciler.config import Server
from reconciler.core.runs import Run, new_run
from reconciler.jenkins.client import Client
from reconciler.repo.catalog import Catalog
from reconciler.repo.history import History
from reconciler.service.daemon import Daemon, assemble
from reconciler.service.execute import _GroupCommit
from reconciler.store.open import open_store

HERE = Path(__file__).parent


@dataclass
class Row:
    benchmark: str
    ours: str
    peer: str = ""
    ratio: str = ""
    target: str = ""
    met: str = ""


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


# -- 1. change → POST latency -----------------------------------------------------------------

def measure_latency(sim: SimulatorProcess, directory: Path, writes: int) -> list[float]:
    latencies = []
    target = directory / "latency.yaml"
    for i in range(writes):
        text = f"job: bench-p\nparameters: {{SEQ: 'l{i}'}}\n"
        tmp = directory / ".latency.yaml.tmp"
        tmp.write_text(text)
        t0 = time.time()
        os.replace(tmp, target)
        found: list[dict] = []

        def arrived(seq: str = f"l{i}", found: list[dict] = found) -> bool:
            found.extend(r for r in sim.triggers_since_mark() if r["params"].get("SEQ") == [seq])
            return bool(found)

        wait_for(arrived, 30, f"POST {i}", LOOK_EACH)
        latencies.append(found[0]["at"] - t0)
        time.sleep(0.02)  # let the write settle, as consecutive commits would
    return latencies


def daemon_on_empty_directory(sim: SimulatorProcess, work: Path, name: str,
                              extra: tuple[str, ...] = ()) -> tuple[DaemonProcess, Path]:
    triggers, state = work / name, work / f"{name}-state"
    triggers.mkdir()
    state.mkdir()
    daemon = DaemonProcess(sim, triggers, state, extra=extra)
    daemon.start()
    return daemon, triggers


def in_process_daemon(sim: SimulatorProcess, triggers: Path, state: Path, history: Path | None,
                      clock: Callable[[], float] = time.time) -> Daemon:
    """A daemon in this process: for what needs its internals (a shifted clock, a timed pass)."""
    logs.configure("json", stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    server = Server(name="default", url=sim.url, user=USER, token=TOKEN)
    return assemble(triggers, state, history, {"default": server}, clock=clock)


def bench_latency(sim: SimulatorProcess, work: Path, writes: int) -> list[Row]:
    daemon, ours_dir = daemon_on_empty_directory(sim, work, "latency")
    sim.mark()
    ours = measure_latency(sim, ours_dir, writes)
    daemon.stop()

    floor_dir = work / "latency-floor"
    floor_dir.mkdir()
    floor = subprocess.Popen([sys.executable, str(HERE / "floor.py"), str(floor_dir), sim.url, USER, TOKEN],
                             stdout=subprocess.PIPE, text=True)
    assert floor.stdout is not None
    floor.stdout.readline()
    time.sleep(0.3)
    sim.mark()
    base = measure_latency(sim, floor_dir, writes)
    floor.terminate()
    floor.wait()
    p50, p99 = percentile(ours, 50), percentile(ours, 99)
    f50, f99 = percentile(base, 50), percentile(base, 99)
    return [Row(f"change → POST p50 ({writes} atomic renames)", ms(p50), f"inotify+POST floor: {ms(f50)}",
                f"{p50 / f50:.2f}× the floor"),
            Row("change → POST p99", ms(p99), f"floor: {ms(f99)}", f"{p99 / f99:.2f}× the floor", "≤ 50 ms",
                verdict(p99 <= 0.05))]


# -- 2. burst: many specs in one checkout ----------------------------------------------------

@dataclass(frozen=True)
class Burst:
    rate: float
    """Fires per second, from the checkout's rename to the simulator receiving the last POST."""
    cpu_ms: float
    """The daemon's CPU per fire over the same span, of which `user_ms` in user space, `kernel_ms` in the kernel."""
    user_ms: float
    kernel_ms: float
    switches: float
    """Context switches per fire over the same span, the daemon's threads together."""
    post_rate: float
    """POSTs per second from the first to the last, once the pass that reads, parses and records every spec is done."""
    followed_ms: float
    """With `follow`: the CPU per run from the last POST until every run's outcome is recorded (else NaN)."""


def our_burst(sim: SimulatorProcess, work: Path, n: int, name: str, extra: tuple[str, ...] = (),
              then: Callable[[], Any] | None = None, follow: bool = False) -> Burst:
    """A burst of `n` new specs landing in one rename. The daemon polls outcomes at its default interval,
    as users run it: it looks at a burst's runs once the burst is posted, so the span of the fires holds
    fires only, and the following is timed on its own. `then` runs before the daemon stops."""
    daemon, triggers = daemon_on_empty_directory(sim, work, name, ("--poll-interval", str(POLL_INTERVAL), *extra))
    staging = work / f"{name}-staging"
    write_specs(staging, n, prefix="b")
    sim.mark()
    (user0, kernel0), switches0, t0 = daemon.cpu_split(), daemon.switches(), time.time()
    os.rename(staging, triggers / "checkout")  # one atomic swap, as a checkout lands
    got = sim.collect_triggers(n, 120)
    (user, kernel), switches = daemon.cpu_split(), daemon.switches()
    followed = math.nan
    if follow:
        wait_for(lambda: daemon.log.read_bytes().count(b'"build_completed"') >= n, 120, f"{n} outcomes", LOOK_MANY)
        followed = (daemon.cpu_seconds() - user - kernel) / n * 1000
    if then is not None:
        then()
    daemon.stop()
    first, last = min(r["at"] for r in got), max(r["at"] for r in got)
    per_fire = 1000 / n
    return Burst(n / (last - t0), (user - user0 + kernel - kernel0) * per_fire, (user - user0) * per_fire,
                 (kernel - kernel0) * per_fire, (switches - switches0) / n, (n - 1) / (last - first), followed)


POLL_INTERVAL = 5.0
"""The daemon's default `--poll-interval` (the longest pause between looks at a followed run)."""


def file_creation_us(directory: Path, count: int = 300) -> float:
    """CPU to create a file and write a line to it, here and now: a burst of new triggers pays it once
    a fire (each one's first history line), the peers never, and it varies with the disk's state."""
    directory.mkdir()
    times = []
    for i in range(count):
        started = time.process_time()
        fd = os.open(directory / f"{i}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, b"{}\n")
        os.close(fd)
        times.append(time.process_time() - started)
    return median(times) * 1e6


CONCURRENCY = 32
"""The daemon's default requests in flight per server, which the ceiling of a burst follows from."""


def bench_burst(sim: SimulatorProcess, work: Path, n: int, repeats: int,
                latency: float = 0.0) -> tuple[list[Row], float]:
    """With a latency, Jenkins takes that long to answer each POST (a remote Jenkins, its queue lock):
    a sequential client waits out every round trip, the daemon keeps CONCURRENCY of them in flight,
    so CONCURRENCY / latency is the most it can do. At 0 the simulator answers at once and every
    client is bound by its own CPU: information, no target."""
    if latency:
        sim.add_fault({"path": "/build(WithParameters)?$", "method": "POST", "latency": latency})
    created = file_creation_us(work / f"creation-{latency * 1000:.0f}ms")
    runs = [our_burst(sim, work, n, f"burst-{latency * 1000:.0f}ms-{k}", follow=bool(latency)) for k in range(repeats)]
    rates = sorted(b.rate for b in runs)
    ours, cpu = median(rates), median([b.cpu_ms for b in runs])
    typical = min(runs, key=lambda b: abs(b.cpu_ms - cpu))
    followed = median([b.followed_ms for b in runs])
    spread = f" (runs {rates[0]:.0f}-{rates[-1]:.0f})" if len(rates) > 1 else ""
    loop_n = n if not latency else max(20, min(n, int(4 / latency)))  # a sequential loop: ~4 s is a rate
    pj = run_quiet([sys.executable, "-c",
                    "import jenkins,sys\n"
                    f"s=jenkins.Jenkins('{sim.url}', username='{USER}', password='{TOKEN}')\n"
                    f"[s.build_job('bench-p', {{'N': f'pj{{i}}'}}) for i in range({loop_n})]"])
    sim.clear_faults()
    sim.mark()
    pj_rate = loop_n / pj
    cpu_row = (f"{cpu:.2f} ms of CPU a fire (runs {', '.join(f'{b.cpu_ms:.2f}' for b in runs)}); in the median run "
               f"{typical.user_ms:.2f} ms in user space and {typical.kernel_ms:.2f} ms in the kernel, "
               f"{typical.switches:.0f} context switches a fire (creating a file: {created:.0f} µs)")
    if not latency:
        return [Row(f"burst: {n} new specs in one checkout, until all POSTed (median of {repeats}); the simulator "
                    "answers at once (information: no target)", f"{ours:.0f} fires/s{spread}, {cpu_row}",
                    f"python-jenkins loop: {pj_rate:.0f}/s", f"{ours / pj_rate:.1f}×")], cpu
    allowed = CONCURRENCY / latency
    where = f"Jenkins answers each POST in {latency * 1000:.0f} ms (modelled), concurrency {CONCURRENCY}"
    return [
        Row(f"burst: {n} new specs in one checkout, until all POSTed (median of {repeats}); {where}",
            f"{ours:.0f} fires/s{spread}", f"python-jenkins loop: {pj_rate:.0f}/s", f"{ours / pj_rate:.1f}×",
            "≥ 10×", verdict(ours >= 10 * pj_rate)),
        Row(f"burst at {latency * 1000:.0f} ms: share of what concurrency and latency allow "
            f"({CONCURRENCY} / {latency:g} s = {allowed:.0f}/s)", f"{ours / allowed:.0%}", "", "", "aim ≥ 50 %",
            verdict(ours >= allowed / 2)),
        Row(f"CPU per fire, burst at {latency * 1000:.0f} ms", cpu_row, "", "", "≤ 1 ms", verdict(cpu <= 1.0)),
        Row(f"CPU per run followed to its outcome after the burst at {latency * 1000:.0f} ms (from the last POST "
            "until every outcome is recorded: reads of the queue and builds, two history lines, two steps)",
            f"{followed:.2f} ms of CPU a run", "", "", "", ""),
    ], cpu


def bench_pieces(sim: SimulatorProcess, work: Path, n: int, rounds: int = 3) -> list[Row]:
    """The CPU of each piece of a fire, measured alone with the daemon's own parts: on one thread, but
    the steps the daemon's workers write through its group commit (the posting mark, the queue item),
    which are written so, from CONCURRENCY threads at once (one commit, and one fsync, for the steps
    brought while one is written; the threads' hand-offs counted). Each piece is the median of
    `rounds` rounds over fresh specs, store and history: one round on a shared machine moves by half."""
    logs.configure("json", stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    logs.get()  # structlog is imported by the first logger: once a process, not once a fire
    measured = [_pieces_round(sim, work / f"pieces-{k}", n) for k in range(rounds)]
    pieces = {name: median([m[name] for m, _ in measured]) for name in measured[0][0]}
    per_commit = median([steps for _, steps in measured])
    total = sum(pieces.values())
    ours = total - pieces["the POST"]
    created = file_creation_us(work / "pieces-creation")
    return [Row(f"CPU per fire, piece by piece (each alone over {n} fires, on one thread; the steps through the "
                f"group commit from {CONCURRENCY} threads, {per_commit:.1f} steps a commit; each piece the median "
                f"of {rounds} rounds)",
                " · ".join(f"{name}: {us:.0f} µs" for name, us in pieces.items())
                + f" · sum: {total / 1000:.2f} ms; ours (all but the POST): {ours:.0f} µs (rounds: "
                + ", ".join(f"{sum(m.values()) - m['the POST']:.0f}" for m, _ in measured)
                + f"), of which the `decided` line creates the trigger's history file (creating a file, here and "
                f"now: {created:.0f} µs)", "", "", "ours ≤ 0.3 ms", verdict(ours <= 300))]


def _pieces_round(sim: SimulatorProcess, work: Path, n: int) -> tuple[dict[str, float], float]:
    """One round of `bench_pieces`: µs a fire by piece, and the steps a group commit carried."""
    work.mkdir()
    triggers = work / "specs"
    write_specs(triggers, n, prefix="p")
    catalog = Catalog(str(triggers))
    store, history = open_store(work / "pieces.db"), History(work / "history")
    client = Client(Server(name="default", url=sim.url, user=USER, token=TOKEN))
    now = time.time()
    runs: list[Run] = []
    accepted: list[str] = []
    commits = _GroupCommit(store)

    def grouped(steps: list[tuple[Run, dict[str, Any]]], durable: bool) -> None:
        """Each of CONCURRENCY threads writes its share of `steps` in turn, as workers do."""
        def write(i: int) -> None:
            for k in range(i, len(steps), CONCURRENCY):
                runs[k] = commits.write(*steps[k], durable)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(CONCURRENCY)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def timed(step: Callable[[], Any]) -> float:
        started = time.process_time()
        step()
        return (time.process_time() - started) / n * 1e6

    def post() -> None:
        accepted.extend(client.trigger(r.job, r.parameters, r.cause).queue_url for r in runs)

    def log_twice() -> None:
        for r in runs:
            log = logs.get(trigger=r.trigger, run_id=r.run_id, job=r.job, server=r.server)
            log.info("fire_decided")
            log.info("fire_posted", queue_url=accepted[0], attempts=1)

    pieces = {
        "read and parse the spec": timed(catalog.scan),
        "decide": timed(lambda: runs.extend(new_run(e.spec, now) for e in catalog.entries.values() if e.spec)),
        "record the decision": timed(lambda: store.decide(runs)),
        "history line `decided`": timed(lambda: [history.decided(r, now) for r in runs]),
        "posting mark (fsynced, group commit)": timed(lambda: grouped(
            [(r, {"status": "posting", "attempts": 1}) for r in runs], durable=True)),
        "the POST": timed(post),
        "record the queue item (group commit)": timed(lambda: grouped(
            [(r, {"status": "queued", "queue_url": q}) for r, q in zip(runs, accepted, strict=True)], durable=False)),
        "history line `queued`": timed(lambda: [history.append(r, "queued", now, queue_url=q)
                                                for r, q in zip(runs, accepted, strict=True)]),
        "two log lines": timed(log_twice),
    }
    client.close()
    store.close()
    return pieces, commits.steps / commits.batches


# -- 3. scale: 10,000 specs ------------------------------------------------------------------

def git_sync_swap(d: Daemon, tree: Path, worktree: Path, current: Path) -> float:
    """What git-sync does on a commit: every file of the tree created anew in a new worktree, and a
    symlink renamed over the one the daemon watches. Returns the seconds of the rescan that follows,
    as the watcher makes it on a swap: every file looked at, only what changed planned."""
    shutil.copytree(tree, worktree)
    changed = min(worktree.rglob("*.yaml"))
    changed.write_text(changed.read_text().replace("parameters: {", "parameters: {SEQ: 'swapped', "))
    swapped = current.with_name(current.name + ".new")
    swapped.symlink_to(worktree)
    swapped.rename(current)
    started = time.perf_counter()
    fired = d.reconcile(d.catalog.scan())
    elapsed = time.perf_counter() - started
    assert len(fired) == 1, f"the swap fired {len(fired)} runs, not the one changed spec"
    return elapsed


def bench_scale(sim: SimulatorProcess, work: Path, n: int, repeats: int) -> list[Row]:
    triggers = work / "scale"
    write_specs(triggers, n, prefix="s")
    state = work / "scale-state"
    state.mkdir()
    common = ["--triggers", str(triggers), "--state", str(state / "state.db"), "--history", str(state / "history")]
    run_quiet([sys.executable, "-m", "reconciler", "adopt", *common], env=env_for(sim))
    shutil.rmtree(state / "history")  # adopt wrote a line per trigger; the daemon must not re-read them

    daemon = DaemonProcess(sim, triggers, state)
    cold = daemon.start()
    rss = daemon.rss_mb()
    daemon.stop()

    current = work / "scale-current"  # behind a symlink, as git-sync publishes a checkout
    current.symlink_to(triggers)
    d = in_process_daemon(sim, current, state / "state.db", None)
    d.bootstrap()
    d.pass_once()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fired = d.pass_once()
        times.append(time.perf_counter() - started)
        assert not fired
    resync = median(times)
    swap = git_sync_swap(d, triggers, work / "scale-rev2", current)
    d.close()
    return [
        Row(f"resync of {n} unchanged specs (median of {repeats})", ms(resync), "", "", "≤ 0.5 s",
            verdict(resync <= 0.5)),
        Row(f"git-sync swap: the {n} specs in a new worktree, one of them changed (the rescan that fires it)",
            ms(swap), "", "", "≤ 0.5 s (the resync target)", verdict(swap <= 0.5)),
        Row(f"cold start with {n} specs (process start → first pass done)", f"{cold:.2f} s"),
        Row(f"RSS with {n} specs", f"{rss:.1f} MB", "", "", "≤ 80 MB", verdict(rss <= 80)),
    ]


# -- 4. idle CPU -----------------------------------------------------------------------------

def bench_idle(sim: SimulatorProcess, work: Path, n: int, seconds: float) -> list[Row]:
    triggers = work / "idle"
    write_specs(triggers, n, prefix="i")
    state = work / "idle-state"
    state.mkdir()
    run_quiet([sys.executable, "-m", "reconciler", "adopt", "--triggers", str(triggers), "--state",
               str(state / "state.db"), "--history", str(state / "history")], env=env_for(sim))
    daemon = DaemonProcess(sim, triggers, state)
    daemon.start()
    time.sleep(2)
    cpu0, t0 = daemon.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    pct = (daemon.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100
    daemon.stop()
    return [Row(f"idle CPU over {seconds:.0f} s with {n} specs", f"{pct:.2f} %", "", "", "≤ 0.2 %",
                verdict(pct <= 0.2))]


# -- 5. scheduler lateness -------------------------------------------------------------------

def bench_lateness(sim: SimulatorProcess, work: Path, n: int) -> list[Row]:
    triggers = work / "sched"
    triggers.mkdir()
    for i in range(n):
        (triggers / f"s{i:04}.yaml").write_text(f"job: bench-p\nparameters: {{N: 'tick{i}'}}\n"
                                                 "schedule: '* * * * *'\n")
    boundary = (int(time.time()) // 60 + 2) * 60
    offset = boundary - 3.0 - time.time()  # the real clock, shifted: a minute boundary 3 s away

    def clock() -> float:
        return time.time() + offset

    daemon = in_process_daemon(sim, triggers, work / "sched.db", work / "sched-history", clock)
    thread = threading.Thread(target=daemon.run, args=(daemon.executor.stop,), daemon=True)
    sim.mark()
    thread.start()
    tick_real = boundary - offset
    got = sim.collect_triggers(n, 60)
    daemon.request_stop()
    thread.join()
    runs = daemon.store.runs(limit=n * 2)
    daemon.close()
    decided = [r.decided_at - boundary for r in runs]
    arrivals = [r["at"] - tick_real for r in got]
    d50, d99 = percentile(decided, 50), percentile(decided, 99)
    return [
        Row(f"scheduler lateness, tick → decision ({n} schedules due at once) p50", ms(d50),
            "a poll every 60 s (modelled, not run): 30 s", "", "≤ 5 ms", verdict(d50 <= 0.005)),
        Row("scheduler lateness, tick → decision p99", ms(d99), "", "", "≤ 20 ms", verdict(d99 <= 0.02)),
        Row(f"scheduler: tick → POST received, p50 / p99 / last of {n}",
            f"{ms(percentile(arrivals, 50))} / {ms(percentile(arrivals, 99))} / {ms(max(arrivals))}", "", "",
            "all within 2 s", verdict(max(arrivals) <= 2.0)),
    ]


# -- 6. validate -----------------------------------------------------------------------------

def bench_validate(work: Path, n: int, repeats: int) -> list[Row]:
    specs = work / "validate"
    write_specs(specs, n, prefix="v")
    ours = median([run_quiet([sys.executable, "-m", "reconciler", "validate", str(specs)])
                   for _ in range(repeats)])
    loop = ("import pathlib, yaml\n"
            f"[yaml.safe_load(p.read_text()) for p in pathlib.Path('{specs}').rglob('*.yaml')]")
    peer = median([run_quiet([sys.executable, "-c", loop]) for _ in range(repeats)])
    return [Row(f"validate {n} specs (whole command, median of {repeats})", ms(ours),
                f"yaml.safe_load loop: {ms(peer)}", f"{ours / peer:.2f}× the loop's time")]


# -- 7. history pushed to git ----------------------------------------------------------------

def pushed_outcomes(origin: Path) -> int:
    """How many `completed` lines the history branch of a bare repository holds (one `git grep`)."""
    out = subprocess.run(["git", "-C", str(origin), "grep", "-c", '"event": "completed"', "reconciler-history",
                          "--", "history"], capture_output=True, text=True).stdout
    return sum(int(line.rsplit(":", 1)[1]) for line in out.splitlines() if line.count(":") >= 2)


def last_completed_at(origin: Path) -> float:
    """When the newest outcome line was written: the daemon learned of the last build's end."""
    out = subprocess.run(["git", "-C", str(origin), "grep", "-h", '"event": "completed"', "reconciler-history",
                          "--", "history"], capture_output=True, text=True).stdout
    stamps = [line.split('"at": "', 1)[1].split('"', 1)[0] for line in out.splitlines() if '"at": "' in line]
    return max(dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in stamps)


def bench_writeback(sim: SimulatorProcess, work: Path, n: int, repeats: int, latency: float = 0.02) -> list[Row]:
    """A burst of `n` fires with history pushed to a bare repository on disk (default settings), beside
    the same burst without write-back, alternated so that both see the same machine."""
    sim.add_fault({"path": "/build(WithParameters)?$", "method": "POST", "latency": latency})
    our_burst(sim, work, n, "wb-warm-up")  # the first burst of a run is slower, whichever it is
    off_rates, on_rates, lags, commits = [], [], [], []
    for k in range(repeats):
        if k % 2 == 0:  # which goes first alternates: the simulator slows a little as its builds pile up
            off_rates.append(our_burst(sim, work, n, f"wb-off-{k}").rate)
        origin = work / f"wb-origin-{k}.git"
        run_quiet(["git", "init", "-q", "--bare", "-b", "main", str(origin)])
        config = work / f"wb-{k}.yaml"
        config.write_text(f"history:\n  repository: {origin}\n  clone: {work / f'wb-clone-{k}'}\n")
        pushed_at: list[float] = []

        def all_pushed(origin: Path = origin, pushed_at: list[float] = pushed_at) -> None:
            wait_for(lambda: pushed_outcomes(origin) >= n, 180, f"{n} outcomes pushed", 0.05)
            pushed_at.append(time.time())

        on_rates.append(our_burst(sim, work, n, f"wb-on-{k}", ("--config", str(config)), all_pushed).rate)
        lags.append(pushed_at[0] - last_completed_at(origin))
        if k % 2 == 1:
            off_rates.append(our_burst(sim, work, n, f"wb-off-{k}").rate)
        count = subprocess.run(["git", "-C", str(origin), "rev-list", "--count", "reconciler-history"],
                               capture_output=True, text=True).stdout
        commits.append(int(count))
    sim.clear_faults()
    sim.mark()
    off, on, lag = median(off_rates), median(on_rates), median(lags)
    where = f"Jenkins answers each POST in {latency * 1000:.0f} ms (modelled); median of {repeats}"
    return [
        Row(f"history write-back: {n} fires, last outcome line written → every outcome on the remote ({where})",
            f"{lag:.1f} s (runs {min(lags):.1f}-{max(lags):.1f})", "", "", "≤ 10 s", verdict(max(lags) <= 10)),
        Row(f"history write-back: commits for the {n} fires and their outcomes", f"{max(commits)} at most "
            f"(runs {min(commits)}-{max(commits)})", "", "", "≤ 5", verdict(max(commits) <= 5)),
        Row(f"history write-back: burst fires/s with write-back on vs off ({where})",
            f"{on:.0f} fires/s (runs {min(on_rates):.0f}-{max(on_rates):.0f})",
            f"write-back off: {off:.0f} fires/s (runs {min(off_rates):.0f}-{max(off_rates):.0f})", f"{on / off:.0%}",
            "≥ 90 %", verdict(on >= 0.9 * off)),
    ]


# -- 8. replicas on PostgreSQL ---------------------------------------------------------------

def leader_of(dsn: str) -> str | None:
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True) as db:
            holder, live = db.execute("SELECT holder, expires_at > now() FROM leader").fetchone()
    except psycopg.Error:
        return None
    return holder.partition("/")[0] if holder and live else None


def bench_ha(sim: SimulatorProcess, work: Path, n: int, kills: int, repeats: int, latency: float = 0.02) -> list[Row]:
    """Takeover time, kill -9 of the leader to the new leader's POST of a spec written at the kill;
    burst fires/s on PostgreSQL against SQLite (alternated); a standby's CPU at idle."""
    sys.path.insert(0, str(HERE.parent))
    from tests.postgres import Postgres, pg_bin

    if pg_bin("initdb") is None:
        return [Row("replicas on PostgreSQL", "not run: PostgreSQL is not installed")]
    pg = Postgres.start()
    try:
        sqlite_rates, pg_rates = [], []
        sim.add_fault({"path": "/build(WithParameters)?$", "method": "POST", "latency": latency})
        our_burst(sim, work, n, "ha-warm-up")  # the first burst of a run is slower, whichever it is
        for k in range(repeats):  # alternated: ABBA, so that drift in the machine's speed falls on both
            for store in ("sqlite", "pg") if k % 2 == 0 else ("pg", "sqlite"):
                if store == "sqlite":
                    sqlite_rates.append(our_burst(sim, work, n, f"ha-sqlite-{k}").rate)
                else:
                    pg_rates.append(our_burst(sim, work, n, f"ha-pg-{k}", ("--state", pg.database(f"burst_{k}"))).rate)
        sim.clear_faults()
        sim.mark()
        dsn = pg.database("takeover")
        triggers = work / "ha-triggers"
        triggers.mkdir()
        replicas = {}
        for name in ("a", "b", "c"):
            (work / f"ha-{name}").mkdir()
            replicas[name] = DaemonProcess(sim, triggers, work / f"ha-{name}", extra=("--state", dsn), name=name)
            replicas[name].start()
        takeovers = []
        for i in range(kills):
            leader = wait_for(lambda: leader_of(dsn), 30, "a leader", 0.05)
            others = [r for name, r in replicas.items() if name != leader]
            sim.mark()
            killed = time.time()
            replicas[leader].kill()
            (triggers / f".w{i}.tmp").write_text(f"job: bench-p\nparameters: {{SEQ: 'k{i}'}}\n")
            os.replace(triggers / f".w{i}.tmp", triggers / f"w{i}.yaml")
            [posted] = sim.collect_triggers(1, 60)
            takeovers.append(posted["at"] - killed)
            replicas[leader].start()  # back as a standby, for the next kill
            assert all(r.proc is not None and r.proc.poll() is None for r in others)
        standby = next(r for name, r in replicas.items() if name != leader_of(dsn))
        cpu0, t0 = standby.cpu_seconds(), time.monotonic()
        time.sleep(20)
        idle = (standby.cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100
        for r in replicas.values():
            r.stop()
    finally:
        pg.stop()
    p50, p99 = percentile(takeovers, 50), percentile(takeovers, 99)
    sq, pq = median(sqlite_rates), median(pg_rates)
    return [
        Row(f"takeover: kill -9 of the leader → the new leader's POST of a spec written then ({kills} kills, "
            "3 replicas, lease 3 s) p50", f"{p50:.2f} s"),
        Row("takeover p99", f"{p99:.2f} s (max {max(takeovers):.2f} s)", "Kubernetes' default lease: 15 s", "",
            "≤ 5 s", verdict(p99 <= 5)),
        Row(f"burst: {n} new specs, until all POSTed, PostgreSQL vs SQLite (Jenkins answers each POST in "
            f"{latency * 1000:.0f} ms, modelled; median of {repeats}, alternated)",
            f"{pq:.0f} fires/s (runs {min(pg_rates):.0f}-{max(pg_rates):.0f})",
            f"SQLite: {sq:.0f} fires/s (runs {min(sqlite_rates):.0f}-{max(sqlite_rates):.0f})", f"{pq / sq:.0%}",
            "≥ 70 %", verdict(pq >= 0.7 * sq)),
        Row("standby CPU at idle over 20 s (watching the triggers, trying for the lease twice a second)",
            f"{idle:.2f} %",
            "", "", "", ""),
    ]


# -- 9. bounded under load -------------------------------------------------------------------

def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


class HealthPoller:
    """GET /healthz every 0.2 s on a thread; counts the answers that are not 200."""

    def __init__(self, log: Path):
        self.log, self.polls, self.failures = log, 0, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _address(self) -> str | None:
        for line in self.log.read_text().splitlines() if self.log.exists() else ():
            if '"probes_listening"' in line:
                return json.loads(line)["address"]
        return None

    def _poll(self) -> None:
        import requests

        address = wait_for(self._address, 60, "the probes", 0.01)
        while not self.done.is_set():
            try:
                ok = requests.get(f"http://{address}/healthz", timeout=5).status_code == 200
            except requests.RequestException:
                ok = False
            self.polls += 1
            self.failures += not ok
            self.done.wait(0.2)

    def stop(self) -> str:
        self.done.set()
        self.thread.join(timeout=10)
        return f"{self.failures} of {self.polls} polls failed"


def bench_heavy(sim: SimulatorProcess, work: Path, ordinary: int, heavy: int, rewrite: int) -> list[Row]:
    """`heavy` files of 256 KiB (four shapes, bench/heavy.py) beside `ordinary` specs (adopted first when
    there are thousands, as a running deployment has them): the first pass's time and CPU, when the
    ordinary specs' POSTs arrived (when not adopted), peak RSS, /healthz failures; then `rewrite` heavy
    files rewritten, and peak RSS again."""
    name = f"heavy-{ordinary}"
    triggers, state = work / name, work / f"{name}-state"
    write_specs(triggers, ordinary, prefix="o")
    state.mkdir()
    adopted = ordinary > 100
    if adopted:
        run_quiet([sys.executable, "-m", "reconciler", "adopt", "--triggers", str(triggers), "--state",
                   str(state / "state.db"), "--history", str(state / "history")], env=env_for(sim))
        shutil.rmtree(state / "history")
    write_heavy(triggers / "heavy", heavy)
    daemon = DaemonProcess(sim, triggers, state, extra=("--listen", "127.0.0.1:0"))
    poller = HealthPoller(daemon.log)
    sim.mark()
    started = time.time()
    first_pass = daemon.start(timeout=300)
    cpu = daemon.cpu_seconds()
    posted = ""
    if not adopted:
        got = sim.collect_triggers(ordinary, 60)
        posted = f"; the {ordinary} ordinary specs POSTed {max(r['at'] for r in got) - started:.2f} s after start"
    assert daemon.proc is not None
    peak = peak_rss_mib(daemon.proc.pid)
    before = daemon.log.read_bytes().count(b'"spec_invalid"')
    write_heavy(triggers / "heavy", rewrite, generation=1)
    wait_for(lambda: daemon.log.read_bytes().count(b'"spec_invalid"') >= before + rewrite, 120, "the rewrites", 0.05)
    time.sleep(1)
    after = peak_rss_mib(daemon.proc.pid)
    health = poller.stop()
    daemon.stop()
    where = f"{ordinary} specs + {heavy} heavy 256 KiB files"
    return [
        Row(f"first pass, {where} (process start → pass done; CPU of the process)",
            f"{first_pass:.2f} s, {cpu:.2f} s of CPU{posted}", "", "", "CPU ≤ 20 s", verdict(cpu <= 20)),
        Row(f"peak RSS, {where}; after {rewrite} heavy files are rewritten",
            f"{peak:.1f} MiB; {after:.1f} MiB", "", "", "< 200 MiB", verdict(max(peak, after) < 200)),
        Row(f"/healthz during the first pass and the rewrites, {where}", health, "", "", "0 failures",
            verdict(poller.failures == 0)),
    ]


def bench_lanes(sim: SimulatorProcess, work: Path, n: int, canaries: int) -> list[Row]:
    """`n` schedules due at one minute (in-process daemon on a shifted clock, as the lateness benchmark),
    and one-shot canaries written while their ticks are being posted: each canary's write → POST, and
    when the last tick's POST arrived, that minute and the next (the first also creates `n` files)."""
    triggers = work / "lanes"
    write_specs(triggers, 0)
    for i in range(n):
        sub = triggers / f"g{i // 100:03}"
        sub.mkdir(exist_ok=True)
        (sub / f"s{i:05}.yaml").write_text(f"job: bench-p\nparameters: {{N: 'tick{i}'}}\nschedule: '* * * * *'\n")
    boundary = (int(time.time()) // 60 + 2) * 60
    offset = boundary - 20.0 - time.time()  # the real clock, shifted: a minute boundary 20 s away

    def clock() -> float:
        return time.time() + offset

    daemon = in_process_daemon(sim, triggers, work / "lanes.db", work / "lanes-history", clock)
    thread = threading.Thread(target=daemon.run, args=(daemon.executor.stop,), daemon=True)
    thread.start()
    wait_for(daemon.ready.is_set, 600, "the first pass", 0.05)
    tick_real = boundary - offset
    time.sleep(max(0.0, tick_real - 0.5 - time.time()))
    sim.mark()  # before the minute: a mark after its first POSTs would drop them
    written: dict[str, float] = {}
    for k in range(canaries):  # spread over the posting of the ticks
        time.sleep(max(0.0, tick_real + 0.5 + k * 1.0 - time.time()))
        tmp = triggers / f".c{k}.tmp"
        tmp.write_text(f"job: bench-p\nparameters: {{SEQ: 'canary{k}'}}\n")
        written[f"canary{k}"] = time.time()
        os.replace(tmp, triggers / f"canary{k}.yaml")
    got = sim.collect_triggers(n + canaries, 120)
    time.sleep(max(0.0, tick_real + 59.5 - time.time()))
    sim.mark()
    again = sim.collect_triggers(n, 120)
    daemon.request_stop()
    thread.join()
    daemon.close()
    ticks = [r["at"] - tick_real for r in got if r["params"].get("N")]
    next_ticks = [r["at"] - tick_real - 60 for r in again]
    latency = [r["at"] - written[r["params"]["SEQ"][0]] for r in got if r["params"].get("SEQ")]
    return [
        Row(f"one-shot under a {n}-tick minute: write → POST of {canaries} canaries written 0.5-{canaries - 0.5:g} s "
            "after the minute, while the ticks are posted", " / ".join(ms(x) for x in latency) +
            f" (max {ms(max(latency))})", "", "", "each ≤ 1 s", verdict(max(latency) <= 1.0)),
        Row(f"{n} ticks of one minute: tick → last POST received (the daemon's first minute: each tick also "
            "creates its trigger's history file)",
            f"{max(ticks):.2f} s (p50 {percentile(ticks, 50):.2f} s)", "", "", "≤ 10 s", verdict(max(ticks) <= 10)),
        Row(f"{n} ticks of the next minute (their history files there already)",
            f"{max(next_ticks):.2f} s (p50 {percentile(next_ticks, 50):.2f} s)", "", "", "≤ 10 s",
            verdict(max(next_ticks) <= 10)),
    ]


def bench_drain(sim: SimulatorProcess, work: Path, n: int, rate: float) -> list[Row]:
    """`n` new specs in one checkout against a server limited to `rate` POSTs a second."""
    config = work / "drain.yaml"
    config.write_text(f"servers:\n  default:\n    url: {sim.url}\n    user: {USER}\n"
                      f"    token: {{env: JENKINS_API_TOKEN}}\n    rate: {rate:g}/s\n")
    drained = our_burst(sim, work, n, "drain", ("--config", str(config)))
    rate_got, spacing = drained.rate, drained.post_rate
    return [Row(f"drain at a set rate: {n} new specs, server `rate: {rate:g}/s` (first → last POST)",
                f"{spacing:.1f} POSTs/s (rename → last POST: {rate_got:.1f}/s)", "", "",
                f"{rate:g}/s ± 10 %", verdict(abs(spacing - rate) <= rate * 0.1))]


def bench_hostile(sim: SimulatorProcess, work: Path, files: int, folders: int) -> list[Row]:
    """The issue's hostile corpus, generated (bench/heavy.py): `files` files in `folders` folders, heavy and
    odd ones among ordinary specs. The first pass's time and CPU, peak RSS, /healthz failures meanwhile."""
    triggers, state = work / "hostile", work / "hostile-state"
    counts = write_hostile(triggers, files, folders)
    state.mkdir()
    daemon = DaemonProcess(sim, triggers, state, extra=("--listen", "127.0.0.1:0"))
    poller = HealthPoller(daemon.log)
    first_pass = daemon.start(timeout=180)
    cpu = daemon.cpu_seconds()
    assert daemon.proc is not None
    time.sleep(1)  # a few more polls once the pass is done (its fires are still being POSTed)
    peak = peak_rss_mib(daemon.proc.pid)
    health = poller.stop()
    daemon.stop()
    where = (f"hostile corpus: {files} files ({counts['heavy']} heavy, {counts['odd']} odd, {counts['ordinary']} "
             f"ordinary) in {counts['folders']} folders")
    return [
        Row(f"first pass, {where} (process start → pass done; CPU of the process)",
            f"{first_pass:.2f} s, {cpu:.2f} s of CPU", "", "", "CPU ≤ 20 s", verdict(cpu <= 20)),
        Row(f"peak RSS, {where}", f"{peak:.1f} MiB", "", "", "< 200 MiB (the pod's 256Mi)", verdict(peak < 200)),
        Row(f"/healthz during the first pass, {where}", health, "", "", "0 failures", verdict(poller.failures == 0)),
    ]


def bench_profile(sim: SimulatorProcess, work: Path, n: int, latency: float = 0.02) -> list[Row]:
    """The firing step itself, piece by piece (bench/profile.py; the summary goes to bench/PROFILE.txt), and
    a whole burst in the daemon beside it: what the process spends on top of the step, in user space and
    in the kernel."""
    pieces, per_fire, per_fire_threads, top = profile_fires(sim, work, n, CONCURRENCY)
    sim.add_fault({"path": "/build(WithParameters)?$", "method": "POST", "latency": latency})
    burst = our_burst(sim, work, n, "profile-burst")
    sim.clear_faults()
    sim.mark()
    summary = (f"A whole fire in the daemon (`reconciler run`, {n} new specs in one checkout, Jenkins answering each "
               f"POST in {latency * 1000:.0f} ms, concurrency {CONCURRENCY}): {burst.cpu_ms * 1000:.0f} µs of the "
               f"process's CPU a fire, {burst.user_ms * 1000:.0f} µs in user space and {burst.kernel_ms * 1000:.0f} µs "
               f"in the kernel, {burst.switches:.0f} context switches a fire. Beyond the firing step above, it reads "
               "and parses each spec, plans and records the decision, and runs all of it on threads that block on "
               "sockets, locks and the disk: each block hands the GIL to another thread and costs a context switch "
               "or two in the kernel.")
    write_summary(pieces, per_fire, per_fire_threads, CONCURRENCY, top, n, summary)
    ours = per_fire - pieces[POST]
    return [Row(f"where a fire's CPU goes: the daemon's firing step (Executor._fire) on one thread over {n} fires, "
                "shares from cProfile (bench/PROFILE.txt; information: on one thread each posting mark is an fsync "
                "of its own, which the workers share; the pieces row is the measure)",
                " · ".join(f"{piece}: {us:.0f} µs" for piece, us in pieces.items())
                + f" · all: {per_fire:.0f} µs; ours (all but the POST): {ours:.0f} µs; the step from {CONCURRENCY} "
                f"threads (group commit): {per_fire_threads:.0f} µs of CPU a fire; a whole fire in the daemon's burst: "
                f"{burst.cpu_ms * 1000:.0f} µs ({burst.user_ms * 1000:.0f} user, {burst.kernel_ms * 1000:.0f} kernel, "
                f"{burst.switches:.0f} context switches)", "", "", "", "")]


NOTES = """\
**Reading the burst rows.** Each burst is 1,000 new specs landing in one atomic rename, timed from
the rename to the simulator receiving the last POST. Jenkins' answer time is modelled by the
simulator's latency fault on build POSTs (an assumption, not a measurement of a real Jenkins): a
sequential loop waits out every round trip, the daemon keeps `concurrency` (32 by default) POSTs in
flight, one per worker thread of the server's pool, so 32 / latency is the most it could do. The
python-jenkins loop is timed over enough requests to take ~4 s. CPU per fire is the daemon's
process CPU over the burst divided by the fires: parsing the spec, recording the decision and the
posting mark durably, the POST, recording the queue item, two history lines and two log lines, and
what running them on threads costs (the user-space and kernel shares, and the context switches, are
given). The daemon runs at its default poll interval: it looks at a burst's runs once the burst is
posted, so the span of the fires holds fires only; following the runs to their outcomes is timed
after it, as its own row. The 0 ms row is information only: where Jenkins answers at once, every
client is bound by its own CPU on a machine it shares with the simulator.

**Reading CPU per fire.** The piece-by-piece row times each step of a fire alone with the daemon's
own code: on one thread, but for the steps the daemon's workers write through its group commit (the
posting mark, the queue item), which are written so, from 32 threads at once; each piece is the
median of three rounds. Every request goes through the session's
urllib3 pool directly (requests' preparation of each request cost more than the rest of a fire).
Creating a trigger's history file (its first fire only) costs what the file system makes it cost:
this machine's ext4 has no journal, and then passes over inodes freed in the last minutes to find a
free one (`recently_deleted`, in `perf`), so right after thousands of files were deleted (an earlier
run's scratch) a file costs hundreds of µs instead of ~30; the row says what it cost here and now.

**Reading the latency rows.** The watcher sleeps on inotify and passes a change on as soon as it is
read; what the daemon adds to the floor is reading and parsing the spec, recording the decision and
its posting mark (fsynced) and the history line before the POST. {missed}
"""


def render(rows: list[Row], quick: bool, reliability: str = "") -> str:
    head = (f"# Benchmarks\n\n{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC · {os.cpu_count()} CPUs · "
            f"Python {platform.python_version()} · {'quick' if quick else 'full'} run · `python -m bench"
            f"{' --quick' if quick else ''}`\n\nEvery figure is measured in this one run on this machine, against "
            "the bundled simulator in its own process on loopback.\n\n")
    lines = ["| benchmark | ours | peer | ratio | target | met |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r.benchmark} | {r.ours} | {r.peer} | {r.ratio} | {r.target} | {r.met} |" for r in rows]
    missed = [r.benchmark for r in rows if r.met.startswith(verdict(False))]
    why = ("Missed in this run: " + "; ".join(missed) + ".") if missed else "Every target is met in this run."
    return head + "\n".join(lines) + "\n\n" + (reliability + "\n" if reliability else "") + NOTES.format(missed=why)


BENCHMARKS = ("latency", "burst", "scale", "idle", "lateness", "validate", "writeback", "ha", "heavy", "lanes",
              "drain", "reliability", "profile", "hostile")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes; a few minutes")
    parser.add_argument("--no-write", action="store_true", help="do not overwrite bench/RESULTS.md")
    parser.add_argument("--only", choices=BENCHMARKS, action="append",
                        help="run just this benchmark (repeatable); implies --no-write, since RESULTS.md holds "
                             "whole runs, except for `reliability`, whose section of RESULTS.md is replaced alone")
    args = parser.parse_args()
    q = args.quick
    chosen = set(args.only or BENCHMARKS)
    work = scratch()
    sim = SimulatorProcess(work)
    rows: list[Row] = []
    try:
        if "latency" in chosen:
            rows += bench_latency(sim, work, 50 if q else 200)
        if "burst" in chosen:
            for n, latency in [(300, 0.02), (300, 0.1)] if q else [(1000, 0.02), (1000, 0.1), (1000, 0.0)]:
                rows += bench_burst(sim, work, n, 1 if q else 3, latency)[0]
            rows += bench_pieces(sim, work, 300 if q else 1000)
        if "scale" in chosen:
            rows += bench_scale(sim, work, 2000 if q else 10000, 3 if q else 5)
        if "idle" in chosen:
            rows += bench_idle(sim, work, 1000, 10 if q else 60)
        if "lateness" in chosen:
            rows += bench_lateness(sim, work, 200 if q else 1000)
        if "validate" in chosen:
            rows += bench_validate(work, 1000, 3 if q else 5)
        if "writeback" in chosen:
            rows += bench_writeback(sim, work, 300 if q else 1000, 2 if q else 4)
        if "ha" in chosen:
            rows += bench_ha(sim, work, 300 if q else 1000, 5 if q else 20, 2 if q else 4)
        if "heavy" in chosen:
            rows += bench_heavy(sim, work, 5, 20, 5)
            rows += bench_heavy(sim, work, 2000 if q else 10000, 20, 5)
        if "lanes" in chosen:
            rows += bench_lanes(sim, work, 1000 if q else 5000, 3)
        if "drain" in chosen:
            rows += bench_drain(sim, work, 50 if q else 100, 10)
        if "profile" in chosen:
            rows += bench_profile(sim, work, 300 if q else 1000)
        if "hostile" in chosen:
            rows += bench_hostile(sim, work, 900 if q else 3600, 2500 if q else 10000)
        section = ""
        if "reliability" in chosen:
            tallies = reliability.run_all(work, q)
            section = reliability.section(tallies, q, f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.only:
        print(render(rows, q) if rows else "", section, sep="\n")
        if section and not args.no_write:
            reliability.place(HERE / "RESULTS.md", section)
        return 0
    report = render(rows, q, section)
    print(report)
    if not args.no_write:
        (HERE / "RESULTS.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
