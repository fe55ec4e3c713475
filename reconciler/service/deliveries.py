"""Delivering what people should hear of: commit statuses on the spec's commit, messages to chats.

Every recorded step of a run (the history line, written after the store's step) enqueues what it
means in the outbox, a table of the state store: a commit status for each step of a one-shot
whose spec has a commit, and a message for the steps that change a trigger's streak (core/alerts).
Rows are keyed by run, channel and step, so enqueuing a step again changes nothing; a start
enqueues again the outcomes of the last day, so a kill -9 between a step and its enqueue loses
nothing. The trigger's streak moves in the same commit as its message is enqueued.

One worker thread (`deliveries`, under the supervisor, on the leader only) sends what is due:
the newest status of each run (older ones still waiting are superseded), then the messages in
order. A forge or chat that refuses connections, or accepts them and never answers, holds only
this thread, for at most its timeouts: enqueuing is a local write, and firing never waits for it.
An attempt that fails for a reason that passes (5xx, 429, GitHub's 403 rate limits, no answer)
is tried again after a growing pause, or the `Retry-After` asked for, across restarts, for up to
a day; one that cannot succeed (422: the forge does not know the commit) is given up with its
reason. A message may be sent twice only if the process is killed between the chat's answer and
the record of it (Apprise has no way to ask a chat what it received); a status sent twice is the
same status.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reconciler import logs
from reconciler.config import Deliveries as Settings
from reconciler.core.alerts import (
    OUTCOMES,
    Alert,
    CommitState,
    Streak,
    context_for,
    facts,
    next_alert,
    status_update,
    streak_of,
)
from reconciler.core.errors import ReconcilerError
from reconciler.core.runs import Run
from reconciler.forge.notify import Channel
from reconciler.forge.statuses import Answer, Forge, forge_for
from reconciler.metrics import Metrics
from reconciler.repo.history import History
from reconciler.store.base import Delivery, StateStore

GIVE_UP_AFTER = 86400.0
"""A delivery still failing a day after it was enqueued is given up: the news is stale."""
SWEEP = 86400.0
"""How far back a start enqueues outcomes again (idempotently)."""
KEEP = 7 * 86400.0
"""How long deliveries that are over stay in the outbox (for `status`, and to keep re-enqueues no-ops)."""


@dataclass(frozen=True)
class Targets:
    """Where deliveries go, as the config says now: replaced whole when it is read again, so a worker
    that read it before the swap sends with one consistent set (the old forge is left to the garbage
    collector, a delivery in flight finishing with it)."""

    settings: Settings
    forge: Forge | None = None
    channels: tuple[Channel, ...] = ()

    @property
    def provider(self) -> str:
        return self.settings.commit_status.provider if self.settings.commit_status else "none"


def targets_for(settings: Settings, forge_options: dict[str, Any] | None = None,
                previous: Targets | None = None) -> Targets:
    """The forge and channels `settings` name; raises ConfigError (Apprise does not know a URL) before
    anything is used. The previous forge is kept while its settings are the same."""
    channels = tuple(Channel(c) for c in settings.notify)
    if previous is not None and previous.settings.commit_status == settings.commit_status:
        forge = previous.forge
    else:
        forge = None if settings.commit_status is None else forge_for(settings.commit_status, **(forge_options or {}))
    return Targets(settings, forge, channels)


def check_channels(settings: Settings) -> None:
    """Raises ConfigError, naming the entry, for a `notify:` URL Apprise does not know: a config read
    again with one is not used (the last good one stays), as a bad one at start ends the process."""
    for channel in settings.notify:
        Channel(channel)


class Deliveries:
    def __init__(self, settings: Settings, store: StateStore, metrics: Metrics, *, stop: threading.Event,
                 clock: Callable[[], float] = time.time, retry_min: float = 5.0, retry_max: float = 3600.0,
                 give_up_after: float = GIVE_UP_AFTER, forge_options: dict[str, Any] | None = None):
        logs.add_secrets(settings.secrets)
        self.store = store
        self.stop = stop
        self.clock = clock
        self.retry_min, self.retry_max, self.give_up_after = retry_min, retry_max, give_up_after
        self.forge_options = forge_options or {}
        self.targets = targets_for(settings, self.forge_options)
        self.may_deliver: Callable[[], bool] | None = None
        """With replicas: whether this one leads (only the leader delivers)."""
        self.log = logs.get(component="deliveries")
        self._lock = threading.Lock()
        """One trigger's streak is read and moved by one step at a time."""
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.hold_until = 0.0
        """The forge asked for a pause (a rate limit): no status is sent before then, whichever run's."""
        self.oldest: float | None = None
        """When the oldest delivery still waiting was enqueued, as the worker last saw."""
        self.status_total, self.notify_total = metrics.watch_deliveries(self._oldest_age)

    @property
    def settings(self) -> Settings:
        return self.targets.settings

    def use(self, settings: Settings) -> None:
        """Send with these settings from now on (the config read again: a rotated token, a channel
        added). A new forge starts without the old one's rate-limit pause (GitHub's is per token)."""
        logs.add_secrets(settings.secrets)
        new = targets_for(settings, self.forge_options, self.targets)
        if new.forge is not self.targets.forge:
            self.hold_until = 0.0
        self.targets = new

    # -- enqueuing --------------------------------------------------------------------------------
    def observe(self, run: Run, event: str, at: float) -> None:
        """A step of `run` was recorded: enqueue what it means. Never raises: a delivery must not stop
        a fire (a step whose enqueue failed is enqueued again at the next start, if it was an outcome)."""
        try:
            self.enqueue(run, str(event), at)
        except Exception as e:  # the store refused (full disk, lapsed lease): said, and firing goes on
            self.log.error("delivery_enqueue_failed", trigger=run.trigger, run_id=run.run_id, event=str(event),
                           error=logs.redact(str(e)) or type(e).__name__)

    def enqueue(self, run: Run, event: str, at: float) -> None:
        rows: list[Delivery] = []
        now = self.clock()
        targets = self.targets
        status = targets.settings.commit_status
        if targets.forge is not None and status is not None:
            update = status_update(run, event, context_for(status.context, run.trigger))
            if update is not None:
                rows.append(Delivery(f"{run.run_id}:status:{update.step}", run.run_id, run.trigger, "status",
                                     update.state.value, {"sha": update.sha, "context": update.context,
                                                          "target_url": update.target_url,
                                                          "description": update.description}, now, now))
        if not targets.channels or event not in OUTCOMES:
            if rows:
                self.store.enqueue(rows)
                self._wake.set()
            return
        with self._lock:
            known = self.store.streak(run.trigger)
            streak = Streak() if known is None else Streak(*known)
            alert, after = next_alert(streak, run, event, at)
            if alert is not None:
                said = facts(run)
                rows += [Delivery(f"{run.run_id}:notify{i}:{alert.value}", run.run_id, run.trigger, f"notify{i}",
                                  alert.value, said, now, now)
                         for i, channel in enumerate(targets.channels) if channel.wants(alert, run.trigger)]
            self.store.enqueue(rows, None if after == streak else (run.trigger, after.failing, after.run_id, after.at))
        if rows:
            self._wake.set()

    def alert(self, run: Run, alert: Alert, reason: str) -> None:
        """A message that is no step of a run (a trigger paused after its failures), about the run that
        led to it, keyed by that run: said once."""
        now = self.clock()
        said = {**facts(run), "reason": reason}
        rows = [Delivery(f"{run.run_id}:notify{i}:{alert.value}", run.run_id, run.trigger, f"notify{i}", alert.value,
                         said, now, now)
                for i, channel in enumerate(self.targets.channels) if channel.wants(alert, run.trigger)]
        if rows:
            self.store.enqueue(rows)
            self._wake.set()

    def resume(self, fresh: bool) -> None:
        """At a start (as the leader): a fresh store, rebuilt from history, takes each trigger's streak
        from its newest outcome, announcing nothing again; then the last day's outcomes are enqueued
        again (rows already there stay as they are) and the worker starts."""
        if self.targets.channels and (fresh or not self.store.has_streaks()):
            for run in self.store.newest_outcomes():
                streak = streak_of(run)
                self.store.enqueue([], (run.trigger, streak.failing, streak.run_id, streak.at))
        for run in self.store.outcomes_since(self.clock() - SWEEP):
            self.observe(run, run.status.value, run.finished_at or run.decided_at)

    def start(self, start_thread: Callable[..., threading.Thread]) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = start_thread("deliveries", self.run)

    # -- delivering -------------------------------------------------------------------------------
    def run(self) -> None:
        """The worker: send what is due, sleep until the next is (or something is enqueued)."""
        try:
            self._work()
        except Exception:
            if not self.stop.is_set():  # at a stop, the store may close under a send that outlasted it
                raise

    def flush(self, timeout: float) -> bool:
        """Wait (at most `timeout`) until nothing is due: `run --once` leaves after its news is out."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while time.monotonic() < deadline and not self.stop.is_set():
            if not self.store.outbox_due(self.clock(), limit=1):
                return True
            time.sleep(0.05)
        return False

    def _work(self) -> None:
        pruned = 0.0
        while not self.stop.is_set():
            if self.may_deliver is not None and not self.may_deliver():
                self._wake.wait(1.0)
                continue
            now = self.clock()
            if now - pruned > 3600:
                self.store.prune_outbox(now - KEEP)
                pruned = now
            self._wake.clear()
            due = self.store.outbox_due(now)
            sent = 0
            for delivery in due:
                if self.stop.is_set():
                    return
                if delivery.kind == "status" and self.clock() < self.hold_until:
                    continue  # rate limited: the forge's whole API waits, not just this status
                self.deliver(delivery)
                sent += 1
            self.oldest = self.store.outbox_oldest()
            if len(due) < 50 or not sent:
                self._wake.wait(self._next_wait())

    def _next_wait(self) -> float:
        rows = self.store.outbox_due(float("inf"), limit=1)
        due = 30.0 if not rows else rows[0].due_at - self.clock()
        if self.hold_until > self.clock():
            due = max(due, min(self.hold_until - self.clock(), 30.0))
        return min(30.0, max(0.05, due))

    def deliver(self, delivery: Delivery) -> None:
        log = self.log.bind(trigger=delivery.trigger, run_id=delivery.run_id, kind=delivery.kind,
                            state=delivery.state)
        try:
            answer = self._send(delivery)
        except (ReconcilerError, OSError, ValueError) as e:
            answer = Answer(False, logs.redact(str(e)), 0.0)
        now = self.clock()
        if answer.delivered:
            self.store.settle(delivery, outcome="delivered", done_at=now, attempts=delivery.attempts + 1,
                              last_error=None)
            self._count(delivery, "delivered")
            log.info("delivery_sent", attempts=delivery.attempts + 1)
            return
        attempts = delivery.attempts + 1
        if answer.retry_in is None or now - delivery.created_at >= self.give_up_after:
            reason = answer.error if answer.retry_in is None else f"still failing after a day: {answer.error}"
            self.store.settle(delivery, outcome="given_up", done_at=now, attempts=attempts, last_error=reason)
            self._count(delivery, "given_up")
            log.error("delivery_given_up", reason=reason, attempts=attempts)
            return
        delay = max(answer.retry_in, min(self.retry_min * 2 ** (attempts - 1), self.retry_max))
        if delivery.kind == "status" and answer.status in (403, 429):
            self.hold_until = now + delay
        self.store.settle(delivery, due_at=now + delay, attempts=attempts, last_error=answer.error)
        self._count(delivery, "retried")
        log.warning("delivery_retrying", error=answer.error, attempts=attempts, retry_in=round(delay, 1))

    def _send(self, delivery: Delivery) -> Answer:
        """One attempt, with the targets as they are now. A channel is known by its place in `notify:`:
        after a reload the channel in that place must still want the message, or it is given up."""
        payload, targets = delivery.payload, self.targets
        if delivery.kind == "status":
            if targets.forge is None:
                return Answer(False, "commit_status is no longer configured", None)
            return targets.forge.post(payload["sha"], payload["context"], CommitState(delivery.state),
                                      payload.get("target_url"), payload["description"])
        index = int(delivery.kind.removeprefix("notify"))
        if index >= len(targets.channels):
            return Answer(False, f"{delivery.kind} is no longer configured", None)
        channel, alert = targets.channels[index], Alert(delivery.state)
        if not channel.wants(alert, delivery.trigger):
            return Answer(False, f"{delivery.kind} no longer asks for this message (the config changed)", None)
        return channel.send(alert, payload)

    def _count(self, delivery: Delivery, outcome: str) -> None:
        if delivery.kind == "status":
            self.status_total.labels(self.targets.provider, outcome).inc()
        else:
            self.notify_total.labels(outcome).inc()

    def _oldest_age(self) -> float:
        return 0.0 if self.oldest is None else max(0.0, self.clock() - self.oldest)

    def close(self) -> None:
        self._wake.set()
        if self.targets.forge is not None:
            self.targets.forge.close()


class Observed(History):
    """The history, telling deliveries of each step it records (after the store has it)."""

    def __init__(self, root: Any, writeback: Any, deliveries: Deliveries):
        super().__init__(root, writeback)
        self.deliveries = deliveries

    def append(self, run: Run, event: str, at: float, **fields: Any) -> None:
        super().append(run, event, at, **fields)
        self.deliveries.observe(run, event, at)
