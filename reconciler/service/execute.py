"""Carrying out runs: POST them, follow them through the queue to a result, record each step.

Every step is written to the state store before the next one is attempted, so a process killed
at any line resumes from what the store says (see README, "What is guaranteed"):

- `decided`: no POST has been sent. Resume: POST.
- `posting`: a POST may have reached Jenkins. Resume: look the run up in Jenkins by its tag (the
  run id in the `cause` note, sent with the job token, or in `run_id_parameter`); found → follow
  it; not found → POST. Without a tag there is no way to tell, so the run is recorded `lost`
  rather than risk a second build.
- `queued` / `building`: follow the queue item, then the build.

How it runs: every step of a run (a lookup, a POST, a look at its queue item or build) is a call on
its server's worker threads, as many as the server's `concurrency`, which is therefore the most
requests one Jenkins gets from us at once; a slow answer holds only its own thread. The steps wait
in fair lanes (one-shot POSTs, tick POSTs, follow-ups: see lanes.py), and POSTs pass the server's
gate (its `rate`, `max_queued`, Jenkins' Retry-After). A step that
has to wait (a retry's backoff, the next look at a queued build) goes on a timer heap, and one timer
thread hands it to the pool when it is due, putting the looks at runs of one job due together into
one call, so that one read of the job's recent builds answers them all. Each step records itself in
the store before it schedules the run's next step, so whichever thread runs a step, the store says
how far the run got.
"""

from __future__ import annotations

import contextlib
import copy
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from reconciler import logs
from reconciler.core.errors import (
    JenkinsError,
    JenkinsRefused,
    JenkinsServerError,
    JenkinsUnavailable,
    StateError,
    Withheld,
)
from reconciler.core.runs import Run, RunStatus, check_step
from reconciler.jenkins.client import MASKED, Client, Found, RecentBuilds, sent_late
from reconciler.jenkins.contract import explain_500
from reconciler.metrics import Metrics
from reconciler.repo.history import History, iso
from reconciler.service.lanes import Backlog, Lane, Lanes
from reconciler.service.supervisor import Supervisor
from reconciler.store.base import StateStore

GROUP_WINDOW = 0.25
"""Follow-ups due within this many seconds of each other are made together, one read per job."""
MAX_RECENT = 2000
"""The most builds one read of a job's recent builds asks for."""
REPOSTS = 3
"""How often a tagged run whose queue item vanished, and that no build carries, is posted again."""
BOUND_FRESH = 10.0
"""Seconds a job's `nextBuildNumber` is reused as the bound of further POSTs to it (a burst reads it once)."""
"""How often a tagged run whose queue item vanished, and that no build carries, is posted again."""


def _ran_with(run: Run, build: Any) -> dict[str, Any]:
    """What a build ran with beside what the run sent: its parameters (passwords masked), its causes,
    the sent parameters Jenkins dropped, and those it ran with another value."""
    sent = dict(run.parameters or ())
    ran = build.parameters or {}
    found: dict[str, Any] = {"ran_with": build.parameters, "causes": list(build.causes) or None}
    dropped = sorted(name for name in sent if name not in ran)
    changed = {name: ran[name] for name in sent if name in ran and ran[name] not in (sent[name], MASKED)}
    if dropped:
        found["ignored"] = dropped
    if changed:
        found["changed"] = changed
    return found


def _queue_id(run: Run) -> int:
    return int((run.queue_url or "0/").rstrip("/").rsplit("/", 1)[-1])


@dataclass(slots=True)
class _Fire:
    """A run on its way to Jenkins, between attempts."""

    run: Run
    search_first: bool
    """Look the run up before POSTing: an earlier POST may have arrived."""
    record: bool
    """Its `decided` history line is still to be written."""
    delay: float
    """The wait before the next attempt, should this one fail."""
    server_errors_since: float | None = None
    """When (monotonic) Jenkins began answering this run's POSTs with 500s the job's definitions do not explain."""
    post: bool = True
    """False for a run rebuilt from history that an operator asked for: looked up, followed if found,
    otherwise abandoned; history is evidence, never an instruction to post."""


@dataclass(slots=True)
class _Step:
    """One run's step waiting to be written with others (see _GroupCommit)."""

    run: Run
    changes: dict[str, Any]
    durable: bool
    done: threading.Lock
    """A lock taken when the step is made, released by whoever writes it (or hands it the lead): its thread
    waits by taking it again. A bare lock is the cheapest wait there is, and every step of a burst waits."""
    result: Run | None = None
    error: BaseException | None = None


class _GroupCommit:
    """Steps of runs written together: while one thread writes, the steps other threads bring wait, and
    the next of them writes them all in one transaction (one fsync, if any must be durable). In a burst
    of 32 workers a commit each (two, with the posting mark's) made every worker queue for the store's
    lock in turn: 5,000 ticks spent more time handing that lock and the GIL around than writing. A
    step the run lifecycle forbids fails alone, before it joins a batch; a batch that cannot be written
    fails each of its steps, as nothing of it was written."""

    def __init__(self, store: StateStore):
        self.store = store
        self._lock = threading.Lock()
        self._pending: list[_Step] = []
        self._busy = False
        self.batches = 0
        self.steps = 0
        """Written so far (for bench/profile.py: the steps a commit carries in a burst)."""

    def write(self, run: Run, changes: dict[str, Any], durable: bool) -> Run:
        check_step(run, changes)
        step = _Step(run, changes, durable, threading.Lock())
        step.done.acquire()
        with self._lock:
            self._pending.append(step)
            lead, self._busy = not self._busy, True
        if not lead:
            step.done.acquire()
        if step.result is None and step.error is None:  # it leads: its own step is in the batch it takes
            self._write_batch()
        if step.error is not None:
            raise copy.copy(step.error)  # each thread raises its own exception object
        assert step.result is not None
        return step.result

    def _write_batch(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        try:
            results: list[Run | None] = list(self.store.update_many(
                [(s.run, s.changes) for s in batch], durable=any(s.durable for s in batch)))
            error = None
        except BaseException as e:  # handed to each step's own thread, which raises it
            results, error = [None] * len(batch), e
        self.batches, self.steps = self.batches + 1, self.steps + len(batch)
        with self._lock:
            following = self._pending[0] if self._pending else None
            self._busy = following is not None
        for step, result in zip(batch, results, strict=True):
            step.result, step.error = result, error
            step.done.release()
        if following is not None:
            following.done.release()  # its step neither written nor failed: it leads the next batch


@dataclass(frozen=True, slots=True)
class _Look:
    """A followed run's next look at its queue item or build."""

    run: Run
    interval: float


class Executor:
    def __init__(self, store: StateStore, history: History, clients: Mapping[str, Client], *,
                 stop: threading.Event, clock: Callable[[], float] = time.time,
                 poll_min: float = 0.5, poll_max: float = 5.0, retry_min: float = 1.0, retry_max: float = 300.0,
                 refused_min: float = 30.0, refused_max: float = 3600.0, server_error_for: float = 600.0,
                 metrics: Metrics | None = None, supervisor: Supervisor | None = None):
        self.store = store
        self.metrics = metrics or Metrics()
        self.history = history
        self.clients = clients
        self.stop = stop
        self.clock = clock
        self.poll_min, self.poll_max = poll_min, poll_max
        self.retry_min, self.retry_max = retry_min, retry_max
        self.refused_min, self.refused_max = refused_min, refused_max
        self.server_error_for = server_error_for
        """How long POSTs answered with 500s that the job's definitions cannot explain are retried before
        the run is refused, naming Jenkins' Logging ID: an outage passes, a bug in a plugin does not."""
        self._note_warned: set[str] = set()
        self._read_back: set[str] = set()
        """Runs whose build's parameters and causes were read back (once each, in this process)."""
        self._next_builds: dict[tuple[str, str], tuple[float, int]] = {}
        """Each job's `nextBuildNumber` as last read (monotonic time, number): the bound of POSTs to it."""
        self._lanes = {name: self._lanes_for(name, client) for name, client in clients.items()}
        self._cv = threading.Condition()
        """Guards the open runs; notified as they change, for `wait_idle`."""
        self._active: dict[str, Run] = {}
        self._unposted: set[str] = set()
        """The open runs not yet accepted by Jenkins (decided, posting)."""
        self._timers_cv = threading.Condition()
        """Guards the timer heap; notified only when its first entry changes, to wake the timer thread."""
        self._timers: list[tuple[float, int, _Look | _Fire]] = []
        self._seq = itertools.count()
        self.may_post: Callable[[], bool] | None = None
        """Asked right before each POST attempt: with replicas, whether this one's lease surely holds."""
        self.on_refused: Callable[[], None] = lambda: None
        """Told of each refusal: the daemon's loop, asleep until the retry it knew of, wakes for this one's."""
        self.finished: Callable[[Run], None] | None = None
        """Told of each run that ends (the daemon pauses a trigger after its failures)."""
        self._commits = _GroupCommit(store)
        self.supervisor = supervisor or Supervisor(stop)
        self._timer = self.supervisor.start("timers", self._run_timers)
        self.metrics.count_in_flight(lambda: len(self._active))

    # -- entry points -----------------------------------------------------------------------
    def submit(self, runs: list[Run], unsure: Collection[str] = ()) -> None:
        """Fresh decisions: write each one's history line, then POST it. The runs named in `unsure`
        may have been posted by a process whose record of them is lost: they are looked up first."""
        self._set_active(runs)
        for run in runs:
            look = run.run_id in unsure and self.taggable(run, self.clients[run.server])
            self._start(_Fire(run, look, True, self.retry_min))

    def resume(self, run: Run, posting_after: float = 0.0, *, post: bool = True) -> None:
        """A run left open by an earlier process, or by a step that failed. Raises OSError, taking
        nothing on, if the run's history cannot be read. A run left `posting` is looked up after
        `posting_after` seconds: a replica that held the lease before may still be sending it.
        Without `post`, the run is only looked up: followed if Jenkins has it, else abandoned."""
        fire = None
        if not post:
            fire = _Fire(run, True, False, self.retry_min, post=False)
        elif run.status is RunStatus.DECIDED:  # killed before the POST, maybe before the history line too
            fire = _Fire(run, False, not self.history.has(run), self.retry_min)
        elif run.status is RunStatus.POSTING:
            fire = _Fire(run, True, False, self.retry_min)
        self._set_active([run])
        if fire is None:
            self._later(0.0, _Look(run, self.poll_min))
        elif fire.search_first and posting_after:
            self._later(posting_after, fire)
        else:
            self._start(fire)

    def replace(self, runs: list[Run]) -> None:
        """Cancel queued runs and stop running builds (`concurrency: replace`); their follow-up records it."""
        for run in runs:
            client = self.clients[run.server]
            log = self._log(run)
            try:
                if run.status is RunStatus.QUEUED and run.queue_url:
                    client.cancel(run.queue_url)
                elif run.status is RunStatus.BUILDING and run.build_url:
                    client.stop_build(run.build_url)
                else:
                    continue
                log.info("run_replaced", status=run.status)
            except JenkinsError as e:
                log.warning("replace_failed", error=str(e))

    def supersede(self, run: Run, reason: str) -> None:
        """A refused run that will not be posted again: its spec changed, went, or its tick is too late."""
        self._finish(run, RunStatus.FAILED, reason=reason)
        self._log(run).warning("fire_superseded", reason=reason)

    def active(self) -> list[Run]:
        with self._cv:
            return list(self._active.values())

    def wait_idle(self, timeout: float | None = None, *, posted_only: bool = False) -> bool:
        """Wait until no run is open (or, with posted_only, until none is waiting to be POSTed)."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def done() -> bool:
            return not (self._unposted if posted_only else self._active)

        with self._cv:
            while not done():
                remaining = None if deadline is None else deadline - time.monotonic()
                if (remaining is not None and remaining <= 0) or self.stop.is_set():
                    return done()
                self._cv.wait(0.1 if remaining is None else min(remaining, 0.1))
            return True

    def shutdown(self) -> list[Run]:
        """Stop: no new step starts, steps under way end; runs still open stay open in the store and
        resume on the next start."""
        self.stop.set()
        with self._timers_cv:
            self._timers_cv.notify_all()
        self._timer.join(timeout=5)
        for lanes in self._lanes.values():
            lanes.shutdown(cancel=True)
        return self.active()

    def use_clients(self, clients: Mapping[str, Client]) -> list[Client]:
        """The servers of a reloaded config: each one's next request goes through its new client (a
        rotated token, say); a server no longer configured keeps its client, so its open runs finish.
        Returns the clients replaced, for the caller to close."""
        for name, client in clients.items():
            if name not in self._lanes:
                self._lanes[name] = self._lanes_for(name, client)
            else:  # the server's pace as the config now says; its workers stay
                self._lanes[name].rate, self._lanes[name].max_queued = client.server.rate, client.server.max_queued
        replaced = [self.clients[name] for name in clients if name in self.clients]
        self.clients = {**self.clients, **clients}
        return replaced

    def _lanes_for(self, name: str, client: Client) -> Lanes:
        """A server's lanes; they ask its current client (a reload may replace it) for the queue and holds."""
        return Lanes(name, client.server.concurrency, rate=client.server.rate, max_queued=client.server.max_queued,
                     queue_length=lambda: self.clients[name].queue_length(),
                     hold_until=lambda: self.clients[name].hold_until)

    def backlog(self) -> dict[str, Backlog]:
        """What waits for each server: POSTs (one-shots, ticks) and follow-ups, and why POSTs are held."""
        return {name: lanes.backlog() for name, lanes in self._lanes.items()}

    # -- scheduling -------------------------------------------------------------------------
    def _start(self, fire: _Fire) -> None:
        self._submit(fire.run, self._fire, fire)

    def _submit(self, run: Run, step: Callable[..., None], *args: Any) -> None:
        if self.stop.is_set():
            return  # the run stays open in the store, for the next start
        lane = Lane.FOLLOW if step != self._fire else Lane.TICKS if run.fire_key.startswith("@") else Lane.CHANGES
        with contextlib.suppress(RuntimeError):  # the lanes shut down meanwhile: the same
            self._lanes[run.server].put(lane, self._guarded, step, run, *args)

    def _later(self, delay: float, entry: _Look | _Fire) -> None:
        with self._timers_cv:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), entry))
            if self._timers[0][2] is entry:
                self._timers_cv.notify_all()

    def _run_timers(self) -> None:
        """Hand each waiting step to its pool when it is due; sleeps in between."""
        while not self.stop.is_set():
            with self._timers_cv:
                now = time.monotonic()
                if not self._timers or self._timers[0][0] > now:
                    self._timers_cv.wait(None if not self._timers else self._timers[0][0] - now)
                    continue
                fires: list[_Fire] = []
                looks: dict[tuple[str, str], list[_Look]] = {}
                while self._timers and self._timers[0][0] <= now + GROUP_WINDOW:
                    _, _, entry = heapq.heappop(self._timers)
                    if isinstance(entry, _Fire):
                        fires.append(entry)
                    else:
                        looks.setdefault((entry.run.server, entry.run.job), []).append(entry)
            for fire in fires:
                self._start(fire)
            for group in looks.values():
                if len(group) == 1:
                    self._submit(group[0].run, self._check, group[0].interval)
                else:
                    self._submit(group[0].run, self._check_group, group)

    # -- bookkeeping ------------------------------------------------------------------------
    def _set_active(self, runs: list[Run]) -> None:
        with self._cv:
            for run in runs:
                self._track(run)
            self._cv.notify_all()

    def _track(self, run: Run) -> None:
        if run.is_open:
            self._active[run.run_id] = run
        else:
            self._active.pop(run.run_id, None)
        if run.status in (RunStatus.DECIDED, RunStatus.POSTING):
            self._unposted.add(run.run_id)
        else:
            self._unposted.discard(run.run_id)

    def _forget(self, run: Run) -> None:
        with self._cv:
            self._active.pop(run.run_id, None)
            self._unposted.discard(run.run_id)
            self._cv.notify_all()

    def _update(self, run: Run, durable: bool = False, **changes: Any) -> Run:
        run = self._commits.write(run, changes, durable)
        with self._cv:
            self._track(run)
            if not self._unposted or not self._active:  # what wait_idle waits for: not on every step
                self._cv.notify_all()
        return run

    def _log(self, run: Run) -> Any:
        return logs.get(trigger=run.trigger, run_id=run.run_id, job=run.job, server=run.server)

    def _guarded(self, step: Callable[..., None], run: Run, *args: Any) -> None:
        """A step that fails unexpectedly leaves its run open in the store, to be taken up again by the
        daemon's next full pass."""
        try:
            step(run, *args)
        except Exception as e:
            log = self._log(run)
            if isinstance(e, StateError):
                self.metrics.state_errors.inc()
                log.error("state_write_failed", error=str(e))
            elif isinstance(e, OSError):  # the history: a full disk, a read-only volume
                log.error("history_write_failed", error=str(e))
            else:
                log.exception("run_step_crashed", exc_info=e)
            self._forget(run)

    def _finish(self, run: Run, status: RunStatus, *, recorded: dict[str, Any] | None = None, **fields: Any) -> Run:
        """Close a run; `recorded` goes on its history line only (what the build ran with)."""
        now = self.clock()
        reason = fields.pop("reason", None)
        run = self._update(run, status=status, finished_at=now, last_error=reason, **fields)
        outcome = (run.result or "unknown").lower() if status is RunStatus.COMPLETED else status
        self.metrics.fires.labels(run.server, run.job, outcome).inc()
        self.history.append(run, status, now, reason=reason, result=run.result, number=run.build_number,
                            url=run.build_url, duration_ms=run.duration_ms, **(recorded or {}))
        if self.finished is not None:
            self.finished(run)
        return run

    @staticmethod
    def taggable(run: Run, client: Client) -> bool:
        return bool(run.tag_param) or bool(client.server.job_token)

    def _find(self, client: Client, run: Run, queue_id: int | None = None) -> Found | None:
        """The one lookup of a run in Jenkins (after a crash, a takeover, on a fresh pod, for a vanished
        queue item): by its tag and queue id, among every build numbered from the one it recorded
        before its POST."""
        return client.find(run.job, run_id=run.run_id if self.taggable(run, client) else None,
                           tag_param=run.tag_param, queue_id=queue_id, since=run.next_build)

    def _next_build(self, client: Client, run: Run) -> int | None:
        """A lower bound of the number Jenkins will give this run's build, for the posting mark: the
        job's `nextBuildNumber` read now or, in a burst, a few seconds ago (numbers only grow, so an
        older one bounds too, only less tightly). None when the job cannot be read: the POST says why."""
        if run.next_build is not None:
            return run.next_build  # an earlier attempt's: lower, and it bounds that attempt too
        key = (run.server, run.job)
        seen = self._next_builds.get(key)
        if seen is not None and time.monotonic() - seen[0] < BOUND_FRESH:
            return seen[1]
        try:
            number = client.next_build_number(run.job)
        except JenkinsRefused:
            return None
        except (KeyError, TypeError, ValueError):
            return None
        self._next_builds[key] = (time.monotonic(), number)
        return number

    # -- firing -----------------------------------------------------------------------------
    def _fire(self, run: Run, fire: _Fire) -> None:
        """One attempt: a lookup first if an earlier POST may have arrived, then the POST. The run's
        `decided` history line is written first, its posting mark (durable: a POST may follow, and it
        carries the job's next build number, read before) just before the POST."""
        if self.stop.is_set():
            return
        client = self.clients[run.server]
        log = self._log(run)
        if fire.search_first:
            if not self.taggable(run, client):
                if fire.record:
                    self.history.decided(run, run.decided_at)
                self._unknown(client, run, log)
                return
            try:
                found = self._find(client, run)
            except JenkinsRefused as e:
                if e.status != 404:  # 401, 403, a login redirect, TLS: asking again will not help
                    if fire.record:  # the refusal is of a decision: history says what was decided first
                        self.history.decided(run, run.decided_at)
                        fire.record = False
                    self._refused(run, e, log, lookup=True)
                    return
                found = None  # the job's own URL says there is no such job: nothing of it was built
            except JenkinsError as e:
                self._retry(fire, e)
                return
            if found is not None:
                if fire.record:
                    self.history.decided(run, run.decided_at)
                    fire.record = False
                self._adopt(run, found, log)
                return
            if not fire.post:
                self._finish(run, RunStatus.ABANDONED, reason="rebuilt from history, and Jenkins has no build or "
                             "queue item carrying its run id: not posted (history is evidence, never an instruction)")
                log.warning("run_abandoned", reason="rebuilt request not found in Jenkins")
                return
            fire.search_first = False
        try:
            next_build = self._next_build(client, run)
        except JenkinsError as e:
            self._retry(fire, e)
            return
        if fire.record:
            self.history.decided(replace(run, next_build=next_build), run.decided_at)
            fire.record = False
        run = fire.run = self._update(run, True, status=RunStatus.POSTING, attempts=run.attempts + 1,
                                      next_build=next_build)
        try:
            accepted = client.trigger(run.job, run.parameters, run.cause, self.may_post)
        except Withheld as e:  # the next leader looks the run up and posts it
            log.warning("post_withheld", reason=str(e))
            return
        except (JenkinsRefused, JenkinsServerError, JenkinsUnavailable) as e:
            if sent_late():
                self._sent_late(log, error=str(e))
            self._not_accepted(client, fire, e, log)
            return
        if accepted.late:
            self._sent_late(log, queue_url=accepted.queue_url)
        run = self._queued(run, accepted.queue_url)
        self.metrics.fire_latency.observe(max(0.0, (run.posted_at or 0.0) - run.decided_at))
        log.info("fire_posted", queue_url=accepted.queue_url, attempts=run.attempts,
                 **({"joined": "an identical request already waiting"} if accepted.joined else {}))
        self._later(self._first_look(), _Look(run, self.poll_min))

    def _not_accepted(self, client: Client, fire: _Fire, error: JenkinsError, log: Any) -> None:
        """A POST Jenkins refused, failed or did not answer: refused for good, or tried again (after a
        lookup first, where Jenkins may have queued it)."""
        run = fire.run
        if isinstance(error, JenkinsRefused):
            self._refused(run, error, log)
        elif isinstance(error, JenkinsServerError):
            refusal = self._explain(client, fire, error)
            if refusal is not None:
                self._refused(run, refusal, log)
                return
            fire.search_first = self.taggable(run, client)  # Jenkins may fail after queueing it
            self._retry(fire, error)
        elif isinstance(error, JenkinsUnavailable):
            fire.search_first = error.maybe_received and self.taggable(run, client)
            self._retry(fire, error)

    def _sent_late(self, log: Any, **fields: Any) -> None:
        self.metrics.sent_late.inc()
        log.error("fire_sent_late", **fields,
                  reason="this replica's lease may have lapsed while the POST was being written (a stall right "
                  "after its last check): the next leader may post this run too; if it did, Jenkins has two "
                  "builds of it")

    def _unknown(self, client: Client, run: Run, log: Any) -> None:
        """A run that may have been posted and carries no tag Jenkins keeps: nothing can tell whether
        it was built, so it is recorded as unknown, said why (and which builds may be it), and not
        posted again."""
        candidates = ""
        if run.next_build is not None:
            with contextlib.suppress(JenkinsError, KeyError, TypeError, ValueError):
                last = client.next_build_number(run.job) - 1
                candidates = (f"; if it was, it is one of builds #{run.next_build}–#{last} of {run.job}"
                              if last >= run.next_build else f"; no build of {run.job} has started since")
        reason = ("the reconciler stopped while posting, and the run carries no tag Jenkins keeps (no job token, "
                  f"no run_id_parameter): Jenkins may or may not have built it{candidates}. Not posted again: "
                  "bump `run` in the spec to fire it again")
        self._finish(run, RunStatus.UNKNOWN, reason=reason)
        log.error("run_unknown", reason=reason)

    def _refused(self, run: Run, error: JenkinsRefused, log: Any, *, lookup: bool = False) -> None:
        """Jenkins said no before any queue item existed (401, 403, 404, a redirect to a login page, TLS):
        nothing was accepted, so nothing can have been built. The revision is not done: the run waits,
        longer after each refusal, and the daemon posts it again when it is due, at its next start, or on
        `reconciler retry`. What to fix is in the error. A refused `lookup` (the search before a POST) is
        the same: retrying it forever would record nothing and show nothing; the healed run looks itself
        up again before it posts."""
        attempts = run.attempts  # a POST counted itself before it was sent
        if lookup:
            error = JenkinsRefused(f"looking the run up before posting it: {error}", error.status)
            attempts += 1  # counted too, or its wait would never grow past refused_min
        now = self.clock()
        delay = min(self.refused_min * 2 ** max(attempts - 1, 0), self.refused_max)
        run = self._update(run, status=RunStatus.REFUSED, last_error=str(error), retry_at=now + delay,
                           attempts=attempts)
        self.metrics.fires.labels(run.server, run.job, "refused").inc()
        self.history.append(run, "refused", now, reason=str(error), status=error.status, retry_at=iso(now + delay))
        log.error("fire_refused", error=str(error), status=error.status, retry_in=round(delay))
        self.on_refused()

    def _explain(self, client: Client, fire: _Fire, error: JenkinsServerError) -> JenkinsRefused | None:
        """Jenkins' 500 says no more than a Logging ID. An illegal choice, a repeated parameter, a job that is
        not parameterized (before 2.524) are refusals the job's definitions reveal: refused at once, as
        nothing was queued. Otherwise it may be an outage: None, until 500s have lasted `server_error_for`."""
        run = fire.run
        try:
            reason = explain_500(run.job, run.parameters, client.definition(run.job), client.version)
        except JenkinsError:
            reason = None  # the definitions cannot be read either: more likely an outage
        if reason is not None:
            return JenkinsRefused(f"triggering {run.job}: {reason}", 500)
        now = time.monotonic()
        fire.server_errors_since = fire.server_errors_since or now
        if now - fire.server_errors_since < self.server_error_for:
            return None
        logged = f"Logging ID={error.logging_id}" if error.logging_id else "no Logging ID on its page"
        lasted = round(now - fire.server_errors_since)
        return JenkinsRefused(f"triggering {run.job}: Jenkins answered 500 for {lasted} s "
                              f"and the job's parameter definitions do not explain it; its log has the exception "
                              f"({logged}): fix what it names, then `reconciler retry {run.trigger}`", 500)

    def _retry(self, fire: _Fire, error: JenkinsError) -> None:
        """Record why the attempt failed and attempt again after a growing delay. A run that may have
        reached Jenkins stays `posting` until a lookup says otherwise: after a kill, it is looked up first."""
        maybe_posted = fire.search_first or (isinstance(error, JenkinsUnavailable) and error.maybe_received)
        run = fire.run = self._update(fire.run, status=RunStatus.POSTING if maybe_posted else RunStatus.DECIDED,
                                      last_error=str(error))
        self._log(run).warning("fire_retrying", error=str(error), attempts=run.attempts,
                               retry_in=round(fire.delay, 1))
        delay, fire.delay = fire.delay, min(fire.delay * 2, self.retry_max)
        self._later(delay, fire)

    def _queued(self, run: Run, queue_url: str) -> Run:
        now = self.clock()
        run = self._update(run, status=RunStatus.QUEUED, queue_url=queue_url, posted_at=run.posted_at or now,
                           last_error=None)
        self.history.append(run, "queued", now, queue_url=queue_url)
        return run

    def _started(self, run: Run, number: int | None, url: str | None) -> Run:
        now = self.clock()
        run = self._update(run, status=RunStatus.BUILDING, build_number=number, build_url=url,
                           posted_at=run.posted_at or now)
        self.history.append(run, "started", now, number=number, url=url)
        return run

    def _adopt(self, run: Run, found: Found, log: Any) -> None:
        if found.build_url:
            run = self._started(run, found.build_number, found.build_url)
        else:
            run = self._queued(run, found.queue_url or "")
        log.info("fire_found", queue_url=found.queue_url, build_url=found.build_url)
        self._later(0.0, _Look(run, self.poll_min))

    # -- following --------------------------------------------------------------------------
    def _first_look(self) -> float:
        """In a burst, look at outcomes only once the burst is posted: Jenkins serves the POSTs first,
        and the looks, due together, then share reads of each job's builds."""
        return self.poll_max if self._unposted else self.poll_min

    def _check_group(self, run: Run, group: list[_Look]) -> None:
        """Runs of one job due together: one read of the job's recent builds answers most of them
        (started: found by queue id; finished: by number); each checks alone only what it lacks."""
        try:  # a burst of one job's runs: read as many of its builds as there are runs to look at
            recent = self.clients[run.server].recent_builds(run.job, min(max(100, 2 * len(group)), MAX_RECENT))
        except (JenkinsError, ValueError, KeyError, TypeError):
            recent = None  # each run's own check retries, and says why
        for look in group:
            self._guarded(self._check, look.run, look.interval, recent)

    def _check(self, run: Run, interval: float, recent: RecentBuilds | None = None) -> None:
        client = self.clients[run.server]
        log = self._log(run)
        next_interval = min(interval * 2, self.poll_max)
        try:
            if run.status is RunStatus.QUEUED:
                seen = recent.by_queue_id.get(_queue_id(run)) if recent else None
                if seen is not None:
                    run = self._started(run, seen.number, seen.url)
                    log.info("build_started", number=seen.number, url=seen.url)
                else:
                    run = self._check_queue(client, run, log)
                if run.status is RunStatus.QUEUED:
                    self._later(interval, _Look(run, next_interval))
                    return
            if run.status is RunStatus.BUILDING:
                build = (recent.by_number.get(run.build_number or 0) if recent else None) or \
                    client.build(run.build_url or "")
                self._check_note(client, run, build.notes, log)
                self._check_ran_with(run, build, log)
                if build.building:  # a result set while building may still get worse (Run.setResult)
                    self._later(interval, _Look(run, next_interval))
                    return
                run = self._finish(run, RunStatus.COMPLETED, result=build.result, duration_ms=build.duration_ms,
                                   recorded=_ran_with(run, build))
                log.log(20 if build.result == "SUCCESS" else 30, "build_completed", result=build.result,
                        number=build.number, url=build.url, duration_ms=build.duration_ms)
        except JenkinsUnavailable as e:
            log.warning("follow_retrying", error=str(e))
            self._later(next_interval, _Look(run, next_interval))
        except JenkinsRefused as e:
            if e.status == 404:
                self._finish(run, RunStatus.LOST, reason=f"the build vanished from Jenkins: {e}")
                log.error("run_lost", error=str(e))
            else:
                log.error("follow_refused", error=str(e))
                self._later(self.poll_max, _Look(run, self.poll_max))

    def _check_ran_with(self, run: Run, build: Any, log: Any) -> None:
        """Say once, as soon as the build is seen, when Jenkins silently dropped a parameter the job does
        not define (SECURITY-170) or ran with another value; the `completed` line records it."""
        if run.run_id in self._read_back:
            return
        self._read_back.add(run.run_id)
        found = _ran_with(run, build)
        if "ignored" in found or "changed" in found:
            log.warning("parameter_ignored", dropped=found.get("ignored", []), changed=found.get("changed", {}),
                        advice="the job does not define these parameters (Jenkins drops them) or ran with "
                               "other values; `reconciler check` compares specs with the job's definitions")

    def _check_note(self, client: Client, run: Run, notes: tuple[str, ...], log: Any) -> None:
        """Jenkins keeps the cause note only for jobs with a build token; say so once if it was dropped."""
        if not client.server.job_token or run.tag_param or run.trigger in self._note_warned:
            return
        if not any(run.run_id in note for note in notes):
            self._note_warned.add(run.trigger)
            log.warning("cause_note_dropped", advice="the job has no build token ('Trigger builds remotely'), "
                        "so Jenkins ignored token and cause; this trigger's runs cannot be found by run id after "
                        "a crash. Configure the job's token, or set run_id_parameter in the spec")

    def _check_queue(self, client: Client, run: Run, log: Any) -> Run:
        state = client.queue_item(run.queue_url or "", run.job)
        if state.kind == "left":
            run = self._started(run, state.build_number, state.build_url)
            log.info("build_started", number=state.build_number, url=state.build_url)
        elif state.kind == "cancelled":
            run = self._finish(run, RunStatus.CANCELLED, reason="the queue item was cancelled in Jenkins")
            log.warning("run_cancelled")
        elif state.kind == "gone":
            found = self._find(client, run, queue_id=_queue_id(run))
            if found is not None and found.build_url:
                run = self._started(run, found.build_number, found.build_url)
                log.info("build_started", number=found.build_number, url=found.build_url, via="search")
            elif found is not None and found.queue_url:
                run = self._update(run, queue_url=found.queue_url)
            elif self.taggable(run, client) and run.attempts <= REPOSTS:
                # Its tag is in no queue item and no recent build: Jenkins lost it (a restart forgets the
                # queue) and it never ran. Posting it again is the one way it runs; bounded, logged.
                run = self._update(run, status=RunStatus.DECIDED, queue_url=None,
                                   last_error="the queue item vanished and no build carries the run id")
                log.warning("fire_reposted", reason="queue item vanished, no build carries the run id",
                            attempts=run.attempts)
                self._start(_Fire(run, False, False, self.retry_min))
            else:
                run = self._finish(run, RunStatus.LOST,
                                   reason="the queue item vanished (Jenkins restarted?) and no build "
                                                       "carries its queue id or run id")
                log.error("run_lost", reason="queue item vanished")
        return run
