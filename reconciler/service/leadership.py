"""Leadership among replicas sharing a PostgreSQL store: one holds a lease and fires, the others stand by.

The lease is one row (`leader`: holder, epoch, expires_at). A replica takes it when it has expired,
raising the epoch by one; the leader renews it every `lease / 3` seconds, each renewal setting
expires_at to the database's now() + `lease`. Expiry is judged by the database's clock alone, so the
replicas' clocks need not agree with it or with each other.

The leader judges for itself how long it may act: until the monotonic time at which it *sent* its
last successful renewal, plus `lease`, minus `margin`. That is never later than the expiry the
database wrote (the database read now() after the statement left), provided the clocks run at the
same rate (their drift over seconds is microseconds). Past that point the leader sends no POST (the
executor asks `may_act()` right before each one) and records nothing: every write of its store is
fenced on holder and epoch, under a share lock on the lease row, so it commits before a takeover or
not at all. A standby takes the lease only once expires_at has passed in the database, so by then the
old leader has stopped acting for at least `margin` (a POST it had already sent has that long to
reach Jenkins), and the new leader looks up every run left `posting`, as after a crash.

A lease row rather than a session advisory lock: a lock dies with its connection, which a network
blip, a PostgreSQL restart or pg_terminate_backend ends while the process holding it may not know for
a while, and keeps firing. A lease ends by time, which both sides can reason about.

A leader stalled inside a transaction would hold its share lock on the lease row and keep anyone
from taking it; the server ends any session idle in a transaction for `lease` seconds, which
releases it (pgstore.py). A leader stalled after its last check but before its POST left (paused, or
waiting for the GIL) sends that POST once it runs again: so a new leader waits two leases before it
looks up the runs the last one left `posting`, and finds such a POST instead of sending a second.
What is left is a stall longer than that, at that very point between a check and a send.

A leader that loses the lease (a renewal that finds another holder, or none succeeding before its
validity ends) gives up for good: `lost` is set, the daemon stops, and the process exits, to come
back (Kubernetes restarts it) as a standby with nothing in memory, as controller-runtime does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from reconciler import logs
from reconciler.metrics import Metrics

LEASE = 3.0
"""Seconds a lease lasts unrenewed: a dead leader is replaced within this, plus a standby's retry."""


class Leadership:
    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], holder: str, *, lease: float = LEASE,
                 metrics: Metrics | None = None, on_elected: Callable[[], None] | None = None,
                 on_lost: Callable[[], None] | None = None):
        self.connect = connect
        self.holder = holder
        self.lease = lease
        self.renew_every = lease / 3
        self.retry_every = lease / 6
        self.margin = lease / 3
        self.on_elected, self.on_lost = on_elected, on_lost
        self.epoch: int | None = None
        self.elected = threading.Event()
        self.lost = threading.Event()
        self.seen: tuple[str | None, int] = (None, 0)
        """The holder and epoch a standby last saw."""
        self.last_error: str | None = None
        self._valid_until = 0.0
        self._db: psycopg.Connection[Any] | None = None
        self.log = logs.get(holder=holder)
        self.takeovers = None if metrics is None else metrics.watch_leadership(
            lambda: 1.0 if self.may_act() else 0.0, lambda: float(self.epoch or self.seen[1]))

    @property
    def inherited_posting_delay(self) -> float:
        """How long a new leader waits before looking up a run the last one left `posting`: a leader
        stalled between its last check and its POST (a pause, a GIL wait) sends it once it runs again,
        and a lookup after that finds it instead of posting a second build."""
        return 2 * self.lease

    def may_act(self) -> bool:
        """Whether this process may POST or record now: it leads, and its lease is surely not expired."""
        return self.epoch is not None and not self.lost.is_set() and time.monotonic() < self._valid_until

    def fence(self) -> tuple[str, int] | None:
        """The lease every store write is checked against, or None when this process may not write."""
        return (self.holder, self.epoch) if self.epoch is not None and self.may_act() else None

    def notes(self) -> list[str]:
        if self.may_act():
            return [f"leading (epoch {self.epoch})"]
        holder, epoch = self.seen
        return [f"standing by: {holder or 'no one'} leads (epoch {epoch})"]

    def run(self, stop: threading.Event) -> None:
        """Take the lease when it is free, renew it while held; until stopped or lost."""
        while not stop.is_set() and not self.lost.is_set():
            self._turn()
            stop.wait(self.renew_every if self.epoch is not None else self.retry_every)
        if self._db is not None:
            self._db.close()

    def _turn(self) -> None:
        sent = time.monotonic()
        try:
            if self._db is None or self._db.closed or self._db.broken:
                self._db = self.connect()
            if self.epoch is None:
                self._take(sent)
            else:
                self._renew(sent)
            self.last_error = None
        except psycopg.Error as e:
            self.last_error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if self._db is not None:
                self._db.close()
            self._db = None
            if self.epoch is not None and time.monotonic() >= self._valid_until:
                self._lose(f"no renewal went through before the lease could expire: {self.last_error}")
            elif self.epoch is not None:
                self.log.warning("lease_renewal_failed", error=self.last_error, epoch=self.epoch)

    def _take(self, sent: float) -> None:
        assert self._db is not None
        row = self._db.execute(
            "UPDATE leader SET holder = %s, epoch = epoch + 1, expires_at = now() + make_interval(secs => %s) "
            "WHERE id = 1 AND expires_at <= now() RETURNING epoch, (SELECT holder FROM leader WHERE id = 1)",
            (self.holder, self.lease)).fetchone()
        if row is None:
            seen = self._db.execute("SELECT holder, epoch FROM leader WHERE id = 1").fetchone()
            self.seen = (seen[0], seen[1]) if seen else (None, 0)
            return
        self.epoch, previous = row[0], row[1]
        self._valid_until = sent + self.lease - self.margin
        self.seen = (self.holder, self.epoch)
        if self.takeovers is not None and previous is not None:
            self.takeovers.inc()
        self.log.info("leader_elected", epoch=self.epoch, previous=previous)
        self.elected.set()
        if self.on_elected is not None:
            self.on_elected()

    def _renew(self, sent: float) -> None:
        assert self._db is not None
        row = self._db.execute(
            "UPDATE leader SET expires_at = now() + make_interval(secs => %s) "
            "WHERE id = 1 AND holder = %s AND epoch = %s AND expires_at > now() RETURNING epoch",
            (self.lease, self.holder, self.epoch)).fetchone()
        if row is None:
            self._lose("the lease expired or another replica holds it")
        else:
            self._valid_until = sent + self.lease - self.margin

    def _lose(self, why: str) -> None:
        if self.lost.is_set():
            return
        self.lost.set()
        self.log.error("leadership_lost", epoch=self.epoch, reason=why)
        if self.on_lost is not None:
            self.on_lost()
