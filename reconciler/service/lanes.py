"""One server's worker threads and the work waiting for them, in fair lanes, at the operator's pace.

A single FIFO per server put a one-shot change behind every tick of a busy minute (5,000 schedules
every minute: a change written just after the minute waited 16-80 s). Here the work waits in three
lanes, and a free worker takes from them in turn: `changes` (POSTs of one-shot specs), `ticks` (POSTs
of schedules) and `follow` (everything else: lookups of followed runs). However long one lane is, the
head of another is taken within a turn, so a one-shot is never queued behind a tick backlog.

POSTs (the first two lanes) also pass a gate, so that a burst lands in Jenkins at the pace the
operator set and no faster: `rate` (POSTs a second, evenly spaced), `max_queued` (the items in
Jenkins' queue, read from Jenkins at most once a second and counted up with each POST in between),
and Jenkins' own `Retry-After` (or a 429/503 without one: the client's backoff), after which the
whole server waits, not only the request that was told to. Lookups of followed runs are not held:
they are reads, and they are how runs finish.
"""

from __future__ import annotations

import collections
import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reconciler import logs

QUEUE_READ_EVERY = 1.0
"""Seconds a reading of Jenkins' queue length is trusted for (with our own POSTs counted on top)."""
IDLE_EXIT = 60.0
"""Seconds a worker waits for work before it ends; the next work starts one again."""


class Lane(enum.Enum):
    CHANGES = "changes"
    TICKS = "ticks"
    FOLLOW = "follow"


POSTS = (Lane.CHANGES, Lane.TICKS)
TURNS = (Lane.CHANGES, Lane.TICKS)
"""The POST lanes, taken in turn; follow-ups only when no POST may start (none waits, or the gate
holds them): a burst lands first, and its looks, due together, then share reads of each job's builds."""


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits for one server, as /readyz and the metrics show it."""

    changes: int
    ticks: int
    follow: int
    held: str | None
    """Why POSTs are held right now (the rate, Jenkins' queue, Retry-After), if they are."""

    @property
    def posts(self) -> int:
        return self.changes + self.ticks


Task = tuple[Callable[..., None], tuple[Any, ...]]


class Lanes:
    def __init__(self, name: str, workers: int, *, rate: float | None = None, max_queued: int | None = None,
                 queue_length: Callable[[], int] | None = None, hold_until: Callable[[], float] | None = None):
        self.name = name
        self.workers = max(1, workers)
        self.rate = rate
        self.max_queued = max_queued
        self._queue_length = queue_length
        self._hold_until = hold_until or (lambda: 0.0)
        self.log = logs.get(server=name)
        self._cv = threading.Condition()
        self._lanes: dict[Lane, collections.deque[Task]] = {lane: collections.deque() for lane in Lane}
        self._turn = 0
        self._threads: set[threading.Thread] = set()
        self._idle = 0
        self._closed = False
        self._next_post = 0.0
        """With a rate: the monotonic time before which no POST starts."""
        self._queued: int | None = None
        self._queued_at = -QUEUE_READ_EVERY
        self._reading = False
        self._since_read = 0
        """POSTs started since the reading under way began: Jenkins may not have counted them yet."""
        self._count = 0

    # -- entry points -----------------------------------------------------------------------
    def put(self, lane: Lane, step: Callable[..., None], *args: Any) -> None:
        """Raises RuntimeError once shut down, as a pool does."""
        with self._cv:
            if self._closed:
                raise RuntimeError("lanes shut down")
            self._lanes[lane].append((step, args))
            if self._idle:
                self._cv.notify()
            elif len(self._threads) < self.workers:
                self._count += 1
                thread = threading.Thread(target=self._work, name=f"jenkins-{self.name}_{self._count}", daemon=True)
                self._threads.add(thread)
                thread.start()

    def backlog(self) -> Backlog:
        with self._cv:
            held = self._held(time.monotonic())[1] if any(self._lanes[lane] for lane in POSTS) else None
            return Backlog(len(self._lanes[Lane.CHANGES]), len(self._lanes[Lane.TICKS]),
                           len(self._lanes[Lane.FOLLOW]), held)

    def shutdown(self, cancel: bool = True, timeout: float | None = None) -> None:
        """No new work; waiting work dropped (with `cancel`); steps under way end; workers joined."""
        with self._cv:
            self._closed = True
            if cancel:
                for queue in self._lanes.values():
                    queue.clear()
            self._cv.notify_all()
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    # -- the workers ------------------------------------------------------------------------
    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cv:
                task = None
                while task is None:
                    now = time.monotonic()
                    task, wait = self._take(now)
                    if task is not None:
                        break
                    if self._closed and not any(self._lanes.values()):
                        self._threads.discard(me)
                        return
                    self._idle += 1
                    woken = self._cv.wait(IDLE_EXIT if wait is None else wait)
                    self._idle -= 1
                    if not woken and wait is None and not any(self._lanes.values()):
                        self._threads.discard(me)  # idle for a minute: end; `put` starts another
                        return
            step, args = task
            try:
                step(*args)
            except Exception as e:  # steps guard themselves; a worker outlives what slips through
                self.log.exception("lane_step_crashed", exc_info=e)

    def _take(self, now: float) -> tuple[Task | None, float | None]:
        """The next task, lanes in turn; POSTs only when the gate is open. Else how long to wait (None:
        until work is put)."""
        wait: float | None = None
        lanes = TURNS
        for i in range(len(lanes) + 1):
            lane = lanes[(self._turn + i) % len(lanes)] if i < len(lanes) else Lane.FOLLOW
            queue = self._lanes[lane]
            if not queue:
                continue
            if lane in POSTS:
                if self._queue_stale(now):
                    self._reading, self._since_read = True, 0
                    return (self._read_queue, ()), None
                held, _ = self._held(now)
                if held > 0:
                    wait = held if wait is None else min(wait, held)
                    continue
                self._posted(now)
            self._turn = (self._turn + i + 1) % len(lanes)
            return queue.popleft(), None
        return None, wait

    # -- the gate for POSTs -----------------------------------------------------------------
    def _held(self, now: float) -> tuple[float, str | None]:
        """Seconds until the next POST may start, and why (0 and None: now)."""
        hold = self._hold_until() - now
        if hold > 0:
            return hold, f"Jenkins asked to wait (Retry-After or 429/503), {hold:.0f}s more"
        if self.max_queued is not None and self._queued is None and self._reading:
            return QUEUE_READ_EVERY, "reading Jenkins' queue (max_queued)"  # the reading's end wakes the workers
        if self.max_queued is not None and self._queued is not None and self._queued >= self.max_queued:
            return max(0.01, self._queued_at + QUEUE_READ_EVERY - now), \
                f"Jenkins' queue holds {self._queued} items (max_queued: {self.max_queued})"
        if self.rate is not None and self._next_post > now:
            return self._next_post - now, f"rate: {self.rate:g}/s"
        return 0.0, None

    def _posted(self, now: float) -> None:
        if self.rate is not None:
            self._next_post = max(self._next_post, now) + 1.0 / self.rate
        if self._queued is not None:
            self._queued += 1
        self._since_read += self._reading

    def _queue_stale(self, now: float) -> bool:
        return self.max_queued is not None and self._queue_length is not None and not self._reading and \
            now - self._queued_at >= QUEUE_READ_EVERY

    def _read_queue(self) -> None:
        """Jenkins' queue length, read on a worker (a request, outside the lock)."""
        assert self._queue_length is not None
        try:
            length: int | None = self._queue_length()
        except Exception as e:  # unknown: POSTs go on (at the rate, if any); said each time
            self.log.warning("queue_read_failed", error=str(e), note="max_queued not applied until it can be read")
            length = None
        with self._cv:  # POSTs started meanwhile are counted on top (a few too many hold a little longer)
            self._queued = None if length is None else length + self._since_read
            self._queued_at, self._reading = time.monotonic(), False
            self._cv.notify_all()
