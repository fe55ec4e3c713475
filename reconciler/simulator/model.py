"""The simulated Jenkins: jobs, the queue and builds, advanced lazily by a clock.

Nothing here runs on its own. Every read or write first calls ``advance()``, which replays,
in time order, whatever should have happened since the last call (quiet periods ending,
executors freeing up, builds finishing). The result is deterministic for a given clock and
needs no background thread, yet looks from the outside like a Jenkins that never stops.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RESULTS = ("SUCCESS", "UNSTABLE", "FAILURE", "NOT_BUILT", "ABORTED")

PARAM_CLASSES = {
    "string": ("hudson.model.StringParameterDefinition", "hudson.model.StringParameterValue"),
    "boolean": ("hudson.model.BooleanParameterDefinition", "hudson.model.BooleanParameterValue"),
    "choice": ("hudson.model.ChoiceParameterDefinition", "hudson.model.StringParameterValue"),
    "password": ("hudson.model.PasswordParameterDefinition", "hudson.model.PasswordParameterValue"),
}


class JenkinsError(Exception):
    """An error Jenkins reports with an HTTP status; the handler turns it into a response."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class ParamDef:
    name: str
    type: str = "string"
    default: Any = ""
    choices: tuple[str, ...] = ()
    description: str = ""

    def value_from(self, raw: str | None) -> Any:
        """Mirror ParameterDefinition.createValue: a missing value takes the default."""
        if self.type == "boolean":
            if raw is None:
                return bool(self.default)
            return raw.lower() in ("true", "on")
        if self.type == "choice":
            if raw is None:
                return self.choices[0] if self.choices else ""
            if raw not in self.choices:
                # ChoiceParameterDefinition.checkValue throws IllegalArgumentException: a 500.
                raise JenkinsError(500, f"Illegal choice for parameter {self.name}: {raw}")
            return raw
        return ("" if self.default is None else str(self.default)) if raw is None else raw

    def definition_json(self) -> dict[str, Any]:
        def_class, value_class = PARAM_CLASSES[self.type]
        default_value: dict[str, Any] | None = {"_class": value_class, "name": self.name}
        if self.default is None and self.type == "string":  # a definition without a default value
            default_value = None
        elif self.type != "password":
            default_value["value"] = self.value_from(None)
        out: dict[str, Any] = {
            "_class": def_class,
            "defaultParameterValue": default_value,
            "description": self.description,
            "name": self.name,
            "type": def_class.rsplit(".", 1)[1],
        }
        if self.type == "choice":
            out["choices"] = list(self.choices)
        return out


@dataclass
class JobDef:
    full_name: str
    parameters: tuple[ParamDef, ...] | None = None
    duration: float | None = 0.0
    """Seconds a build runs; None keeps it running until a test finishes or stops it."""
    results: tuple[str, ...] = ("SUCCESS",)
    """Results of successive builds, cycled."""
    token: str | None = None
    disabled: bool = False
    next_build_number: int = 1
    kind: str = "freestyle"
    """`freestyle` (hudson.model.FreeStyleProject) or `pipeline` (WorkflowJob)."""
    readers: tuple[str, ...] | None = None
    """Users who may see the job (its Item/Read); None: everyone who may read. To anyone else it is a 404."""
    concurrent: bool | None = None
    """Builds that may run at once; by default a FreeStyle job runs one at a time
    (AbstractProject.concurrentBuild is false) and a Pipeline job many (unless disableConcurrentBuilds)."""

    def param(self, name: str) -> ParamDef | None:
        return next((p for p in self.parameters or () if p.name == name), None)

    @property
    def runs_concurrently(self) -> bool:
        return self.kind == "pipeline" if self.concurrent is None else self.concurrent


@dataclass
class Build:
    job: JobDef
    number: int
    queue_id: int
    parameters: list[tuple[ParamDef, Any]]
    causes: list[dict[str, Any]]
    started: float
    result: str | None = None
    ends: float | None = None
    finished: float | None = None
    log: list[str] = field(default_factory=list)

    @property
    def building(self) -> bool:
        return self.result is None


@dataclass
class QueueItem:
    id: int
    job: JobDef
    parameters: list[tuple[ParamDef, Any]]
    causes: list[dict[str, Any]]
    in_queue_since: float
    ready_at: float
    state: str = "waiting"  # waiting → buildable → left
    buildable_since: float | None = None
    left_at: float | None = None
    cancelled: bool = False
    build: Build | None = None
    blocked_by: int | None = None
    """The running build of a job that does not run concurrently, which this item waits for."""


def _ms(t: float) -> int:
    return int(t * 1000)


class Jenkins:
    """All of a simulated instance's mutable state, guarded by one lock."""

    def __init__(
        self,
        jobs: list[JobDef],
        *,
        executors: int = 2,
        quiet_period: float = 5.0,
        left_item_ttl: float = 300.0,
        clock: Callable[[], float] = time.time,
    ):
        self.jobs = {j.full_name: j for j in jobs}
        self.executors = executors
        self.quiet_period = quiet_period
        self.left_item_ttl = left_item_ttl
        self.clock = clock
        self.lock = threading.RLock()
        self.queue: dict[int, QueueItem] = {}
        """Every item Jenkins still answers for: pending ones, and left ones until they are forgotten."""
        self._pending: dict[int, QueueItem] = {}
        self._left: deque[tuple[float, int]] = deque()
        self._running_builds: dict[tuple[str, int], Build] = {}
        self.builds: dict[str, dict[int, Build]] = {name: {} for name in self.jobs}
        self._ids = itertools.count(1)
        self._result_index: dict[str, int] = {}
        self._last = clock()

    # -- time -------------------------------------------------------------------------------
    def advance(self) -> None:
        """Replay every event due by now, earliest first, so timestamps stay exact."""
        now = self.clock()
        with self.lock:
            self._assign_executors(self._last)
            while True:
                events: list[tuple[float, int, object]] = []
                for item in self._pending.values():
                    if item.state == "waiting" and item.ready_at <= now:
                        events.append((item.ready_at, 0, item))
                for build in self._running_builds.values():
                    if build.ends is not None and build.ends <= now:
                        events.append((build.ends, 1, build))
                if not events:
                    break
                when, _, what = min(events, key=lambda e: (e[0], e[1]))
                if isinstance(what, QueueItem):
                    what.state = "buildable"
                    what.buildable_since = when
                else:
                    assert isinstance(what, Build)
                    self._complete(what, self._next_result(what.job), when)
                self._assign_executors(when)
            self._last = max(self._last, now)
            while self._left and self._left[0][0] + self.left_item_ttl <= now:
                self.queue.pop(self._left.popleft()[1], None)

    def _leave(self, item: QueueItem, when: float) -> None:
        item.state, item.left_at = "left", when
        self._pending.pop(item.id, None)
        self._left.append((when, item.id))

    def _assign_executors(self, at: float) -> None:
        """Buildable items take free executors in order; an item of a job that does not run concurrently
        is blocked while a build of it runs (Queue's BlockedItem, AbstractProject.getCauseOfBlockage)."""
        free = self.executors - len(self._running_builds)
        waiting = sorted((q for q in self._pending.values() if q.state == "buildable"),
                         key=lambda q: (q.buildable_since or 0.0, q.id))
        for item in waiting:
            running = None if item.job.runs_concurrently else next(
                (b for (name, _), b in self._running_builds.items() if name == item.job.full_name), None)
            item.blocked_by = None if running is None else running.number
            if running is None and free > 0:
                self._start(item, max(at, item.buildable_since or at))
                free -= 1

    def _start(self, item: QueueItem, when: float) -> None:
        job = item.job
        number = job.next_build_number
        job.next_build_number += 1
        build = Build(job=job, number=number, queue_id=item.id, parameters=item.parameters,
                      causes=item.causes, started=when,
                      ends=None if job.duration is None else when + job.duration)
        build.log.extend(c["shortDescription"] for c in item.causes)
        build.log.append(f"Running as SYSTEM\nBuilding in workspace /var/jenkins_home/workspace/{job.full_name}")
        build.log.extend(f"{p.name}={'****' if p.type == 'password' else v}" for p, v in item.parameters)
        self.builds[job.full_name][number] = build
        self._running_builds[(job.full_name, number)] = build
        item.build = build
        self._leave(item, when)

    def _next_result(self, job: JobDef) -> str:
        i = self._result_index.get(job.full_name, 0)
        self._result_index[job.full_name] = i + 1
        return job.results[i % len(job.results)]

    def _complete(self, build: Build, result: str, when: float) -> None:
        build.result, build.finished = result, when
        self._running_builds.pop((build.job.full_name, build.number), None)
        build.log.append(f"Finished: {result}")

    # -- triggering -------------------------------------------------------------------------
    def schedule(self, job: JobDef, parameters: list[tuple[ParamDef, Any]],
                 cause: dict[str, Any], delay: float | None) -> tuple[QueueItem, bool]:
        """Queue.scheduleInternal: fold into an identical item still in the queue (its causes join; if it
        is in its quiet period, the shorter due time wins) or add one. Returns the item and whether it is new."""
        self.advance()
        now = self.clock()
        wait = self.quiet_period if delay is None else delay
        with self.lock:
            same = next((q for q in self._pending.values() if q.job is job and q.parameters == parameters), None)
            if same is not None:  # waiting, blocked or buildable: ParametersAction.shouldSchedule says no
                same.causes.append(cause)
                if same.state == "waiting":
                    same.ready_at = min(same.ready_at, now + wait)
            else:
                same = QueueItem(id=next(self._ids), job=job, parameters=parameters, causes=[cause],
                                 in_queue_since=now, ready_at=now + wait)
                self.queue[same.id] = same
                self._pending[same.id] = same
        self.advance()
        return same, len(same.causes) == 1

    def cancel(self, item_id: int) -> None:
        self.advance()
        with self.lock:
            item = self.queue.get(item_id)
            if item is None:
                raise JenkinsError(404, f"no queue item {item_id}")
            if item.state == "left":  # Queue.doCancelItem: cancel() found nothing to cancel
                raise JenkinsError(500, "Could not cancel run for id " + str(item_id))
            item.cancelled = True
            self._leave(item, self.clock())

    def stop(self, build: Build) -> None:
        with self.lock:
            if build.building:
                now = self.clock()
                build.log.append("Aborted by user")
                self._complete(build, "ABORTED", now)
                self._assign_executors(now)

    def finish(self, job_name: str, number: int | None = None, result: str | None = None) -> Build:
        """End a running build now: how tests avoid sleeping for a build to finish."""
        self.advance()
        with self.lock:
            job = self.job(job_name)
            running = [b for b in self.builds[job.full_name].values() if b.building]
            build = (self.builds[job.full_name].get(number) if number is not None
                     else (running[0] if running else None))
            if build is None or not build.building:
                raise JenkinsError(404, f"no running build {job_name} #{number}")
            now = self.clock()
            self._complete(build, result or self._next_result(job), now)
            self._assign_executors(now)
        self.advance()
        return build

    def restart(self) -> None:
        """Forget the queue, as a Jenkins restart may; builds and their numbers survive."""
        with self.lock:
            self.queue.clear()
            self._pending.clear()
            self._left.clear()

    # -- lookup -----------------------------------------------------------------------------
    def running(self) -> list[Build]:
        self.advance()
        with self.lock:
            return list(self._running_builds.values())

    def job(self, full_name: str) -> JobDef:
        job = self.jobs.get(full_name)
        if job is None:
            raise JenkinsError(404, f"No job named {full_name}")
        return job

    def folder_children(self, prefix: str) -> list[str]:
        depth = prefix.count("/") + 1 if prefix else 0
        names = {"/".join(n.split("/")[:depth + 1]) for n in self.jobs
                 if n.startswith(prefix + "/" if prefix else "")}
        return sorted(names)

    def build(self, job: JobDef, number: int) -> Build:
        self.advance()
        build = self.builds[job.full_name].get(number)
        if build is None:
            raise JenkinsError(404, f"{job.full_name} has no build #{number}")
        return build

    def queue_item(self, item_id: int) -> QueueItem:
        self.advance()
        item = self.queue.get(item_id)
        if item is None:
            raise JenkinsError(404, f"no queue item {item_id}")
        return item
