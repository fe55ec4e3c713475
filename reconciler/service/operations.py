"""The daemon's side of operating without a commit: `trigger`, `pause`, `resume`, `backfill`, and
`pause_after_failures`.

The commands write to the state store; each turn of the daemon's loop (and `run --once`) takes up what
they wrote: it writes the history line of each act (the daemon is the one writer of history, wherever
the command ran), lifts pauses whose `--until` passed, pauses triggers after their failures, and decides
the requested runs that may go now. Every question here is one small query: the turn runs every second.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from reconciler.core import schedule as cron
from reconciler.core.alerts import Alert
from reconciler.core.freeze import frozen
from reconciler.core.operations import ENDED, Pause, Request, failure_streak, holding, iso, take_up
from reconciler.core.runs import REQUESTED_KEYS, Run, RunStatus
from reconciler.repo.catalog import Catalog, Changes
from reconciler.store.base import Operation

if TYPE_CHECKING:
    from reconciler.config import Policy
    from reconciler.repo.history import History
    from reconciler.service.deliveries import Deliveries
    from reconciler.service.execute import Executor
    from reconciler.store.base import StateStore

POLL = 1.0
"""How often the loop looks for operators' acts: the running daemon takes them up within this (and a turn)."""
SYSTEM = "reconciler"
"""Who pauses a trigger after its failures."""


def entry(trigger: str, event: str, at: float, **fields: Any) -> Operation:
    return Operation(id=uuid.uuid4().hex, trigger=trigger, event=event, at=at,
                     fields={k: v for k, v in fields.items() if v is not None})


class Loop(Protocol):
    """What taking up operators' acts asks of the daemon's loop (service/daemon.py's Daemon answers it):
    its records, its catalog and schedules, and a way to decide what a request lets fire."""

    catalog: Catalog
    store: StateStore
    history: History
    executor: Executor
    deliveries: Deliveries | None
    policy: Policy
    cursors: dict[str, datetime]
    next_due: dict[str, datetime]
    log: Any

    def clock(self) -> float: ...
    def wake(self) -> None: ...
    def reconcile(self, changes: Changes, *, full: bool = False) -> list[Run]: ...


class Operations:
    def __init__(self, daemon: Loop):
        self.daemon = daemon
        self.paused: dict[str, Pause] = {}
        """The pauses in force, as of the last turn."""
        self._ended: set[str] = set()
        self._ended_lock = threading.Lock()

    def holds(self, trigger: str) -> bool:
        pause = self.paused.get(trigger)
        return pause is not None and pause.holds(self.daemon.clock())

    def ended(self, run: Run) -> None:
        """The executor's news (from its threads): a run ended; its trigger's failures are counted next turn."""
        spec = self.daemon.catalog.specs.get(run.trigger)
        if spec is not None and spec.pause_after_failures:
            with self._ended_lock:
                self._ended.add(run.trigger)
            self.daemon.wake()

    # -- a fresh store ---------------------------------------------------------------------------
    def rebuilt(self, runs: list[Run]) -> tuple[list[Run], set[str]]:
        """Runs rebuilt from history, those an operator asked for judged as evidence: one never posted, or
        refused, is abandoned; one that may have been posted is only looked up (its ids returned), in the
        job its trigger's current spec names. Pauses that history ends with are put back: they can only
        hold triggers back."""
        now = self.daemon.clock()
        specs = Catalog.scanned(self.daemon.catalog.root).specs if any(
            run.fire_key.startswith(REQUESTED_KEYS) for run in runs) else {}
        judged, look_up = [], set()
        for run in runs:
            if run.fire_key.startswith(REQUESTED_KEYS) and (run.status in (RunStatus.REQUESTED, RunStatus.REFUSED)
                                                            or run.is_open):
                spec = specs.get(run.trigger)
                if run.is_open and spec is not None:
                    run = replace(run, status=RunStatus.POSTING, server=spec.server, job=spec.job)
                    look_up.add(run.run_id)
                else:
                    run = replace(run, status=RunStatus.ABANDONED, finished_at=now, retry_at=None,
                                  last_error="rebuilt from history, never accepted by Jenkins, or no spec names "
                                             "its trigger: not posted (history is evidence, never an instruction); "
                                             "ask again with `reconciler trigger`")
                    self.daemon.history.append(run, RunStatus.ABANDONED, now, reason=run.last_error)
            judged.append(run)
        for trigger, line in self.daemon.history.pauses():
            note, by = line.get("note"), line.get("by")
            pause = Pause(trigger=trigger, by=str(by or SYSTEM)[:200], os_user=str(line.get("os_user") or "")[:200],
                          note=None if note is None else str(note)[:500], since=now,
                          reason="(read back from history)")
            self.daemon.store.pause(pause, entry(trigger, "paused", now, by=pause.by, os_user=pause.os_user,
                                                 note=pause.note, reason=pause.reason))
        return judged, look_up

    # -- each turn -------------------------------------------------------------------------------
    def turn(self, ended: Iterable[str] = ()) -> list[Run]:
        """Take up what operators asked since the last turn; the runs decided. `ended`: triggers whose runs
        ended, beside those the executor told of."""
        self.refresh(ended)
        return self.take_up()

    def refresh(self, ended: Iterable[str] = ()) -> None:
        """Pauses as the store has them now (lifting those whose `--until` passed, adding those failures
        call for), the history lines of operators' acts, and what a resume released."""
        with self._ended_lock:
            self._ended.update(ended)
        store, now = self.daemon.store, self.daemon.clock()
        pauses = store.pauses()
        for pause in pauses:
            if pause.expired(now):
                store.resume(pause.trigger, now, entry(pause.trigger, "resumed", now, by=SYSTEM,
                                                       reason=f"--until {iso(pause.until or now)} passed"))
        pauses = self._pause_after_failures(store.pauses() if any(p.expired(now) for p in pauses) else pauses, now)
        self._record()
        released = set(self.paused) - set(holding(pauses, now))
        self.paused = holding(pauses, now)
        if released:
            self._release(released)

    def _record(self) -> None:
        """Write the history line of each act not yet written, then mark it written."""
        entries = self.daemon.store.unrecorded()
        for op in entries:
            self.daemon.history.record(op.trigger, op.event, op.at, **op.fields)
            self.daemon.log.info(f"trigger_{op.event}", trigger=op.trigger,
                                 **{k: v for k, v in op.fields.items() if k in ("by", "note", "reason", "run_id")})
        if entries:
            self.daemon.store.recorded([op.id for op in entries])

    def _pause_after_failures(self, pauses: list[Pause], now: float) -> list[Pause]:
        with self._ended_lock:
            ended, self._ended = self._ended, set()
        held = holding(pauses, now)
        since = {p.trigger: p.resumed_at for p in pauses if p.resumed_at is not None}
        paused = False
        for name in sorted(ended - set(held)):
            spec = self.daemon.catalog.specs.get(name)
            if spec is None or not spec.pause_after_failures:
                continue
            limit = spec.pause_after_failures
            recent = self.daemon.store.runs(name, limit=limit * 4 + 100)
            streak = failure_streak(recent, since.get(name))
            last = next((run for run in recent if run.status in ENDED), None)
            if streak < limit:
                continue
            reason = f"after {limit} failures"
            pause = Pause(trigger=name, by=SYSTEM, os_user=SYSTEM, note=None, since=now, reason=reason)
            self.daemon.store.pause(pause, entry(name, "paused", now, by=SYSTEM, reason=reason, failures=streak))
            self.daemon.log.warning("trigger_paused_after_failures", trigger=name, failures=streak,
                                    advice=f"`reconciler resume {name}` lifts it")
            if self.daemon.deliveries is not None and last is not None:
                self.daemon.deliveries.alert(last, Alert.PAUSED, f"{reason}: `reconciler resume {name}` lifts it")
            paused = True
        return self.daemon.store.pauses() if paused else pauses

    def _release(self, names: Iterable[str]) -> None:
        """Triggers resumed: their one-shots that became due meanwhile are decided now."""
        catalog = self.daemon.catalog
        entries = [catalog.entries[n] for n in names if n in catalog.entries and catalog.entries[n].spec]
        if entries:
            self.daemon.reconcile(Changes(changed=entries))

    def take_up(self) -> list[Run]:
        """Decide the requested runs that may go: not while their trigger is paused, suspended or frozen,
        one at a time for a trigger that allows one run at a time, never for a spec that is gone."""
        daemon, now = self.daemon, self.daemon.clock()
        waiting = daemon.store.requested()
        if not waiting:
            return []
        specs = daemon.catalog.specs
        gone = [run for run, _ in waiting if run.trigger not in specs or
                (run.fire_key.startswith("+") and specs[run.trigger].schedule is None)]
        if gone:
            for run in gone:
                daemon.executor.supersede(run, "not posted: the spec was removed, or is no longer scheduled, "
                                               "since it was requested")
        held = {run.trigger for run, _ in waiting if run.trigger in specs and
                (specs[run.trigger].suspend or run.server not in daemon.executor.clients or
                 run.trigger in daemon.unconfigured)}  # unconfigured: its server, or the policy refuses it
        dropped = {run.run_id for run in gone}
        candidates = [run for run, asked in waiting if run.run_id not in dropped and run.trigger not in held and
                      not self._frozen(run, asked, now)]
        serial = {name: specs[name].concurrency != "allow" for name in {r.trigger for r in candidates}}
        chosen = take_up(candidates, self.paused, daemon.executor.active(), serial, now)
        chosen = [run for run in chosen if self._tick_still_free(run)]
        decided = daemon.store.update_many([(run, {"status": RunStatus.DECIDED, "decided_at": now})
                                            for run in chosen], durable=True)
        for run in decided:
            daemon.log.info("fire_decided", trigger=run.trigger, run_id=run.run_id, job=run.job, requested=run.fire_key)
        daemon.executor.submit(decided)
        return decided

    def _frozen(self, run: Run, asked: Request | None, now: float) -> bool:
        """A freeze window of the operator's policy holds requested runs and backfills until it ends, but a
        request made with `--override-freeze` (on the command line: a run rebuilt from history is never
        taken up here)."""
        if asked is not None and asked.override_freeze:
            return False
        return frozen(self.daemon.policy.windows, run.trigger, datetime.fromtimestamp(now, UTC)) is not None

    def _tick_still_free(self, run: Run) -> bool:
        """A backfilled tick the schedule fired after the backfill was asked for is not fired twice; the
        schedule's cursor moves past a backfilled tick it has not reached yet, so it is not fired later."""
        if not run.fire_key.startswith("+@"):
            return True
        own = run.fire_key[1:]
        status = self.daemon.store.statuses(run.trigger, [own]).get(own)
        if status is not None and status not in (RunStatus.MISSED, RunStatus.SKIPPED):
            self.daemon.executor.supersede(run, f"not posted: the schedule fired that tick itself ({status})")
            return False
        tick = cron.tick_of_key(own)
        cursor = self.daemon.cursors.get(run.trigger)
        if tick is not None and cursor is not None and tick > cursor:
            self.daemon.store.decide([], cursors={run.trigger: tick.timestamp()})
            self.daemon.cursors[run.trigger] = tick
            spec = self.daemon.catalog.specs.get(run.trigger)
            if spec is not None and spec.schedule is not None and run.trigger in self.daemon.next_due:
                self.daemon.next_due[run.trigger] = cron.next_tick(spec.schedule, tick)
        return True
