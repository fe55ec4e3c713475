"""The loop: watch the triggers directory, resync on an interval, decide, hand fires to the executor."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import logs
from reconciler.config import Deliveries as DeliverySettings
from reconciler.config import Policy, Server
from reconciler.core import policy as rules
from reconciler.core import schedule as cron
from reconciler.core.errors import HistoryGitError, SpecError, StateError
from reconciler.core.freeze import Frozen, frozen
from reconciler.core.plan import Action, decide, unknown_server
from reconciler.core.runs import REQUESTED_KEYS, Provenance, Run, RunStatus, new_run, superseded
from reconciler.core.spec import Spec
from reconciler.jenkins.client import Client
from reconciler.metrics import Metrics
from reconciler.repo import provenance
from reconciler.repo.catalog import MAX_SPEC_BYTES, Catalog, Changes
from reconciler.repo.history import History
from reconciler.repo.watch import Watcher
from reconciler.repo.writeback import Writeback
from reconciler.service.execute import REPOSTS, Executor
from reconciler.service.liveconfig import LiveConfig, Settings, changed_keys
from reconciler.service.operations import POLL, Operations
from reconciler.service.supervisor import Supervisor
from reconciler.store.base import StateStore
from reconciler.store.open import is_dsn, open_store

if TYPE_CHECKING:
    from reconciler.service.deliveries import Deliveries
    from reconciler.service.leadership import Leadership
    from reconciler.store.postgres import PgStore

HEARTBEAT = 10.0
"""The loop wakes at least this often, so /healthz can tell a sleeping loop from a stuck one."""
STORE_RETRY = 5.0
"""After the state store refused a write (a full disk), how long the loop waits before a full pass tries again."""
TICK_BATCH = 5000
"""Due schedules handled in one turn of the loop: all of a minute's, up to thousands, so each tick is
decided at its minute, before its POSTs start. Deciding costs ~50 µs a tick while nothing competes
(5,000 in 0.29 s here), ten times that while 32 workers post the batch before it: with batches of 250,
1,000 schedules due at once were decided 190 ms after their tick (p50), against 0.5 ms in one batch.
The bound keeps a change written meanwhile from waiting behind tens of thousands (whose later turns
are then decided beside the POSTs of the first, at that slower pace)."""
DECIDE_CHUNK = 250
"""Due ticks recorded a transaction. A turn's ticks are all recorded before any is handed to the
workers, in short transactions: on PostgreSQL a transaction holds the leader row that the lease's
renewal waits for, and each tick is two round trips to a database that may be a zone away."""
TRIM_AFTER = 500
"""Files parsed in one pass after which the heap is trimmed (see `trim_heap`)."""


def trim_heap() -> None:
    """Parsing thousands of files frees most of what it allocates, but glibc keeps the freed pages;
    hand them back, so a sidecar's memory is what it holds, not what its first pass touched."""
    with contextlib.suppress(AttributeError, OSError):  # not glibc (musl has no malloc_trim): nothing to do
        ctypes.CDLL(None).malloc_trim(0)


UNSUCCESSFUL = frozenset({RunStatus.REFUSED, RunStatus.FAILED, RunStatus.LOST, RunStatus.UNKNOWN,
                          RunStatus.CANCELLED})


@dataclass(frozen=True)
class Once:
    """How `run --once` went."""

    not_leader: bool = False
    invalid: bool = False
    waiting: dict[str, str] = field(default_factory=dict)
    """Runs still open when the wait ended, by trigger: the wait timed out."""
    failed: dict[str, str] = field(default_factory=dict)
    """Runs that did not succeed, by trigger, with their result or status."""


class Daemon:
    def __init__(self, catalog: Catalog, store: StateStore, history: History, servers: Mapping[str, Server],
                 executor: Executor, *, clock: Callable[[], float] = time.time, resync_interval: float = 60.0,
                 policy: Policy | None = None):
        self.catalog = catalog
        self.store = store
        self.history = history
        self.writeback = history.writeback
        self.leadership: Leadership | None = None
        """With replicas on PostgreSQL: the lease that lets this one fire (see leadership.py)."""
        self.deliveries: Deliveries | None = None
        self._said_restart = False
        """`deliveries_need_restart` was logged (once a process is enough)."""
        """Commit statuses and messages, if the operator configured any (see deliveries.py)."""
        self.servers = servers
        self.executor = executor
        self.supervisor = executor.supervisor
        self.clock = clock
        self.resync_interval = resync_interval
        self.log = logs.get()
        self._wake = threading.Event()
        self._paths: set[str] = set()
        self._paths_lock = threading.Lock()
        self.ready = threading.Event()
        self.passes = 0
        self.heartbeat = time.monotonic()
        self._history_wait: str | None = None
        """Why an empty store is still waiting for the history branch, while it waits."""
        self._store_failure: str | None = None
        """Why the last turn of the loop could not record its decisions, until one can."""
        self.watcher: Watcher | None = None
        self._watcher_thread: threading.Thread | None = None
        self.cursors: dict[str, datetime] = {}
        self.next_due: dict[str, datetime] = {}
        self._due_commits: tuple[dict[str, Spec], datetime, set[str], dict[str, Provenance]] | None = None
        """The commits behind the schedules due at one minute, found by one walk of the git log for all of
        them and kept for the turns that take the rest (`tick_batch` at a time), while the specs are the same."""
        self.tick_batch = TICK_BATCH
        """At most this many due schedules a turn of the loop (see TICK_BATCH)."""
        self.empty_start: float | None = None
        """When this process started on an empty state store (a fresh pod): what it decides for the
        moment it started may have been posted by a process whose record of it never reached git."""
        self._fired_early: list[Run] = []
        """What the scan under way decided before it was done (see `_early`)."""
        self.unconfigured: dict[str, str] = {}
        """Valid specs that name a server the operator has not configured, or ask what the policy does
        not allow, with the error: invalid, like a broken file, and reported once per change."""
        self.policy = policy or Policy()
        self.against_policy: dict[str, tuple[bytes | None, str]] = {}
        """The specs the policy refuses, with the digest of the bytes judged and the error with positions."""
        self.frozen: dict[str, Frozen] = {}
        """One-shots due but held back by a freeze window: decided again when it ends."""
        self.live: LiveConfig | None = None
        """The operator's config, read again as it changes (`reconciler run` sets it up)."""
        self.make_client: Callable[[Server], Client] | None = None
        self.operations = Operations(self)
        """Operators' requests, pauses and backfills (`reconciler trigger`, `pause`, `resume`, `backfill`)."""
        executor.finished = self.operations.ended
        self._look_up: set[str] = set()
        """Runs rebuilt from history that an operator had asked for: looked up, never posted."""

    def take_in_history(self, stop: threading.Event) -> None:
        """With write-back, take in the history branch before deciding anything. A store with records
        of its own goes on without it (its lines wait locally); an empty one waits for it, since
        deciding with no record of what fired is how a fire happens twice."""
        if self.writeback is None:
            return
        delay = 1.0
        while not stop.is_set():
            try:
                self.writeback.prepare()
            except HistoryGitError as e:
                self.writeback.last_error = str(e)
                if not self.store.is_empty():
                    self.log.warning("history_unavailable", error=str(e), note="firing goes on; lines wait locally")
                    return
                self._history_wait = str(e)
                self.log.error("history_unavailable", error=str(e), retry_in=delay,
                               note="an empty state store waits for the history before deciding anything")
                stop.wait(delay)
                delay = min(delay * 2, 60.0)
            else:
                self._history_wait = None
                return

    def bootstrap(self) -> None:
        """Rebuild a fresh store from history, then resume whatever an earlier process left open.

        History is evidence, never an instruction: its lines come from a branch anyone with push access
        writes. A run rebuilt from it that would still be posted (decided, posting, refused) is carried
        on only if a current valid spec asks for it (the same trigger and revision, or a tick of its
        schedule within the starting deadline), and then with the request that spec makes; any other
        is recorded `abandoned` with the reason, never posted. One Jenkins already accepted (queued,
        building) is followed as before, which only reads, but is never posted again unless a spec asks."""
        if self.store.is_empty():
            self.empty_start = self.clock()
            runs, self._look_up = self.operations.rebuilt(list(self.history.runs()))
            for problem in self.history.problems:
                self.log.warning("history_line_skipped", problem=problem)
            self.history.problems.clear()
            if runs:
                runs, abandoned = self._judge(runs)
                self.store.decide(runs)
                self.log.info("state_rebuilt", runs=len(runs), source=str(self.history.root))
                for run in abandoned:
                    self.history.append(run, RunStatus.ABANDONED, self.clock(), reason=run.last_error)
                    self.log.warning("run_abandoned", trigger=run.trigger, run_id=run.run_id, reason=run.last_error)
        self.cursors = cron.cursors(self.store.cursors(), self.store.last_ticks().items())
        self._resume(self.store.open_runs(), posting_after=0.0 if self.leadership is None else
                     self.leadership.inherited_posting_delay)
        self.store.retry_now()  # a start is when the operator's configuration may have changed: try again
        if self.deliveries is not None:
            self.deliveries.resume(fresh=self.empty_start is not None)
            self.deliveries.start(self.supervisor.start)

    def _judge(self, runs: list[Run]) -> tuple[list[Run], list[Run]]:
        """Runs rebuilt from history, each that would still act carried on only as a current spec asks;
        returns all runs, and those abandoned among them."""
        acting = [run for run in runs if (run.is_open or run.status is RunStatus.REFUSED) and
                  not run.fire_key.startswith(REQUESTED_KEYS)]  # an operator's requests: Operations.rebuilt
        if not acting:
            return runs, []
        specs = Catalog.scanned(self.catalog.root).specs
        now = self.clock()
        judged: dict[str, Run] = {}
        abandoned = []
        for run in acting:
            expected, reason = _asked_for(run, specs.get(run.trigger), now)
            if expected is None and run.status in (RunStatus.QUEUED, RunStatus.BUILDING):
                run = replace(run, attempts=max(run.attempts, REPOSTS + 1))  # followed (GETs), never reposted
            elif expected is None:
                run = replace(run, status=RunStatus.ABANDONED, finished_at=now, last_error=reason, retry_at=None)
                abandoned.append(run)
            else:
                run = replace(run, server=expected.server, job=expected.job, parameters=expected.parameters,
                              cause=expected.cause, tag_param=expected.tag_param)
            judged[run.run_id] = run
        return [judged.get(run.run_id, run) for run in runs], abandoned

    def retry_refused(self) -> list[Run]:
        """Post again the refused runs that are due, if their spec still asks for them; supersede the others."""
        now = self.clock()
        retried = []
        for run in self.store.refused_due(now):
            spec = self.catalog.specs.get(run.trigger)
            if run.server not in self.executor.clients or (spec is not None and spec.suspend) or \
                    run.trigger in self.unconfigured or frozen(self.policy.windows, run.trigger, _utc(now)) or \
                    self.operations.holds(run.trigger):
                continue  # stays refused until it can be posted
            reason = superseded(run, spec, now)
            if reason is not None:
                self.executor.supersede(run, reason)
                continue
            # Looked up before it is posted again, where it can be: a refused lookup, or a fresh store's
            # run, may stand for a POST an earlier process made. Recorded, so a kill keeps that owed.
            look = self.executor.taggable(run, self.executor.clients[run.server])
            [run] = self.store.update_many([(run, {"status": RunStatus.POSTING if look else RunStatus.DECIDED,
                                                   "retry_at": None})])
            self.log.info("fire_retried", trigger=run.trigger, run_id=run.run_id, last_error=run.last_error)
            self.executor.resume(run)
            retried.append(run)
        return retried

    def _resume(self, runs: list[Run], posting_after: float = 0.0) -> None:
        """Hand open runs to the executor, each on its own: one that cannot be taken up now (its
        history unreadable) waits for the next full pass, and the others go on."""
        resumed = 0
        for run in runs:
            if run.server not in self.executor.clients:
                continue
            try:
                self.executor.resume(run, posting_after, post=run.run_id not in self._look_up)
            except OSError as e:
                self.log.error("resume_failed", trigger=run.trigger, run_id=run.run_id, error=str(e))
            else:
                resumed += 1
        if resumed:
            self.log.info("runs_resumed", count=resumed)

    def _resume_stranded(self) -> None:
        """Runs open in the store that the executor is not carrying: a step of theirs failed (a full
        disk, say). Taken up again as a restart would, without one. The executor's runs are read
        before the store's: a run that closes in between is then seen closed, never resumed twice."""
        self._resume(self.store.open_runs(excluding=[run.run_id for run in self.executor.active()]))

    def reconcile(self, changes: Changes, *, full: bool = False) -> list[Run]:
        """Decide what the changed (or, when full, all) triggers need; record decisions; fire them."""
        for entry in changes.changed:
            if entry.error is not None:
                self.log.error("spec_invalid", trigger=entry.name, file=entry.path,
                               errors=str(entry.error).splitlines())
        for name in changes.removed:
            self.log.info("spec_removed", trigger=name)
            self.next_due.pop(name, None)
        candidates = self.catalog.specs.values() if full else \
            [e.spec for e in changes.changed if e.spec is not None]
        now = self.clock()
        fired = self.store.fired_among([(s.name, s.revision) for s in candidates if s.schedule is None])
        firing: list[Spec] = []
        started: dict[str, float] = {}
        for name in changes.removed:
            self.unconfigured.pop(name, None)
        for entry in changes.changed:
            if entry.spec is None:
                self.unconfigured.pop(entry.name, None)
        for spec in candidates:
            if self._unconfigured(spec):
                continue
            if spec.schedule is not None:
                self._arm(spec, now, started)
                continue
            self.next_due.pop(spec.name, None)  # it may have been a schedule before
            verdict = decide(spec, fired, self.servers)
            if verdict.action is Action.FIRE and not self.operations.holds(spec.name) and \
                    not self._frozen(spec, now):
                firing.append(spec)
        commits = self._provenance(firing)
        to_fire = [new_run(spec, now, provenance=commits.get(spec.name)) for spec in firing]
        self.executor.metrics.invalid_specs.set(len(self.catalog.errors) + len(self.unconfigured))
        self.executor.metrics.policy_violations.set(len(self.against_policy))
        inserted = self.store.decide(to_fire, cursors=started)
        if len(inserted) < len(to_fire):  # a revision whose only record is an abandoned one
            taken = {r.run_id for r in inserted}
            inserted += self.store.revive([r for r in to_fire if r.run_id not in taken])
        for run in inserted:
            self.log.info("fire_decided", trigger=run.trigger, run_id=run.run_id, job=run.job, revision=run.fire_key)
        first = self.passes == 0 and self.empty_start is not None  # the first pass, early decisions included
        self.executor.submit(inserted, unsure={r.run_id for r in inserted} if first else ())
        return inserted

    def _provenance(self, specs: list[Spec]) -> dict[str, Provenance]:
        """The commit behind each spec about to fire, in one walk of the checkout's git log."""
        paths = {self.catalog.entries[s.name].path: s.name for s in specs if s.name in self.catalog.entries}
        return {paths[path]: commit for path, commit in provenance.lookup(self.catalog.root, paths).items()}

    def _unconfigured(self, spec: Spec) -> bool:
        """A spec naming a server the operator has not configured, or asking what the policy does not
        allow: invalid, said once per change."""
        error = unknown_server(spec.server, self.servers) if spec.server not in self.servers else \
            self._against_policy(spec)
        if error is None:
            self.unconfigured.pop(spec.name, None)
            return False
        self.frozen.pop(spec.name, None)
        if self.unconfigured.get(spec.name) != error:
            self.unconfigured[spec.name] = error
            self.log.error("spec_invalid", trigger=spec.name, errors=[error])
        self.next_due.pop(spec.name, None)
        return True

    def _against_policy(self, spec: Spec) -> str | None:
        """The policy's verdict on a spec, with the offending keys' positions: its file is read again
        for them only when it is refused, and once per version of the file."""
        found = rules.violations(spec, self.policy.rules)
        if not found:
            self.against_policy.pop(spec.name, None)
            return None
        entry = self.catalog.entries.get(spec.name)
        digest = None if entry is None else entry.digest
        known = self.against_policy.get(spec.name)
        if known is not None and known[0] == digest and digest is not None:
            return known[1]
        path = spec.name if entry is None else entry.path
        try:
            with open(self.catalog.root / path, encoding="utf-8") as f:
                text = f.read(MAX_SPEC_BYTES)
        except (OSError, UnicodeDecodeError):
            text = ""
        error = str(SpecError(path, rules.problems(text, found)))
        self.against_policy[spec.name] = (digest, error)
        return error

    def _frozen(self, spec: Spec, now: float) -> bool:
        """A one-shot due inside a freeze window waits for its end; said once per revision and window."""
        freeze = frozen(self.policy.windows, spec.name, _utc(now))
        if freeze is None:
            self.frozen.pop(spec.name, None)
            return False
        if self.frozen.get(spec.name) != freeze:
            self.log.info("fire_frozen", trigger=spec.name, revision=spec.revision, window=freeze.window,
                          until=None if freeze.until is None else f"{freeze.until:%Y-%m-%dT%H:%M:%SZ}")
        self.frozen[spec.name] = freeze
        return True

    def _arm(self, spec: Spec, now: float, started: dict[str, float]) -> None:
        """Set when a schedule next needs attention; a new schedule starts from now, not from a backlog
        (its cursor goes into `started`, recorded with the pass's decisions: one commit, not one each)."""
        assert spec.schedule is not None
        if spec.name not in self.cursors:
            started[spec.name] = now
            self.cursors[spec.name] = datetime.fromtimestamp(now, UTC)
        if spec.suspend or spec.server not in self.servers:
            self.next_due.pop(spec.name, None)
            return
        self.next_due[spec.name] = cron.next_tick(spec.schedule, self.cursors[spec.name])

    def tick(self) -> list[Run]:
        """Handle every schedule due at the clock's now: fire, skip or mark missed, once per tick.

        The due schedules' decisions go into a transaction per DECIDE_CHUNK: hundreds of triggers due at
        the same minute cost one commit, not one each, and all are recorded before their POSTs start. At
        most `tick_batch` of them a call: the loop's next turn, at once, takes the rest, after the changes
        the watcher named meanwhile.
        """
        now = self.clock()
        now_dt = datetime.fromtimestamp(now, UTC)
        decisions: list[tuple[Run, str]] = []
        cursors: dict[str, datetime] = {}
        running: dict[str, list[Run]] = {}
        for run in self.executor.active():
            running.setdefault(run.trigger, []).append(run)
        all_due = [name for name, due_at in self.next_due.items() if due_at <= now_dt]
        due = all_due[:self.tick_batch]
        specs = self.catalog.specs
        known: dict[Any, Any] = {}
        """What the cron arithmetic said, by its inputs: thousands of schedules due at one minute mostly
        share an expression and a cursor, and each answer costs two walks of cronsim."""
        commits = self._due_provenance(specs, all_due, due, now_dt.replace(second=0, microsecond=0))
        for name in due:
            spec = specs.get(name)
            if spec is None or spec.schedule is None:
                self.next_due.pop(name, None)
                continue
            cursors[name], found = self._due_decisions(spec, now, now_dt, running.get(name, []), commits.get(name),
                                                       known)
            decisions += found
            after = (spec.schedule, max(cursors[name], now_dt))
            if after not in known:
                known[after] = cron.next_tick(*after)
            self.next_due[name] = known[after]
        if not cursors:
            return []
        by_trigger: dict[str, list[Run]] = {}
        for run, _ in decisions:
            by_trigger.setdefault(run.trigger, []).append(run)
        names = list(cursors)
        inserted: set[str] = set()
        for k in range(0, len(names), DECIDE_CHUNK):
            chunk = names[k:k + DECIDE_CHUNK]
            inserted.update(r.run_id for r in self.store.decide([r for n in chunk for r in by_trigger.get(n, [])],
                                                                cursors={n: cursors[n].timestamp() for n in chunk}))
        for name, cursor in cursors.items():
            self.cursors[name] = max(self.cursors[name], cursor)
        fired: list[Run] = []
        for run, event in decisions:
            if run.run_id not in inserted:
                continue  # another process (or an earlier life of this one) handled that tick
            log = self.log.bind(trigger=run.trigger, run_id=run.run_id)
            if event == "decided":  # the executor writes its history line before the POST
                log.info("fire_decided", job=run.job, scheduled_for=run.fire_key[1:])
                fired.append(run)
            else:
                self.history.decided(run, now, event=event)
                log.warning(f"tick_{event}", scheduled_for=run.fire_key[1:], reason=run.last_error)
        self.executor.submit(fired, unsure={r.run_id for r in fired if self._before_start(r)})
        return fired

    def _due_provenance(self, specs: dict[str, Spec], all_due: list[str], due: list[str],
                        minute: datetime) -> dict[str, Provenance]:
        if not due:
            return {}
        cached = self._due_commits
        if cached is None or cached[0] is not specs or cached[1] != minute or not cached[2].issuperset(due):
            wanted = [specs[n] for n in all_due if n in specs]
            cached = self._due_commits = (specs, minute, {s.name for s in wanted}, self._provenance(wanted))
        return cached[3]

    def _before_start(self, run: Run) -> bool:
        """A tick due by the time a fresh pod started: the pod before it may have fired it."""
        tick = cron.tick_of_key(run.fire_key)
        return self.empty_start is not None and tick is not None and tick.timestamp() <= self.empty_start

    def _due_decisions(self, spec: Spec, now: float, now_dt: datetime, running: list[Run],
                       commit: Provenance | None = None, known: dict[Any, Any] | None = None,
                       ) -> tuple[datetime, list[tuple[Run, str]]]:
        assert spec.schedule is not None
        inputs = (spec.schedule, self.cursors[spec.name], now_dt, spec.starting_deadline)
        known = {} if known is None else known
        if inputs not in known:
            known[inputs] = cron.due(*inputs)
        due = known[inputs]
        decisions: list[tuple[Run, str]] = []
        for missed in due.missed:
            run = replace(new_run(spec, now, missed), status=RunStatus.MISSED, finished_at=now,
                          last_error=f"tick passed by more than starting_deadline "
                                     f"({int(spec.starting_deadline.total_seconds())}s) while not firing")
            decisions.append((run, "missed"))
        if due.missed_uncounted:
            self.log.warning("ticks_missed", trigger=spec.name, listed=len(due.missed),
                             note="more ticks were missed than are recorded")
        freeze = None if due.fire is None else frozen(self.policy.windows, spec.name, due.fire)
        if due.fire is not None and freeze is not None:
            run = replace(new_run(spec, now, due.fire, commit), status=RunStatus.SKIPPED, finished_at=now,
                          last_error=f"the tick falls in {freeze}")
            decisions.append((run, "skipped"))
        elif due.fire is not None:
            run = new_run(spec, now, due.fire, commit)
            pause = self.operations.paused.get(spec.name)
            if pause is not None and pause.holds(now):
                decisions.append((replace(run, status=RunStatus.SKIPPED, finished_at=now, last_error=pause.describe()),
                                  "skipped"))
            elif running and spec.concurrency == "forbid":
                reason = f"concurrency: forbid, and run {running[0].run_id} is still {running[0].status}"
                skipped = replace(run, status=RunStatus.SKIPPED, finished_at=now, last_error=reason)
                decisions.append((skipped, "skipped"))
            else:
                if running and spec.concurrency == "replace":
                    self.executor.replace(running)
                decisions.append((run, "decided"))
        return due.cursor, decisions

    def _early(self, changes: Changes) -> None:
        """What a long scan found so far: decided now, not after the slowest file; and the loop lives."""
        self.heartbeat = time.monotonic()
        if changes:
            self._fired_early += self.reconcile(changes)

    def _alive(self, _: Changes) -> None:
        self.heartbeat = time.monotonic()

    def pass_once(self) -> list[Run]:
        metrics = self.executor.metrics
        with metrics.reconcile_duration.time():
            self.operations.refresh()  # pauses first: the scan decides what it parses as it goes
            self._fired_early = []
            changes = self.catalog.scan(self._early)
            fired = self._fired_early + self.reconcile(changes, full=True)
            fired += self.operations.take_up()
            self._resume_stranded()
            fired += self.retry_refused()
        if len(changes.changed) >= TRIM_AFTER:
            trim_heap()
        metrics.last_pass.set(self.clock())
        self.passes += 1
        return fired

    def run_once(self, *, wait: bool, timeout: float | None) -> Once:
        """One pass, then wait for its runs: until Jenkins accepted them, or with `wait` until they
        finished. With replicas, one pass as the leader or none at all."""
        if self.leadership is not None:
            self.supervisor.start("leadership", self.leadership.run, self.executor.stop)
            if not self.leadership.elected.wait(2 * self.leadership.lease):
                holder, epoch = self.leadership.seen
                self.log.error("not_leader", leader=holder, epoch=epoch, reason="another replica holds the lease")
                return Once(not_leader=True)
        self.take_in_history(self.executor.stop)
        self.bootstrap()
        started = {r.run_id for r in self.executor.active()}
        fired = self.pass_once()
        started |= {r.run_id for r in fired}
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            done = self.executor.wait_idle(None if deadline is None else max(0.0, deadline - time.monotonic()),
                                           posted_only=not wait)
            runs = [r for r in self.store.runs(limit=100_000) if r.run_id in started]
            more = self.operations.turn(ended={r.trigger for r in runs}) if done else []  # pauses after failures
            if not more:  # a one-at-a-time backfill's next tick, once the previous run is over
                break
            started |= {r.run_id for r in more}
        if self.deliveries is not None:
            self.deliveries.flush(10.0)
        self.log.info("pass_completed", specs=len(self.catalog.entries), fired=len(fired),
                      invalid=len(self.catalog.errors) + len(self.unconfigured))
        if self.catalog.errors or self.unconfigured:
            return Once(invalid=True)
        if not done:
            return Once(waiting={r.trigger: r.status for r in self.executor.active() if r.run_id in started})
        return Once(failed={r.trigger: r.result or r.status for r in runs if r.status in UNSUCCESSFUL or
                            (wait and r.status is RunStatus.COMPLETED and r.result != "SUCCESS")})

    def liveness_problems(self) -> list[str]:
        stalled = time.monotonic() - self.heartbeat
        return [f"the loop has not turned for {stalled:.0f}s"] if stalled > 3 * HEARTBEAT else []

    def readiness_problems(self) -> list[str]:
        problems = [] if self.ready.is_set() else ["the first pass has not completed"]
        if not os.path.isdir(self.catalog.root):
            problems.append(f"waiting for the triggers folder {self.catalog.root} (not there yet: is git-sync "
                            "still checking it out?)")
        if self._history_wait:
            problems.append(f"waiting for the history branch (the state store is empty): {self._history_wait}")
        unwritable = self.store.writable() or self._store_failure
        if unwritable:
            problems.append(unwritable)
        if self._watcher_thread is None or not self._watcher_thread.is_alive():
            problems.append("the watcher is not running")
        return problems

    def readiness_notes(self) -> list[str]:
        """What /readyz says beside `ok`."""
        notes = [] if self.leadership is None else self.leadership.notes()
        notes += [] if self.live is None else self.live.notes()
        notes += [] if self.watcher is None else self.watcher.notes()
        for server, backlog in self.executor.backlog().items():
            if backlog.posts:
                notes.append(f"backlog on server {server}: {backlog.posts} fires waiting to be POSTed "
                             f"({backlog.changes} changes, {backlog.ticks} ticks)" +
                             (f"; held: {backlog.held}" if backlog.held else ""))
        return notes + ([] if self.writeback is None else self.writeback.notes())

    def run(self, stop: threading.Event) -> None:
        self.take_in_history(stop)
        if stop.is_set():
            return
        # The watch starts before the first scan, so it is in place by the time the scan is done.
        self.watcher = Watcher(str(self.catalog.root), self._notice)
        self._watcher_thread = self.supervisor.start("watcher", self.watcher.run)
        if self.live is not None:
            self.supervisor.start("config", self._watch_config, stop)
        try:
            if self.leadership is None or self._stand_by(stop):
                self._lead(stop)
        finally:
            self.watcher.close()
            self._watcher_thread.join(timeout=2)

    def _lead(self, stop: threading.Event) -> None:
        # A standby reads the config as it changes but takes it up only now: what the new leader's first
        # requests and deliveries use is the config as it is, not as it was when the process started.
        self.supervisor.guard("config_take", self._take_config)
        self._until_done("bootstrap", self.bootstrap, stop)
        if self.writeback is not None:
            self.writeback.start(self.supervisor.start)
        fired = self._until_done("first_pass", self.pass_once, stop) or []
        self.log.info("pass_completed", specs=len(self.catalog.entries), fired=len(fired),
                      invalid=len(self.catalog.errors))
        # What the first pass built lives as long as the process: a full collection walked it to find
        # nothing, holding the GIL the while. Frozen (after one last collection, so no
        # garbage is kept), later collections see only newer objects.
        gc.collect()
        gc.freeze()
        self.ready.set()
        next_resync = time.monotonic() + self.resync_interval
        while not stop.is_set():
            self.heartbeat = time.monotonic()
            timeout = min(next_resync - time.monotonic(), HEARTBEAT)
            timeout = min(timeout, POLL)  # operators' requests and pauses are taken up within seconds
            if self.next_due:
                timeout = min(timeout, min(self.next_due.values()).timestamp() - self.clock())
            try:
                refusal = self.store.next_retry_at()
            except StateError:  # the store is away: the turn below says so, and the loop goes on
                refusal = None
            if refusal is not None:
                timeout = min(timeout, refusal - self.clock())
            thaw = [f.until.timestamp() for f in self.frozen.values() if f.until is not None]
            if thaw:
                timeout = min(timeout, min(thaw) - self.clock())
            self._wake.wait(max(0.0, timeout))
            if stop.is_set():
                break
            self._wake.clear()
            resync = time.monotonic() >= next_resync or self._take_config_guarded()
            error = self.supervisor.guard("pass", self._turn, resync)
            if error is not None:
                # Nothing is lost: what was not recorded was not fired, and the full pass that follows
                # decides it again. Until one goes through, /readyz says why.
                self._store_failure = str(error) if isinstance(error, StateError) else None
                if isinstance(error, StateError):
                    self.executor.metrics.state_errors.inc()
                stop.wait(min(STORE_RETRY, self.resync_interval))
                next_resync = time.monotonic()
                continue
            self._store_failure = None
            if resync:
                next_resync = time.monotonic() + self.resync_interval

    def _stand_by(self, stop: threading.Event) -> bool:
        """A replica that does not lead keeps its catalog parsed, to take over at once, and is ready
        (a rollout goes on) while it waits; True once it leads, False if stopped first."""
        assert self.leadership is not None
        elected = self.leadership.elected
        self.supervisor.start("leadership", self.leadership.run, stop)
        self.catalog.scan(self._alive)
        self.ready.set()
        self.log.info("standing_by", specs=len(self.catalog.entries))
        while not stop.is_set() and not elected.is_set():
            self.heartbeat = time.monotonic()
            self._wake.wait(HEARTBEAT)
            self._wake.clear()
            paths = self._take_paths()
            if paths:
                self.supervisor.guard("standby_refresh", self.catalog.refresh, paths, self._alive)
        return elected.is_set() and not stop.is_set()

    def _until_done(self, step: str, work: Callable[[], Any], stop: threading.Event) -> Any:
        """`work()`, tried again with a growing pause while it fails (a database that is restarting,
        a history it cannot read yet), until it succeeds or the process stops; /readyz says why."""
        delay = 1.0
        while not stop.is_set():
            self.heartbeat = time.monotonic()
            try:
                return work()
            except Exception as e:
                self.supervisor.report(step, e)
                self._store_failure = f"{step} failed, retrying in {delay:.0f}s: {logs.redact(str(e))}"
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
        return None

    def _take_paths(self) -> list[str]:
        """The paths the watcher named since the last look."""
        with self._paths_lock:
            paths, self._paths = list(self._paths), set()
        return paths

    def _turn(self, resync: bool) -> None:
        """One turn of the loop: operators' acts, due ticks, the files the watcher named, refused runs due
        again, and a full pass if one is due."""
        if not resync:  # a full pass takes them up itself
            self.operations.turn()
        self.tick()
        if not resync:  # a full pass takes them up itself
            self.retry_refused()
            self._thaw()
        paths = self._take_paths()
        if paths:
            self.reconcile(self.catalog.refresh(paths, self._early))
            self._fired_early = []
        if resync:
            started = time.perf_counter()
            fired = self.pass_once()
            self.log.debug("resync_completed", specs=len(self.catalog.entries), fired=len(fired),
                           seconds=round(time.perf_counter() - started, 4))

    def _thaw(self) -> None:
        """The one-shots whose freeze has ended: decided again, so each fires once, now."""
        now = self.clock()
        names = [name for name, f in self.frozen.items() if f.until is not None and f.until.timestamp() <= now]
        entries = [self.catalog.entries[name] for name in names if name in self.catalog.entries]
        if entries:
            self.reconcile(Changes(changed=entries))

    def follow_config(self, read: Callable[[], Settings], file: str | None) -> None:
        """Read the operator's config again as it changes (and on SIGHUP, `self.live.reload_soon`)."""
        def usable(settings: Settings) -> None:  # loaded only when a config changes: Apprise is heavy
            from reconciler.service.deliveries import check_channels

            check_channels(settings[2])

        self.live = LiveConfig(read, file, (dict(self.servers), self.policy, self._delivery_settings()),
                               self.executor.metrics, self._wake.set, usable)

    def _delivery_settings(self) -> DeliverySettings:
        """The deliveries in use (none without an outbox: they are wired at start only)."""
        return DeliverySettings() if self.deliveries is None else self.deliveries.settings

    def _take_config_guarded(self) -> bool:
        """`_take_config` as one turn: whatever it raises is said, and the loop goes on."""
        taken: list[bool] = []
        self.supervisor.guard("config_take", lambda: taken.append(self._take_config()))
        return bool(taken and taken[0])

    def _watch_config(self, stop: threading.Event) -> None:
        assert self.live is not None
        while self.live.wait(stop):
            self.supervisor.guard("config_read", self.live.check)

    def _take_config(self) -> bool:
        """On the loop's thread: take up a changed config; True if it did (a full pass follows)."""
        new = None if self.live is None else self.live.take()
        if new is None:
            return False
        servers, policy, deliveries = new
        changed = changed_keys((dict(self.servers), self.policy, self._delivery_settings()), new)
        if self.deliveries is not None:
            self.deliveries.use(deliveries)  # first: it may refuse the settings before anything else changed
        else:  # the outbox and its worker are wired at start only: not taken up, so not said as changed
            changed = [key for key in changed if not key.startswith(("commit_status", "notify"))]
            if deliveries and not self._said_restart:
                self._said_restart = True
                self.log.warning("deliveries_need_restart", note="commit_status or notify was added to the "
                                 "config: restart the daemon to send them")
            if not changed:
                return False
        if self.make_client is not None:
            fresh = {name: self.make_client(server) for name, server in servers.items()
                     if self.servers.get(name) != server}
            for client in self.executor.use_clients(fresh):
                client.close()
        self.servers, self.policy = servers, policy
        self.against_policy.clear()
        self.executor.metrics.config_reloads.inc()
        self.log.info("config_reloaded", changed=changed)
        return True

    def _notice(self, paths: Iterable[str]) -> None:
        """The watcher's news: the paths to re-read at the next turn of the loop."""
        with self._paths_lock:
            self._paths.update(paths)
        self._wake.set()

    def wake(self) -> None:
        """Have the loop turn now rather than at its next timeout (an operator's act, a refusal)."""
        self._wake.set()

    def request_stop(self, *_: Any) -> None:
        """Safe from a signal handler: ends `run` promptly; open runs stay open in the store."""
        self.executor.stop.set()
        self._wake.set()
        if self.live is not None:
            self.live.reload_soon()

    def close(self) -> list[Run]:
        """Stop the executor, close the store and the HTTP sessions; returns the runs left open."""
        in_flight = self.executor.shutdown()
        if self.deliveries is not None:
            self.deliveries.close()
        if self.writeback is not None:
            self.writeback.close()
        self.supervisor.shutdown()
        self.store.close()
        for client in self.executor.clients.values():
            client.close()
        return in_flight


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _asked_for(run: Run, spec: Spec | None, now: float) -> tuple[Run | None, str]:
    """The run a current spec would make in place of `run` rebuilt from history, or why none would."""
    why = "rebuilt from history but no current valid spec asks for it: not posted"
    if spec is None:
        return None, f"{why} (no valid spec {run.trigger!r})"
    if spec.suspend:
        return None, f"{why} (the spec is suspended)"
    provenance = None
    if run.provenance is not None and set(run.provenance) == set(Provenance.__slots__) and \
            all(isinstance(v, str) for v in run.provenance.values()):
        provenance = Provenance(**run.provenance)
    tick = cron.tick_of_key(run.fire_key)
    if tick is None:
        if spec.schedule is not None or spec.revision != run.fire_key:
            return None, f"{why} (the spec is at revision {spec.revision}, the run at {run.fire_key})"
        expected = new_run(spec, run.decided_at, provenance=provenance)
    else:
        if spec.schedule is None:
            return None, f"{why} (the spec has no schedule)"
        if cron.next_tick(spec.schedule, tick - timedelta(seconds=1)) != tick:
            return None, f"{why} ({run.fire_key[1:]} is not a tick of the spec's schedule)"
        if not 0 <= now - tick.timestamp() <= spec.starting_deadline.total_seconds():
            return None, f"{why} (the tick {run.fire_key[1:]} is not the current one)"
        expected = new_run(spec, run.decided_at, tick, provenance)
    if expected.run_id != run.run_id:
        return None, f"{why} (its run id is not the one the spec's revision or tick has)"
    return expected, ""


def assemble(triggers: Path, state: Path | str, history: Path | None, servers: Mapping[str, Server], *,
             clock: Callable[[], float] = time.time, resync_interval: float = 60.0,
             client_options: Mapping[str, Any] | None = None, writeback: Writeback | None = None,
             lease: float | None = None, policy: Policy | None = None, deliveries: DeliverySettings | None = None,
             delivery_options: Mapping[str, Any] | None = None, **executor_options: Any) -> Daemon:
    """Wire a daemon to its parts: one client per server, the state store, history (in the write-back's
    clone, if there is one), the executor; on PostgreSQL, the lease that lets one replica fire (psycopg
    and the lease are loaded only by those who use them)."""
    stop = threading.Event()

    def make_client(server: Server) -> Client:
        return Client(server, stop=stop, **(client_options or {}))

    clients = {name: make_client(server) for name, server in servers.items()}
    shared: PgStore | None = None
    if is_dsn(state):
        from reconciler.service.leadership import LEASE
        from reconciler.store.postgres import PgStore

        lease = lease or LEASE
        shared = PgStore(str(state), hold=lease)
    store: StateStore = shared if shared is not None else open_store(state)
    root = writeback.history_dir if writeback is not None else history
    metrics = executor_options.pop("metrics", None) or Metrics()
    outbox = None
    records = History(root, writeback)
    if deliveries:
        from reconciler.service.deliveries import Deliveries, Observed

        outbox = Deliveries(deliveries, store, metrics, stop=stop, clock=clock, **(delivery_options or {}))
        records = Observed(root, writeback, outbox)
    executor = Executor(store, records, clients, stop=stop, clock=clock, supervisor=Supervisor(stop),
                        metrics=metrics, **executor_options)
    if writeback is not None:
        executor.metrics.watch_history(writeback.unpushed_age)
    daemon = Daemon(Catalog(triggers), store, records, servers, executor, clock=clock,
                    resync_interval=resync_interval, policy=policy)
    daemon.make_client = make_client
    daemon.deliveries = outbox
    executor.on_refused = daemon._wake.set
    if shared is not None:
        from reconciler.service.leadership import Leadership
        from reconciler.store.postgres import identity

        leadership = Leadership(shared.connection, identity(), lease=lease, metrics=executor.metrics,
                                on_elected=daemon._wake.set, on_lost=daemon.request_stop)
        shared.fence = leadership.fence
        executor.may_post = leadership.may_act
        daemon.leadership = leadership
        if outbox is not None:
            outbox.may_deliver = leadership.may_act
    return daemon
