"""The loop: watch the triggers directory, resync on an interval, decide, hand fires to the executor."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import watchfiles

from . import logs
from .catalog import Catalog, Changes
from .config import Server
from .execute import Executor
from .history import History
from .plan import Action, decide
from .spec import Spec
from .state import Run, Store, new_run_id

WATCH_STEP_MS = 10
"""How long the watcher waits for a burst of events to settle: the floor of change → POST latency."""


def cause_text(spec: Spec, run_id: str) -> str:
    """The `cause` note carries the run id, so the build can be found again after a crash."""
    return f"{spec.cause} [reconciler run {run_id}]" if spec.cause else \
        f"reconciler: trigger {spec.name} [reconciler run {run_id}]"


def new_run(spec: Spec, at: float) -> Run:
    run_id = new_run_id()
    params = spec.parameters
    if spec.run_id_parameter:
        params = (*(params or ()), (spec.run_id_parameter, run_id))
    return Run(run_id=run_id, trigger=spec.name, fire_key=spec.revision, server=spec.server, job=spec.job,
               parameters=params, cause=cause_text(spec, run_id), tag_param=spec.run_id_parameter,
               status="decided", decided_at=at)


class Daemon:
    def __init__(self, catalog: Catalog, store: Store, history: History, servers: Mapping[str, Server],
                 executor: Executor, *, clock: Callable[[], float] = time.time, resync_interval: float = 60.0):
        self.catalog = catalog
        self.store = store
        self.history = history
        self.servers = servers
        self.executor = executor
        self.clock = clock
        self.resync_interval = resync_interval
        self.log = logs.get()
        self.fired: set[tuple[str, str]] = set()
        self._wake = threading.Event()
        self._paths: set[str] = set()
        self._paths_lock = threading.Lock()
        self.ready = threading.Event()
        self.passes = 0

    def bootstrap(self) -> None:
        """Rebuild a fresh store from history, then resume whatever an earlier process left open."""
        if self.store.is_empty():
            runs = list(self.history.runs())
            if runs:
                self.store.decide(runs)
                self.log.info("state_rebuilt", runs=len(runs), source=str(self.history.root))
        self.fired = self.store.fired()
        open_runs = self.store.open_runs()
        for run in open_runs:
            if run.server not in self.executor.clients:
                continue
            self.executor.resume(run)
        if open_runs:
            self.log.info("runs_resumed", count=len(open_runs))

    def reconcile(self, changes: Changes, *, full: bool = False) -> list[Run]:
        """Decide what the changed (or, when full, all) triggers need; record decisions; fire them."""
        for entry in changes.changed:
            if entry.error is not None:
                self.log.error("spec_invalid", trigger=entry.name, file=entry.path,
                               errors=str(entry.error).splitlines())
        for name in changes.removed:
            self.log.info("spec_removed", trigger=name)
        candidates = self.catalog.specs.values() if full else \
            [e.spec for e in changes.changed if e.spec is not None]
        now = self.clock()
        to_fire: list[Run] = []
        for spec in candidates:
            verdict = decide(spec, self.fired, self.servers)
            if verdict.action is Action.FIRE:
                to_fire.append(new_run(spec, now))
            elif verdict.action is Action.INVALID and not full:
                self.log.error("spec_invalid", trigger=spec.name, errors=[verdict.detail])
        inserted = self.store.decide(to_fire)
        for run in inserted:
            self.fired.add((run.trigger, run.fire_key))
            self.history.decided(run, now)
            self.log.info("fire_decided", trigger=run.trigger, run_id=run.run_id, job=run.job, revision=run.fire_key)
            self.executor.submit(run)
        return inserted

    def pass_once(self) -> list[Run]:
        fired = self.reconcile(self.catalog.scan(), full=True)
        self.passes += 1
        return fired

    def run(self, stop: threading.Event) -> None:
        self.bootstrap()
        fired = self.pass_once()
        self.log.info("pass_completed", specs=len(self.catalog.entries), fired=len(fired),
                      invalid=len(self.catalog.errors))
        watcher = threading.Thread(target=self._watch, args=(stop,), name="watcher", daemon=True)
        watcher.start()
        self.ready.set()
        next_resync = time.monotonic() + self.resync_interval
        while not stop.is_set():
            self._wake.wait(max(0.0, next_resync - time.monotonic()))
            if stop.is_set():
                break
            self._wake.clear()
            with self._paths_lock:
                paths, self._paths = list(self._paths), set()
            if paths:
                self.reconcile(self.catalog.refresh(paths))
            if time.monotonic() >= next_resync:
                started = time.perf_counter()
                fired = self.pass_once()
                self.log.debug("resync_completed", specs=len(self.catalog.entries), fired=len(fired),
                               seconds=round(time.perf_counter() - started, 4))
                next_resync = time.monotonic() + self.resync_interval
        watcher.join(timeout=2)

    def _watch(self, stop: threading.Event) -> None:
        root = Path(self.catalog.root)
        while not stop.is_set():
            if not root.is_dir():
                self.log.warning("triggers_missing", path=str(root))
                stop.wait(1.0)
                continue
            try:
                for batch in watchfiles.watch(root, watch_filter=None, debounce=500, step=WATCH_STEP_MS,
                                              stop_event=stop, rust_timeout=1000, yield_on_timeout=False,
                                              raise_interrupt=False):
                    with self._paths_lock:
                        self._paths.update(path for _, path in batch)
                    self._wake.set()
            except (OSError, RuntimeError) as e:  # the directory vanished under the watcher
                self.log.warning("watch_restarted", error=str(e))
                self._wake.set()
                stop.wait(0.5)

    def request_stop(self, *_: Any) -> None:
        """Safe from a signal handler: ends `run` promptly; open runs stay open in the store."""
        self.executor.stop.set()
        self._wake.set()
