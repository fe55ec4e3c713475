"""Fixtures for real parts: a simulated Jenkins on loopback, real directories, real SQLite files."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reconciler import logs
from reconciler.config import HistoryRemote, Server
from reconciler.jenkins.client import Client
from reconciler.repo.history import History
from reconciler.repo.writeback import Writeback
from reconciler.service.daemon import Daemon, assemble
from reconciler.simulator import Simulator, from_mapping
from reconciler.store.sqlite import Store

from .postgres import Postgres, pg_bin

USER, TOKEN = "alice", "alice-api-token"

DEFAULT_JOBS: list[Any] = [  # concurrent, unlike a FreeStyle job's default: tests run several builds at once
    {"name": "plain", "duration": 0, "concurrent": True},
    {"name": "manual", "duration": None, "token": "deploy-job-token", "concurrent": True},
    {"name": "deploy", "duration": None, "token": "deploy-job-token", "concurrent": True,
     "parameters": [{"name": "ENV", "type": "choice", "choices": ["staging", "prod"]},
                    {"name": "VERSION", "default": "1.0"},
                    {"name": "DRY_RUN", "type": "boolean", "default": True},
                    {"name": "SECRET", "type": "password"}]},
    {"name": "team a/dëploy ü", "duration": 0, "parameters": ["TARGET"], "concurrent": True},
    {"name": "off", "disabled": True},
    {"name": "serial", "duration": None, "token": "deploy-job-token", "parameters": ["N"]},  # FreeStyle's default
    {"name": "pipe", "kind": "pipeline", "duration": None, "token": "deploy-job-token", "parameters": ["N"]},
]


def sim_config(**overrides: Any) -> Any:
    raw: dict[str, Any] = {
        "quiet_period": 0,
        "executors": 8,
        "users": {USER: {"token": TOKEN, "full_name": "Alice Example"},
                  "reader": {"token": "reader-token", "permissions": ["read"]}},
        "jobs": DEFAULT_JOBS,
    }
    raw.update(overrides)
    return from_mapping(raw)


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., Simulator]]:
    """Start simulators with settings overridden per test; all are stopped at the end."""
    started: list[Simulator] = []

    def make(**overrides: Any) -> Simulator:
        sim = Simulator(sim_config(**overrides)).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def simulator(make_simulator: Callable[..., Simulator]) -> Simulator:
    return make_simulator()


def posts(client: Client, job: str, parameters: tuple[tuple[str, str], ...] | None, cause: str | None,
          count: int) -> list[str]:
    """Build POSTs in a row, as the daemon makes them; their queue URLs."""
    return [client.trigger(job, parameters, cause).queue_url for _ in range(count)]


def post(client: Client, job: str, parameters: tuple[tuple[str, str], ...] | None, cause: str | None) -> str:
    return posts(client, job, parameters, cause, 1)[0]


def probe_address(log: Path) -> str:
    """`host:port` of the probes of the `reconciler run` whose output goes to `log`, once it says so."""
    def address() -> str | None:
        for line in log.read_text().splitlines():
            if '"probes_listening"' in line:
                return str(json.loads(line)["address"])
        return None

    return str(wait_for(address, what="the probes to listen"))


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll until true; the bound is generous, it only stops a broken test from hanging."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class LogBuffer(io.StringIO):
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines() if line.startswith("{")]

    def wait_for(self, event: str, count: int = 1) -> list[dict[str, Any]]:
        """The first `count` lines of an event, once written: a step records itself before it logs."""
        def written() -> list[dict[str, Any]]:
            found = [e for e in self.events() if e["event"] == event]
            return found if len(found) >= count else []

        return wait_for(written, what=f"{count} '{event}' log line(s)")


@dataclass
class Harness:
    """A triggers directory, a state file and a history directory, wired to a simulator."""

    tmp: Path
    sim: Simulator
    job_token: str | None = None
    concurrency: int = Server.concurrency
    rate: float | None = None
    max_queued: int | None = None
    retry_min: float = 0.02
    refused_min: float = 60.0
    """How long a refused run waits before its next attempt; tests that retry one make it short."""
    other_name: bool = False
    """Reach Jenkins as `localhost` while it calls itself 127.0.0.1 (its root URL), as a sidecar reaches
    a Service name while Jenkins answers with its public URL."""
    remote: HistoryRemote | None = None
    """Push history to this repository (the daemon's write-back), if set."""
    logs: LogBuffer = field(default_factory=LogBuffer)
    _running: list[Any] = field(default_factory=list)

    @property
    def triggers(self) -> Path:
        return self.tmp / "triggers"

    @property
    def state(self) -> Path:
        return self.tmp / "state.db"

    @property
    def history(self) -> Path:
        return self.tmp / "history" if self.remote is None else Path(self.remote.clone) / self.remote.path

    def arrive(self, name: str, text: str, author: str = "Alice") -> str:
        """Commit a spec, then check it out: the file appears with its commit, as git-sync's swap makes it
        appear under a running daemon (the triggers folder becomes a repository if it is not one); its sha."""
        git = ["git", "-C", str(self.triggers), "-c", f"user.name={author}", "-c", "user.email=a@example.com"]
        if not (self.triggers / ".git").exists():
            self.triggers.mkdir(parents=True, exist_ok=True)
            subprocess.run(["git", "init", "-q", "-b", "main", str(self.triggers)], check=True)
        path = f"{name}.yaml"
        blob = subprocess.run([*git, "hash-object", "-w", "--stdin"], input=text, capture_output=True, text=True,
                              check=True).stdout.strip()
        subprocess.run([*git, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}"], check=True)
        subprocess.run([*git, "commit", "-qm", f"add {name}"], check=True)
        subprocess.run([*git, "checkout", "--", path], check=True)
        return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()

    def write(self, name: str, text: str) -> None:
        """Write as git does: a temporary file renamed over the target."""
        path = self.triggers / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, path)

    @property
    def url(self) -> str:
        return self.sim.url.replace("127.0.0.1", "localhost") if self.other_name else self.sim.url

    def server(self) -> Server:
        return Server(name="default", url=self.url, user=USER, token=TOKEN, job_token=self.job_token,
                      concurrency=self.concurrency, rate=self.rate, max_queued=self.max_queued)

    def build(self, clock: Callable[[], float] = time.time, resync_interval: float = 60.0) -> Daemon:
        """A daemon wired to real parts, not yet running: tests may drive it step by step."""
        logs.configure("json", stream=self.logs)
        logs.add_secrets([TOKEN, *([self.job_token] if self.job_token else [])])
        self.triggers.mkdir(parents=True, exist_ok=True)
        daemon = assemble(self.triggers, self.state, self.history, {"default": self.server()}, clock=clock,
                          resync_interval=resync_interval, client_options={"backoff": 0.01, "max_backoff": 0.05},
                          poll_min=0.01, poll_max=0.05, retry_min=self.retry_min, retry_max=max(0.1, self.retry_min),
                          refused_min=self.refused_min, refused_max=self.refused_min * 4,
                          writeback=None if self.remote is None else Writeback(self.remote))
        self._running.append((daemon, None))
        return daemon

    def start(self, clock: Callable[[], float] = time.time, resync_interval: float = 60.0,
              wait: bool = True, before: Callable[[Daemon], None] | None = None) -> Daemon:
        """Build and run a daemon on a thread; `before` is done to it first (follow a config file)."""
        daemon = self.build(clock, resync_interval)
        if before is not None:
            before(daemon)
        thread = threading.Thread(target=daemon.run, args=(daemon.executor.stop,), daemon=True)
        thread.start()
        self._running[-1] = (daemon, thread)
        if wait:
            wait_for(daemon.ready.is_set, what="the daemon's first pass")
        return daemon

    def stop(self) -> None:
        while self._running:
            daemon, thread = self._running.pop()
            daemon.request_stop()
            if thread is not None:
                thread.join(timeout=10)
            daemon.close()

    def runs(self, trigger: str | None = None) -> list[Any]:
        store = Store(self.state)
        try:
            return store.runs(trigger)
        finally:
            store.close()

    def events(self, trigger: str) -> list[str]:
        return [e["event"] for e in History(self.history).read(trigger)]


@pytest.fixture
def harness(tmp_path: Path, simulator: Simulator) -> Iterator[Harness]:
    h = Harness(tmp_path, simulator)
    yield h
    h.stop()


@pytest.fixture
def make_harness(tmp_path: Path, make_simulator: Callable[..., Simulator]) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(job_token: str | None = None, **sim_overrides: Any) -> Harness:
        h = Harness(tmp_path, make_simulator(**sim_overrides), job_token=job_token)
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


@dataclass
class Proxy:
    """A real forwarding proxy (tinyproxy) on loopback, and its log of what it forwarded."""

    url: str
    log: Path

    def forwarded(self) -> list[str]:
        """The request lines it received: `POST http://…/build HTTP/1.1`, `CONNECT host:port HTTP/1.1`."""
        text = self.log.read_text() if self.log.exists() else ""
        return re.findall(r"Request \(file descriptor \d+\): (.*)", text)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    binary = shutil.which("tinyproxy")
    if binary is None:
        pytest.skip("tinyproxy is not installed (Debian package tinyproxy; .ci/run installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "tinyproxy.log"
    config = tmp_path / "tinyproxy.conf"
    config.write_text(f'Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile "{log}"\nLogLevel Connect\n'
                      "MaxClients 64\nAllow 127.0.0.1\n")
    proc = subprocess.Popen([binary, "-d", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, what="tinyproxy to listen")
    yield Proxy(f"http://127.0.0.1:{port}", log)
    proc.terminate()
    proc.wait(timeout=10)


# -- PostgreSQL: a throwaway cluster for the suite, a fresh database per test ---------------------------

@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    if pg_bin("initdb") is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run does)")
    pg = Postgres.start()
    yield pg
    pg.stop()


@pytest.fixture
def pg_dsn(postgres: Postgres, request: pytest.FixtureRequest) -> str:
    """A database of this test's own."""
    return postgres.database(re.sub(r"\W", "_", request.node.name)[:60].lower())
