"""Carrying out runs: POST them, follow them through the queue to a result, record each step.

Every step is written to the state store before the next one is attempted, so a process killed
at any line resumes from what the store says (see README, "What is guaranteed"):

- `decided`: no POST has been sent. Resume: POST.
- `posting`: a POST may have reached Jenkins. Resume: look the run up in Jenkins by its tag (the
  run id in the `cause` note, sent with the job token, or in `run_id_parameter`); found → follow
  it; not found → POST. Without a tag there is no way to tell, so the run is recorded `lost`
  rather than risk a second build.
- `queued` / `building`: follow the queue item, then the build.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from . import logs
from .errors import JenkinsError, JenkinsRefused, JenkinsUnavailable, StateError
from .history import History
from .jenkins import Client, Found, Poster, RecentBuilds
from .metrics import Metrics
from .state import Run, Store

FOLLOWERS = 8
"""Threads that read queue items and builds. Reads are short and grouped by job (one answers many):
more threads would only take turns on the GIL with the loop that POSTs."""
GROUP_WINDOW = 0.25
"""Follow-ups due within this many seconds of each other are made together, one read per job."""


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


class _Slots:
    """A server's POSTs in flight, at most its `concurrency`. A fire waiting for a slot is an entry in a
    queue and becomes a task only once it holds one: in a burst of a thousand, a task each parked on a
    semaphore cost ten times what a queue entry does."""

    def __init__(self, limit: int):
        self.free = limit
        self.waiting: deque[Callable[[], None]] = deque()

    def admit(self, start: Callable[[], None]) -> None:
        """Call `start` holding a slot: now, or when one is released."""
        if self.free:
            self.free -= 1
            start()
        else:
            self.waiting.append(start)

    def release(self) -> None:
        if self.waiting:
            self.waiting.popleft()()
        else:
            self.free += 1


class Executor:
    """Fires run as tasks on one asyncio loop, on its own thread: POSTs in flight wait on sockets,
    not on threads taking turns on the GIL. Following (reads of queue items and builds) runs on a
    few threads, handed work by the tracker when each check is due."""

    def __init__(self, store: Store, history: History, clients: Mapping[str, Client], *,
                 stop: threading.Event, clock: Callable[[], float] = time.time,
                 poll_min: float = 0.5, poll_max: float = 5.0, retry_min: float = 1.0, retry_max: float = 300.0,
                 metrics: Metrics | None = None):
        self.store = store
        self.metrics = metrics or Metrics()
        self.history = history
        self.clients = clients
        self.stop = stop
        self.clock = clock
        self.poll_min, self.poll_max = poll_min, poll_max
        self.retry_min, self.retry_max = retry_min, retry_max
        self._note_warned: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=FOLLOWERS, thread_name_prefix="follow")
        self._loop = asyncio.new_event_loop()
        self._firing = threading.Thread(target=self._loop.run_forever, name="fire", daemon=True)
        self._firing.start()
        self._posters: dict[str, Poster] = {}
        self._incoming: list[_Fire] = []
        self._fires: set[asyncio.Task[None]] = set()
        self._steps: list[tuple[Run, dict[str, Any], bool, asyncio.Future[Run]]] = []
        self._slots = {name: _Slots(c.server.concurrency) for name, c in clients.items()}
        self._resting: set[asyncio.Future[None]] = set()
        """Fires waiting out a retry delay, each on a timer; woken early only when the executor stops."""
        self._due: list[tuple[float, int, Run, float]] = []
        self._seq = itertools.count()
        lock = threading.RLock()
        self._cv = threading.Condition(lock)
        self._due_changed = threading.Condition(lock)
        """Wakes the tracker only when its next check moved earlier, not on every step of every run."""
        self._active: dict[str, Run] = {}
        self._tracker = threading.Thread(target=self._track, name="tracker", daemon=True)
        self._tracker.start()
        self.metrics.count_in_flight(lambda: len(self._active))

    # -- entry points -----------------------------------------------------------------------
    def submit(self, runs: list[Run]) -> None:
        """Fresh decisions: write each one's history line, then POST it. Handed over together, a
        burst wakes the loop once instead of taking turns with it on the GIL for every run."""
        if not runs:
            return
        self._set_active(runs)
        self._spawn([_Fire(run, False, True, self.retry_min) for run in runs])

    def resume(self, run: Run) -> None:
        """A run left open by an earlier process, or by a step that failed. Raises OSError, taking
        nothing on, if the run's history cannot be read."""
        fire = None
        if run.status == "decided":  # killed before the POST, maybe before the history line too
            fire = _Fire(run, False, not self.history.has(run), self.retry_min)
        elif run.status == "posting":
            fire = _Fire(run, True, False, self.retry_min)
        self._set_active([run])
        if fire is None:
            self._follow_in(run, 0.0, self.poll_min)
        else:
            self._spawn([fire])

    def replace(self, runs: list[Run]) -> None:
        """Cancel queued runs and stop running builds (`concurrency: replace`); their follow-up records it."""
        for run in runs:
            client = self.clients[run.server]
            log = self._log(run)
            try:
                if run.status == "queued" and run.queue_url:
                    client.cancel(run.queue_url)
                elif run.status == "building" and run.build_url:
                    client.stop_build(run.build_url)
                else:
                    continue
                log.info("run_replaced", status=run.status)
            except JenkinsError as e:
                log.warning("replace_failed", error=str(e))

    def active(self) -> list[Run]:
        with self._cv:
            return list(self._active.values())

    def wait_idle(self, timeout: float | None = None, *, posted_only: bool = False) -> bool:
        """Wait until no run is open (or, with posted_only, until none is waiting to be POSTed)."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def done() -> bool:
            runs = self._active.values()
            return not any(r.status in ("decided", "posting") for r in runs) if posted_only else not runs

        with self._cv:
            while not done():
                remaining = None if deadline is None else deadline - time.monotonic()
                if (remaining is not None and remaining <= 0) or self.stop.is_set():
                    return done()
                self._cv.wait(0.1 if remaining is None else min(remaining, 0.1))
            return True

    def shutdown(self) -> list[Run]:
        """Stop following; runs still open stay open in the store and resume on the next start."""
        self.stop.set()
        with self._cv:
            self._cv.notify_all()
            self._due_changed.notify()
        if not self._loop.is_closed():  # shutting down twice is harmless
            asyncio.run_coroutine_threadsafe(self._drain(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._firing.join()
            self._loop.close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._tracker.join(timeout=5)
        return self.active()

    # -- bookkeeping ------------------------------------------------------------------------
    def _set_active(self, runs: list[Run]) -> None:
        with self._cv:
            self._active.update((run.run_id, run) for run in runs)
            self._cv.notify_all()

    def _update(self, run: Run, durable: bool = False, **changes: Any) -> Run:
        return self._update_many([(run, changes)], durable)[0]

    def _update_many(self, steps: list[tuple[Run, dict[str, Any]]], durable: bool = False) -> list[Run]:
        runs = self.store.update_many(steps, durable=durable)
        with self._cv:
            for run in runs:
                if run.is_open:
                    self._active[run.run_id] = run
                else:
                    self._active.pop(run.run_id, None)
            self._cv.notify_all()
        return runs

    async def _step(self, run: Run, durable: bool = False, **changes: Any) -> Run:
        """Record a step from the loop. Steps asked for close together share one commit (fsynced if
        any of them must be): a commit blocks every POST in flight, and in a burst one commit per step
        was half the loop's time. Each step is still recorded before its caller goes on.

        The commit waits one more pass of the loop's ready queue: answers read in this pass wake
        their tasks only in the next, and those admit the next fires, whose posting marks join the
        same commit. A burst then takes a third fewer commits (`bench/`)."""
        recorded: asyncio.Future[Run] = self._loop.create_future()
        self._steps.append((run, changes, durable, recorded))
        if len(self._steps) == 1:
            self._loop.call_soon(self._loop.call_soon, self._commit_steps)
        return await recorded

    def _commit_steps(self) -> None:
        steps, self._steps = self._steps, []
        try:
            runs = self._update_many([(run, changes) for run, changes, _, _ in steps],
                                     any(durable for _, _, durable, _ in steps))
        except Exception as e:
            for *_, recorded in steps:
                recorded.set_exception(e)
            return
        for (*_, recorded), run in zip(steps, runs, strict=True):
            recorded.set_result(run)

    def _log(self, run: Run) -> Any:
        return logs.get(trigger=run.trigger, run_id=run.run_id, job=run.job, server=run.server)

    def _guarded(self, fn: Callable[..., None], run: Run, *args: Any) -> None:
        """A step that fails unexpectedly leaves its run open in the store, to be taken up again by the
        daemon's next full pass."""
        try:
            fn(run, *args)
        except Exception as e:
            self._crashed(run, e)

    def _spawn(self, fires: list[_Fire]) -> None:
        """Hand fires to the loop, waking it only if it is not already due to take some."""
        with self._cv:
            first = not self._incoming
            self._incoming.extend(fires)
        if first:
            self._loop.call_soon_threadsafe(self._start_incoming)

    def _start_incoming(self) -> None:
        with self._cv:
            incoming, self._incoming = self._incoming, []
        for fire in incoming:
            self._attempt(fire)

    def _attempt(self, fire: _Fire) -> None:
        """Start a fire's next attempt: a lookup needs no slot, a POST waits for one."""
        if self.stop.is_set():
            return  # the run stays open in the store, for the next start
        if fire.search_first:
            self._start(fire.run, self._search(fire))
        else:
            self._slots[fire.run.server].admit(lambda: self._start(fire.run, self._post(fire)))

    def _start(self, run: Run, attempt: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(self._guarded_attempt(run, attempt))
        self._fires.add(task)
        task.add_done_callback(self._fires.discard)

    async def _guarded_attempt(self, run: Run, attempt: Coroutine[Any, Any, None]) -> None:
        try:
            await attempt
        except Exception as e:
            self._crashed(run, e)

    def _crashed(self, run: Run, e: Exception) -> None:
        log = self._log(run)
        if isinstance(e, StateError):
            self.metrics.state_errors.inc()
            log.error("state_write_failed", error=str(e))
        elif isinstance(e, OSError):  # the history: a full disk, a read-only volume
            log.error("history_write_failed", error=str(e))
        else:
            log.exception("run_step_crashed", exc_info=e)
        with self._cv:
            self._active.pop(run.run_id, None)
            self._cv.notify_all()

    async def _drain(self) -> None:
        """Let the fires in flight end (on stop, none starts a POST or a retry), then close the posters."""
        self._start_incoming()  # handed over as the executor stopped: they see `stop` and end
        for slots in self._slots.values():
            slots.waiting.clear()  # never started: they stay open in the store, for the next start
        for rested in self._resting:
            if not rested.done():
                rested.set_result(None)
        if self._fires:
            await asyncio.wait(set(self._fires))
        for poster in self._posters.values():
            await poster.close()

    def _finish(self, run: Run, status: str, **fields: Any) -> Run:
        now = self.clock()
        reason = fields.pop("reason", None)
        run = self._update(run, status=status, finished_at=now, last_error=reason, **fields)
        outcome = (run.result or "unknown").lower() if status == "completed" else status
        self.metrics.fires.labels(run.server, run.job, outcome).inc()
        self.history.append(run, status, now, reason=reason, result=run.result, number=run.build_number,
                            url=run.build_url, duration_ms=run.duration_ms)
        return run

    @staticmethod
    def taggable(run: Run, client: Client) -> bool:
        return bool(run.tag_param) or bool(client.server.job_token)

    def _find(self, client: Client, run: Run, queue_id: int | None = None) -> Found | None:
        return client.find(run.job, run_id=run.run_id if self.taggable(run, client) else None,
                           tag_param=run.tag_param, queue_id=queue_id)

    # -- firing -----------------------------------------------------------------------------
    async def _search(self, fire: _Fire) -> None:
        """Before POSTing again a run whose POST may have arrived, look it up in Jenkins by its tag."""
        run = fire.run
        client = self.clients[run.server]
        if not self.taggable(run, client):
            self._finish(run, "lost", reason="the reconciler stopped while posting and the run carries no tag to "
                         "look it up by (no job token, no run_id_parameter); Jenkins may or may not have built it. "
                         "Bump `run` in the spec to fire it again")
            self._log(run).error("run_lost", reason="stopped while posting, untagged")
            return
        try:
            found = await self._loop.run_in_executor(self._pool, self._find, client, run)
        except JenkinsError as e:
            await self._retry(fire, e)
            return
        if found is not None:
            await self._adopt(run, found, self._log(run))
            return
        fire.search_first = False
        self._attempt(fire)

    async def _post(self, fire: _Fire) -> None:
        """One POST, holding one of the server's slots. The run's `decided` history line is written here,
        just before the posting mark: in a burst, lines are written as fast as POSTs go out, not all up front.
        The slot is released once Jenkins answers: the next fire's posting mark then shares a commit with
        this run's `queued` step instead of waiting for it."""
        run = fire.run
        client = self.clients[run.server]
        try:
            if self.stop.is_set():
                return
            if fire.record:
                self.history.decided(run, run.decided_at)
                fire.record = False
            # The one step besides the decision that must survive a power loss: a POST may follow.
            run = fire.run = await self._step(run, True, status="posting", attempts=run.attempts + 1)
            poster = self._posters.get(run.server)
            if poster is None:  # made on the loop, which its connections belong to
                poster = self._posters[run.server] = Poster(client)
            error: JenkinsError | None = None
            try:
                queue_url = await poster.trigger(run.job, run.parameters, run.cause)
            except (JenkinsRefused, JenkinsUnavailable) as e:
                error = e
        finally:
            self._slots[run.server].release()
        if isinstance(error, JenkinsRefused):
            self._finish(run, "failed", reason=str(error))
            self._log(run).error("fire_refused", error=str(error), status=error.status)
        elif isinstance(error, JenkinsUnavailable):
            fire.search_first = error.maybe_received and self.taggable(run, client)
            await self._retry(fire, error)
        else:
            run = await self._queued(run, queue_url)
            self.metrics.fire_latency.observe(max(0.0, (run.posted_at or 0.0) - run.decided_at))
            self._log(run).info("fire_posted", queue_url=queue_url, attempts=run.attempts)
            self._follow_in(run, self._first_look(), self.poll_min)

    async def _retry(self, fire: _Fire, error: JenkinsError) -> None:
        """Record why the attempt failed, wait holding no slot, and attempt again. A run that may have
        reached Jenkins stays `posting` until a lookup says otherwise: after a kill, it is looked up first."""
        maybe_posted = fire.search_first or (isinstance(error, JenkinsUnavailable) and error.maybe_received)
        run = fire.run = self._update(fire.run, status="posting" if maybe_posted else "decided",
                                      last_error=str(error))
        self._log(run).warning("fire_retrying", error=str(error), attempts=run.attempts,
                               retry_in=round(fire.delay, 1))
        if await self._rest(fire.delay):
            return
        fire.delay = min(fire.delay * 2, self.retry_max)
        self._attempt(fire)

    async def _rest(self, seconds: float) -> bool:
        """Wait out a retry delay; True if the executor stopped meanwhile. A timer, not a poll of
        `stop`: ten thousand runs waiting for Jenkins to come back polling ten times a second
        were a CPU's worth of wake-ups."""
        if self.stop.is_set():
            return True
        rested = self._loop.create_future()
        timer = self._loop.call_later(seconds, lambda: rested.done() or rested.set_result(None))
        self._resting.add(rested)
        try:
            await rested
        finally:
            timer.cancel()
            self._resting.discard(rested)
        return self.stop.is_set()

    async def _queued(self, run: Run, queue_url: str) -> Run:
        now = self.clock()
        run = await self._step(run, status="queued", queue_url=queue_url, posted_at=run.posted_at or now,
                               last_error=None)
        self.history.append(run, "queued", now, queue_url=queue_url)
        return run

    def _started(self, run: Run, number: int | None, url: str | None) -> Run:
        now = self.clock()
        run = self._update(run, status="building", build_number=number, build_url=url,
                           posted_at=run.posted_at or now)
        self.history.append(run, "started", now, number=number, url=url)
        return run

    async def _adopt(self, run: Run, found: Found, log: Any) -> None:
        if found.build_url:
            run = self._started(run, found.build_number, found.build_url)
        else:
            run = await self._queued(run, found.queue_url or "")
        log.info("fire_found", queue_url=found.queue_url, build_url=found.build_url)
        self._follow_in(run, 0.0, self.poll_min)

    # -- following --------------------------------------------------------------------------
    def _first_look(self) -> float:
        """In a burst, look at outcomes only once the burst is posted: Jenkins serves the POSTs first."""
        with self._cv:
            in_flight = len(self._active)
        return max(self.poll_min, min(in_flight * 0.003, self.poll_max))

    def _follow_in(self, run: Run, delay: float, interval: float) -> None:
        with self._cv:
            entry = (time.monotonic() + delay, next(self._seq), run, interval)
            heapq.heappush(self._due, entry)
            if self._due[0] is entry:
                self._due_changed.notify()

    def _track(self) -> None:
        """Hand each followed run to the pool when its next check is due; sleeps in between."""
        while not self.stop.is_set():
            with self._cv:
                now = time.monotonic()
                if not self._due or self._due[0][0] > now:
                    self._due_changed.wait(None if not self._due else self._due[0][0] - now)
                    continue
                groups: dict[tuple[str, str], list[tuple[Run, float]]] = {}
                while self._due and self._due[0][0] <= now + GROUP_WINDOW:
                    _, _, run, interval = heapq.heappop(self._due)
                    groups.setdefault((run.server, run.job), []).append((run, interval))
            try:
                for group in groups.values():
                    if len(group) == 1:
                        self._pool.submit(self._guarded, self._check, *group[0])
                    else:
                        self._pool.submit(self._check_group, group)
            except RuntimeError:  # pool shut down
                return

    def _check_group(self, group: list[tuple[Run, float]]) -> None:
        """Runs of one job due together: one read of the job's recent builds answers most of them
        (started: found by queue id; finished: by number); each checks alone only what it lacks."""
        run = group[0][0]
        try:
            recent = self.clients[run.server].recent_builds(run.job)
        except (JenkinsError, ValueError, KeyError, TypeError):
            recent = None  # each run's own check retries, and says why
        for run, interval in group:
            self._pool.submit(self._guarded, self._check, run, interval, recent)

    def _check(self, run: Run, interval: float, recent: RecentBuilds | None = None) -> None:
        client = self.clients[run.server]
        log = self._log(run)
        next_interval = min(interval * 2, self.poll_max)
        try:
            if run.status == "queued":
                seen = recent.by_queue_id.get(_queue_id(run)) if recent else None
                if seen is not None:
                    run = self._started(run, seen.number, seen.url)
                    log.info("build_started", number=seen.number, url=seen.url)
                else:
                    run = self._check_queue(client, run, log)
                if run.status == "queued":
                    self._follow_in(run, interval, next_interval)
                    return
            if run.status == "building":
                build = (recent.by_number.get(run.build_number or 0) if recent else None) or \
                    client.build(run.build_url or "")
                self._check_note(client, run, build.notes, log)
                if build.result is None:
                    self._follow_in(run, interval, next_interval)
                    return
                run = self._finish(run, "completed", result=build.result, duration_ms=build.duration_ms)
                log.info("build_completed", result=build.result, number=build.number, url=build.url,
                         duration_ms=build.duration_ms)
        except JenkinsUnavailable as e:
            log.warning("follow_retrying", error=str(e))
            self._follow_in(run, next_interval, next_interval)
        except JenkinsRefused as e:
            if e.status == 404:
                self._finish(run, "lost", reason=f"the build vanished from Jenkins: {e}")
                log.error("run_lost", error=str(e))
            else:
                log.error("follow_refused", error=str(e))
                self._follow_in(run, self.poll_max, self.poll_max)

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
            run = self._finish(run, "cancelled", reason="the queue item was cancelled in Jenkins")
            log.warning("run_cancelled")
        elif state.kind == "gone":
            found = self._find(client, run, queue_id=_queue_id(run))
            if found is not None and found.build_url:
                run = self._started(run, found.build_number, found.build_url)
                log.info("build_started", number=found.build_number, url=found.build_url, via="search")
            elif found is not None and found.queue_url:
                run = self._update(run, queue_url=found.queue_url)
            else:
                run = self._finish(run, "lost", reason="the queue item vanished (Jenkins restarted?) and no build "
                                                       "carries its queue id or run id")
                log.error("run_lost", reason="queue item vanished")
        return run
