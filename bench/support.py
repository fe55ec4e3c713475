"""Processes and numbers for the benchmarks: a simulator and a daemon as real processes, percentiles."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

USER, TOKEN = "bench", "bench-api-token"

LOOK_EACH, LOOK_MANY = 0.01, 0.1
"""Seconds between looks at the simulator's request log, waiting for one request or for many.
Arrival times come from the simulator's own clock, so looking more often buys no precision: it
only takes CPU from what is measured (in the scheduler benchmark the daemon shares this process,
and its GIL)."""

SIMULATOR_CONFIG = f"""
quiet_period: 0
executors: 64
left_item_ttl: 300
users:
  {USER}: {{token: {TOKEN}}}
jobs:  # concurrent, as a job meant to take bursts is configured; a FreeStyle job's default runs one at a time
  - name: bench
    concurrent: true
  - name: bench-p
    concurrent: true
    parameters: [N, SEQ]
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.002) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class SimulatorProcess:
    """`reconciler simulator` in its own process, so it never competes with what it measures for the GIL."""

    def __init__(self, workdir: Path):
        config = workdir / "simulator.yaml"
        config.write_text(SIMULATOR_CONFIG)
        self.proc = subprocess.Popen([sys.executable, "-m", "reconciler", "simulator", "--port", "0",
                                      "--config", str(config)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        self.session = requests.Session()
        self.seen = 0

    def new_requests(self) -> list[dict[str, Any]]:
        """Requests received since the last call (the simulator keeps them all; we page through)."""
        batch = self.session.get(f"{self.url}_sim/requests", params={"since": self.seen}, timeout=30).json()
        self.seen += len(batch)
        return batch

    def triggers_since_mark(self) -> list[dict[str, Any]]:
        return [r for r in self.new_requests() if r["method"] == "POST" and r["status"] == 201]

    def collect_triggers(self, n: int, timeout: float) -> list[dict[str, Any]]:
        """Wait until `n` build requests have arrived since the mark; returns them."""
        got: list[dict[str, Any]] = []
        wait_for(lambda: got.extend(self.triggers_since_mark()) or len(got) >= n, timeout, f"{n} POSTs", LOOK_MANY)
        return got

    def mark(self) -> None:
        self.new_requests()

    def add_fault(self, fault: dict[str, Any]) -> None:
        self.session.post(f"{self.url}_sim/faults", json=fault, timeout=30).raise_for_status()

    def clear_faults(self) -> None:
        self.session.delete(f"{self.url}_sim/faults", timeout=30).raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def env_for(sim: SimulatorProcess) -> dict[str, str]:
    return {**os.environ, "JENKINS_URL": sim.url, "JENKINS_USER": USER, "JENKINS_API_TOKEN": TOKEN}


@dataclass
class DaemonProcess:
    """`reconciler run` as users run it, with its log in a file."""

    sim: SimulatorProcess
    triggers: Path
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: tuple[str, ...] = ()
    """More arguments for `reconciler run` (a --config, say; a later --state wins)."""
    name: str = ""
    """The replica's name (POD_NAME), where several share a PostgreSQL store."""
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / "daemon.log"

    def start(self, timeout: float = 120) -> float:
        """Start, and return the seconds until the first pass completed (cold start)."""
        started = time.perf_counter()
        mark = self.log.stat().st_size if self.log.exists() else 0
        env = {**env_for(self.sim), **({"POD_NAME": self.name} if self.name else {})}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "run", "--triggers", str(self.triggers),
                 "--state", str(self.workdir / "state.db"), "--history", str(self.workdir / "history"),
                 "--resync-interval", "3600", "--poll-interval", "1", *self.extra],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        ready = (b'"pass_completed"', b'"standing_by"')  # a replica that does not lead stands by
        wait_for(lambda: any(w in self.log.read_bytes()[mark:] for w in ready), timeout, "the first pass", 0.005)
        return time.perf_counter() - started

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float]:
        """The process's CPU so far, in user space and in the kernel (seconds)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) / os.sysconf("SC_CLK_TCK"), int(fields[12]) / os.sysconf("SC_CLK_TCK")

    def switches(self) -> int:
        """Context switches so far of the threads alive now (voluntary: a thread waited for a lock, the
        GIL, a socket or the disk; involuntary: the scheduler took the core away)."""
        assert self.proc is not None
        total = 0
        for status in Path(f"/proc/{self.proc.pid}/task").glob("*/status"):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                total += sum(int(value) for key, _, value in (line.partition(":") for line in
                                                              status.read_text().splitlines())
                             if key.endswith("ctxt_switches"))
        return total

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def write_specs(directory: Path, count: int, prefix: str = "t", job: str = "bench-p") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        sub = directory / f"g{i // 100:03}"
        sub.mkdir(exist_ok=True)
        (sub / f"{prefix}{i:05}.yaml").write_text(f"job: {job}\nparameters: {{N: '{prefix}{i}'}}\n")


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="reconciler-bench-"))


def run_quiet(cmd: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started
