"""Where the CPU of a fire goes: the daemon's own firing step (`Executor._fire`: the `decided` history
line, the posting mark, the POST, the queue item, the `queued` line, the log lines) run for each of
`n` decided runs on one thread, first plain (its CPU a fire), then under cProfile timed by the thread's
CPU clock (the shares: waiting for Jenkins or for an fsync is no CPU). On one thread every posting
mark is a commit and an fsync of its own; the daemon's workers share them (the group commit), so the
step is also run plain from CONCURRENCY threads, its CPU the process's.

cProfile slows Python code more than C code, so the shares are of the profiled run, and the
microseconds are those shares of the plain run's CPU: an estimate, not a measurement of each piece
(bench_pieces in __main__.py measures pieces alone). Writes bench/PROFILE.txt: the summary, and the
functions that cost the most, by their own time.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.support import TOKEN, USER, SimulatorProcess, write_specs
from reconciler import logs
from reconciler.config import Server
from reconciler.core.runs import Run, new_run
from reconciler.jenkins.client import Client
from reconciler.repo.catalog import Catalog
from reconciler.repo.history import History
from reconciler.service.execute import Executor, _Fire
from reconciler.store.open import open_store

HERE = Path(__file__).parent
POST = "the POST (through the session's urllib3 pool)"

PIECES: dict[str, tuple[tuple[str, str], ...]] = {
    POST: (("reconciler/jenkins/client.py", "trigger"),),
    "the posting mark and the queue item (store)": (("reconciler/service/execute.py", "write"),),
    "history lines (`decided`, `queued`)": (("reconciler/repo/history.py", "append"),),
    "log lines": (("structlog/_base.py", "_proxy_to_logger"), ("reconciler/logs.py", "get")),
    "the job's next build number (read once, reused)": (("reconciler/service/execute.py", "_next_build"),),
}
"""Each piece: the functions (file, name) whose time, callees included, is its own."""


def _runs(work: Path, n: int, name: str) -> list[Run]:
    triggers = work / name
    write_specs(triggers, n, prefix=name[:1])
    catalog = Catalog(str(triggers))
    catalog.scan()
    now = time.time()
    return [new_run(e.spec, now) for e in catalog.entries.values() if e.spec]


def _executor(sim: SimulatorProcess, work: Path, name: str) -> Executor:
    client = Client(Server(name="default", url=sim.url, user=USER, token=TOKEN))
    return Executor(open_store(work / f"{name}.db"), History(work / f"{name}-history"), {"default": client},
                    stop=threading.Event(), poll_min=3600, poll_max=3600)  # no follow-ups during the loop


def _fire_all(executor: Executor, runs: list[Run]) -> None:
    executor.store.decide(runs)
    for run in runs:
        executor._fire(run, _Fire(run, False, True, 1.0))  # the step as a worker runs it, on this thread


def _fire_all_threads(executor: Executor, runs: list[Run], threads: int) -> float:
    """The firing step of each run, `threads` threads firing their share at once as the server's workers
    do; the process's CPU a fire (its other threads idle: the executor's timer sleeps)."""
    executor.store.decide(runs)

    def fire(i: int) -> None:
        for run in runs[i::threads]:
            executor._fire(run, _Fire(run, False, True, 1.0))

    workers = [threading.Thread(target=fire, args=(i,)) for i in range(threads)]
    started = time.process_time()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return (time.process_time() - started) / len(runs) * 1e6


def _cumulative(stats: pstats.Stats, functions: tuple[tuple[str, str], ...]) -> float:
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    return sum(entry[3] for (path, _, name), entry in table.items()
               if any(path.endswith(suffix) and name == function for suffix, function in functions))


def profile_fires(sim: SimulatorProcess, work: Path, n: int,
                  threads: int) -> tuple[dict[str, float], float, float, str]:
    """(µs a fire by piece, µs a fire in all, µs a fire from `threads` threads, the top functions as text)."""
    logs.configure("json", stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    plain = _executor(sim, work, "profile-plain")
    runs = _runs(work, n, "plain")
    started = time.thread_time()  # this thread's CPU: the firing step's, not the simulator's wait
    _fire_all(plain, runs)
    per_fire = (time.thread_time() - started) / n * 1e6
    together = _executor(sim, work, "profile-threads")
    per_fire_threads = _fire_all_threads(together, _runs(work, n, "threads"), threads)
    batches = together._commits.steps / max(1, together._commits.batches)
    together.shutdown()
    together.store.close()

    profiled = _executor(sim, work, "profile-profiled")
    runs = _runs(work, n, "profiled")
    profiler = cProfile.Profile(time.thread_time)  # CPU, not the wall clock cProfile uses by default
    profiler.enable()
    _fire_all(profiled, runs)
    profiler.disable()
    for e in (plain, profiled):
        e.shutdown()
        e.store.close()
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    shares = {piece: _cumulative(stats, names) / total for piece, names in PIECES.items()}
    shares["the rest (the executor's own steps, metrics, dataclasses)"] = max(0.0, 1 - sum(shares.values()))
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    top = f"(from {threads} threads: {batches:.1f} steps a commit)\n" + out.getvalue()
    return {piece: share * per_fire for piece, share in shares.items()}, per_fire, per_fire_threads, top


def write_summary(pieces: dict[str, float], per_fire: float, per_fire_threads: float, threads: int, top: str, n: int,
                  burst: str = "",
                  now: Callable[[], str] = lambda: time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())) -> str:
    steps, _, top = top.partition("\n")
    lines = [f"# Where a fire's CPU goes ({now()}, `python -m bench --only profile`)", "",
             f"Executor._fire for {n} decided runs on one thread against the simulator: {per_fire:.0f} µs of CPU a "
             "fire (plain run); by piece, as cProfile shares of it:", ""]
    lines += [f"- {piece}: {us:.0f} µs ({us / per_fire:.0%})" for piece, us in pieces.items()]
    ours = per_fire - pieces[POST]
    lines += ["", f"Ours (all but the POST): {ours:.0f} µs.", "",
              f"The same step from {threads} threads at once, as the server's workers run it, posting marks and "
              f"queue items through the group commit {steps}: {per_fire_threads:.0f} µs of the process's CPU a fire.",
              "", *([burst, ""] if burst else []),
              "The functions that cost the most by their own time (cProfile, profiled run):", "", "```",
              "\n".join(line for line in top.splitlines() if line.strip())[:6000], "```", ""]
    text = "\n".join(lines)
    (HERE / "PROFILE.txt").write_text(text)
    return text
