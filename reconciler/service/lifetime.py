"""The daemon's life in one process: assembled, served, run until stopped, closed; and, when it loses
the lease, assembled again from nothing as a standby.

A leader that loses its lease (a pause past it, the database away too long) may not trust anything it
knew as leader: its runs in memory, its timers, its view of the store. Exiting and being restarted by
Kubernetes would drop all of that, at the price of a crash loop on every database blip; so the same
process does what a new one would: it closes the daemon whole and assembles a new one, which stands by
until it leads. Assembling again may find the database still away: it is tried again with a growing
pause until it answers or the process is told to stop. At start, by contrast, a store that cannot be
opened ends the process (exit 2), for the orchestrator to see.

Signals reach it through a pipe: Python runs a handler in the main thread between two bytecodes,
possibly while that thread holds the very lock (an Event's) the handler would take to stop the daemon,
which would never be released. So the handlers do nothing, the interpreter writes each signal's number
to a pipe (`signal.set_wakeup_fd`, in C), and a thread of the lifetime's own (`signals`, the one thread
not under a daemon's supervisor, as it outlives each daemon) reads it and stops or reloads.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

from reconciler import logs
from reconciler.core.errors import StateError
from reconciler.service.daemon import Daemon


class Lifetime:
    """Runs daemons one after another until stopped; safe to stop or reload from a signal handler."""

    def __init__(self, assemble: Callable[[bool], Daemon], serve: Callable[[Daemon], None]):
        self.assemble = assemble
        """Makes a daemon; told whether it is the process's first (a later one reads the config afresh)."""
        self.serve = serve
        """Starts the daemon's listeners (probes, page); they stop with the daemon's other threads."""
        self.terminated = threading.Event()
        self.current: Daemon | None = None
        self.log = logs.get()

    def stop(self) -> None:
        """Stop the daemon running now, and assemble no other."""
        self.terminated.set()
        if self.current is not None:
            self.current.request_stop()

    def reload_soon(self) -> None:
        """Read the operator's config now rather than at the next poll."""
        if self.current is not None and self.current.live is not None:
            self.current.live.reload_soon()

    def handle_signals(self) -> None:
        """SIGTERM and SIGINT stop, SIGHUP reloads; called once, from the main thread."""
        read, write = os.pipe()
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: None)
        threading.Thread(target=self._signals, args=(read,), name="signals", daemon=True).start()

    def _signals(self, read: int) -> None:
        while not self.terminated.is_set():
            for number in os.read(read, 64):
                if number == signal.SIGHUP:
                    self.reload_soon()
                elif number in (signal.SIGTERM, signal.SIGINT):
                    self.stop()

    def run(self, started: Callable[[Daemon], None]) -> None:
        """Until stopped: a daemon, run to its end; again, as a standby, if it ended by losing the lease.
        `started` is told of the first daemon once it serves."""
        first = True
        while not self.terminated.is_set():
            daemon = self._assemble(first)
            if daemon is None:
                return
            self.current = daemon
            if self.terminated.is_set():
                daemon.request_stop()
            try:
                self.serve(daemon)
                if first:
                    started(daemon)
                daemon.run(daemon.executor.stop)
            finally:
                close(daemon)
            first = False
            if daemon.leadership is None or not daemon.leadership.lost.is_set():
                return
            self.log.warning("standing_by_again", reason="leadership lost: starting over as a standby, nothing kept")

    def _assemble(self, first: bool) -> Daemon | None:
        delay = 1.0
        while True:
            try:
                return self.assemble(first)
            except StateError as e:
                if first:
                    raise
                self.log.error("state_store_unavailable", error=str(e), retry_in=delay)
                if self.terminated.wait(delay):
                    return None
                delay = min(delay * 2, 30.0)


def close(daemon: Daemon) -> None:
    """Stop the daemon's threads (the probes with them) and say what was left in flight."""
    in_flight = daemon.close()
    logs.get().info("daemon_stopped", in_flight=len(in_flight),
                    **({"runs": {r.run_id: f"{r.trigger}: {r.status}" for r in in_flight}} if in_flight else {}))
