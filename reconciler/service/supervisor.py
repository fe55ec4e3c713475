"""Every long-lived thread of the daemon is started here, kept alive here, and stopped here.

One concurrency model: operating-system threads that block on I/O (a socket, inotify, a condition),
coordinated by events and conditions; no event loop. The threads, in the order they start:

- `watcher`: blocks on inotify and hands changed paths to the loop (repo/watch.py).
- `leadership`: with replicas on PostgreSQL, renews or takes the lease (service/leadership.py).
- `timers`: the executor's heap of waiting steps (a retry's backoff, the next look at a build),
  each handed to its server's pool when due (service/execute.py).
- `jenkins-<server>`: each server's pool of `concurrency` worker threads, one HTTP step at a time;
  the executor owns the pools and the supervisor stops the executor.
- `history-git`: commits and pushes history (repo/writeback.py).
- `probes`: /healthz, /readyz, /metrics and the page (service/probes.py).
- the loop itself, on the main thread (service/daemon.py).

A thread's body is run again after it fails, with a growing pause; one turn of a loop is guarded
by `guard`. Either way an error caused by input or the world (a file, a history line, Jenkins' or
the database's answer, a client of the probe port: `ReconcilerError`, `OSError`) is logged as one
line with its reason; anything else, a bug, once with its traceback. Only a stop ends a thread, and
only a stop or the loss of leadership (which restarts a replica as a standby, by design) ends the
process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from reconciler import logs
from reconciler.core.errors import ReconcilerError

RESTART_MIN = 1.0
RESTART_MAX = 60.0
"""The pause before a failed thread's body runs again: doubling from the first to the second."""


def expected(error: BaseException) -> bool:
    """An error that input or the world causes, reported in one line, never as a traceback."""
    return isinstance(error, ReconcilerError | OSError)


class Supervisor:
    def __init__(self, stop: threading.Event):
        self.stop = stop
        self.log = logs.get()
        self._threads: list[threading.Thread] = []
        self._stoppers: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def start(self, name: str, body: Callable[..., Any], *args: Any, restart: bool = True) -> threading.Thread:
        """Run `body(*args)` on a thread of its own, named `name`; if it raises and the process is not
        stopping, log it and run it again after a pause (with `restart`)."""
        thread = threading.Thread(target=self._keep, args=(name, body, args, restart), name=name, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()
        return thread

    def on_stop(self, stopper: Callable[[], None]) -> None:
        """Something to stop with the rest (a server, a pool), in the reverse of the order given."""
        with self._lock:
            self._stoppers.append(stopper)

    def guard(self, what: str, turn: Callable[..., Any], *args: Any) -> BaseException | None:
        """One turn of a loop: the error it raised, logged (see `report`), or None. The loop goes on."""
        try:
            turn(*args)
        except Exception as e:
            self.report(what, e)
            return e
        return None

    def report(self, what: str, error: BaseException) -> None:
        """`<what>_failed` with the reason in one line, or `<what>_crashed` with the traceback."""
        if expected(error):
            self.log.error(f"{what}_failed", error=logs.redact(str(error)) or type(error).__name__)
        else:
            self.log.error(f"{what}_crashed", exc_info=error)

    def alive(self, name: str) -> bool:
        with self._lock:
            return any(t.name == name and t.is_alive() for t in self._threads)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop everything: the stop event, then each stopper (last given first), then wait for threads."""
        self.stop.set()
        with self._lock:
            stoppers, threads = list(reversed(self._stoppers)), list(self._threads)
            self._stoppers.clear()
        for stopper in stoppers:
            try:
                stopper()
            except Exception as e:  # one stopper's failure must not keep the others from running
                self.report("shutdown", e)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def _keep(self, name: str, body: Callable[..., Any], args: tuple[Any, ...], restart: bool) -> None:
        pause = RESTART_MIN
        while not self.stop.is_set():
            error = self.guard(name, body, *args)
            if error is None or not restart:
                return
            self.log.warning("thread_restarting", thread=name, in_seconds=pause)
            if self.stop.wait(pause):
                return
            pause = min(pause * 2, RESTART_MAX)
