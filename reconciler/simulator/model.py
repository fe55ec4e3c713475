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
"""In hudson.model.Result's order: each is worse than the ones before it (Result.isWorseThan)."""


def worse(a: str | None, b: str | None) -> str | None:
    """Run.setResult: a result can only get worse."""
    if a is None or b is None:
        return b if a is None else a
    return a if RESULTS.index(a) >= RESULTS.index(b) else b


def parse_boolean(raw: str | None) -> bool:
    """java.lang.Boolean.parseBoolean: only "true", in any case, is true (`on`, `yes`, `1` are false)."""
    return raw is not None and raw.lower() == "true"

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

    def value_from(self, raw: str | None, form: bool = False) -> Any:
        """Mirror ParameterDefinition.createValue: a missing value takes the default.

        A boolean from a query or form field goes through BooleanParameterDefinition.createValue(String),
        i.e. Boolean.parseBoolean; one from the `json` form of /build is bound by Stapler (`form`), which
        also takes `on`, as an HTML checkbox sends it."""
        if self.type == "boolean":
            if raw is None:
                return bool(self.default)
            return raw.lower() in ("true", "on") if form else parse_boolean(raw)
        if self.type == "choice":
            if raw is None:
                return self.choices[0] if self.choices else ""
            if raw not in self.choices:
                # ChoiceParameterDefinition.checkValue throws IllegalArgumentException: a 500.
                raise JenkinsError(500, f"java.lang.IllegalArgumentException: Illegal choice for parameter "
                                        f"{self.name}: {raw}")
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
    result_while_building: str | None = None
    """A result the build reports while it still builds (Run.setResult is allowed while BUILDING: a
    Pipeline's `unstable` step), `result_at` seconds after it starts; the final result only gets worse."""
    result_at: float = 0.0
    publishers: float = 0.0
    """The last seconds of a build spent in its publishers, FreeStyle-like: the builders' result is
    already set (AbstractBuild's builders call setResult, then post2 runs the publishers) while
    `building` is still true."""
    post_production: float = 0.0
    """Seconds a build spends in Run.State.POST_PRODUCTION after it stops building: `building` is false
    (Run.isBuilding), `inProgress` still true (Run.isInProgress) and its log still grows."""
    description: str = ""
    config_xml: str | None = None
    """The config.xml it was created or updated with (POST createItem / config.xml), returned as sent."""

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
    """When it stops building (then POST_PRODUCTION, or COMPLETED at once)."""
    finished: float | None = None
    log: list[str] = field(default_factory=list)
    state: str = "building"  # building → post_production → completed (Run.State)
    planned: str | None = None
    """The result it will end with, decided when it starts (a job's `result` sequence)."""
    interim_at: float | None = None
    """When its result is set while it still builds (result_while_building, or its publishers start)."""
    interim: str | None = None
    completes: float | None = None
    keep_log: bool = False

    @property
    def building(self) -> bool:
        """Run.isBuilding: state < POST_PRODUCTION."""
        return self.state == "building"

    @property
    def in_progress(self) -> bool:
        """Run.isInProgress: BUILDING or POST_PRODUCTION."""
        return self.state != "completed"


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
        self.quieting_down = False
        """Jenkins.doQuietDown: items are still queued, but none starts until doCancelQuietDown."""

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
                    if build.building and build.interim_at is not None and build.interim_at <= now:
                        events.append((build.interim_at, 1, build))
                    elif build.building and build.ends is not None and build.ends <= now:
                        events.append((build.ends, 2, build))
                    elif build.state == "post_production" and build.completes is not None \
                            and build.completes <= now:
                        events.append((build.completes, 3, build))
                if not events:
                    break
                when, kind, what = min(events, key=lambda e: (e[0], e[1]))
                if isinstance(what, QueueItem):
                    what.state = "buildable"
                    what.buildable_since = when
                else:
                    assert isinstance(what, Build)
                    if kind == 1:
                        self._set_interim(what)
                    elif kind == 2:
                        self._end_building(what, what.planned or self._next_result(what.job), when)
                    else:
                        self._completed(what, when)
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
        is blocked while a build of it is building (Queue's BlockedItem, AbstractProject.getCauseOfBlockage
        asks Job.isBuilding). While Jenkins quiets down nothing starts (Queue.isBlockedByShutdown)."""
        free = self.executors - len(self._running_builds)
        waiting = sorted((q for q in self._pending.values() if q.state == "buildable"),
                         key=lambda q: (q.buildable_since or 0.0, q.id))
        for item in waiting:
            running = None if item.job.runs_concurrently else next(
                (b for (name, _), b in self._running_builds.items()
                 if name == item.job.full_name and b.building), None)
            item.blocked_by = None if running is None else running.number
            if running is None and free > 0 and not self.quieting_down and not item.job.disabled:
                self._start(item, max(at, item.buildable_since or at))
                free -= 1

    def _start(self, item: QueueItem, when: float) -> None:
        job = item.job
        number = job.next_build_number
        job.next_build_number += 1
        build = Build(job=job, number=number, queue_id=item.id, parameters=item.parameters,
                      causes=item.causes, started=when,
                      ends=None if job.duration is None else when + job.duration,
                      planned=self._next_result(job))
        if job.publishers and build.ends is not None:  # the builders' result is set, the publishers run
            build.interim_at, build.interim = max(when, build.ends - job.publishers), build.planned
        if job.result_while_building is not None:
            at = when + job.result_at
            if build.interim_at is None or at < build.interim_at:
                build.interim_at, build.interim = at, job.result_while_building
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

    def _set_interim(self, build: Build) -> None:
        """Run.setResult while BUILDING: the result is set, the build goes on; a second one may follow."""
        result = build.interim
        build.result = worse(build.result, result)
        if build.job.kind == "pipeline":
            build.log.append(f"[Pipeline] unstable\nWARNING: build result set to {result}")
        else:
            build.log.append(f"Build step marked build as {result}\n[Publishers] running publishers")
        build.interim_at = build.interim = None
        job = build.job
        if job.publishers and build.ends is not None and job.result_while_building is not None \
                and build.result != build.planned:  # the publishers' phase still comes
            build.interim_at, build.interim = max(build.started, build.ends - job.publishers), build.planned

    def _end_building(self, build: Build, result: str, when: float) -> None:
        """The end of Run.State.BUILDING: the final result (never better than one set while building)."""
        build.result = worse(build.result, result)
        build.interim_at = build.interim = None
        build.ends = when
        build.state = "post_production"
        build.completes = when + build.job.post_production
        if build.job.post_production <= 0:
            self._completed(build, when)

    def _completed(self, build: Build, when: float) -> None:
        build.state, build.finished = "completed", when
        self._running_builds.pop((build.job.full_name, build.number), None)
        build.log.append(f"Finished: {build.result}")

    def _complete(self, build: Build, result: str, when: float) -> None:
        self._end_building(build, result, when)

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

    def set_result(self, build: Build, result: str) -> None:
        """Run.setResult on a running build: allowed only while BUILDING, and only ever worse."""
        self.advance()
        with self.lock:
            if not build.building:
                raise JenkinsError(500, f"cannot change build result while in {build.state.upper()}")
            build.interim = result
            self._set_interim(build)

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
            self._complete(build, result or build.planned or self._next_result(job), now)
            self._assign_executors(now)
        self.advance()
        return build

    def restart(self) -> None:
        """Forget the queue, as a Jenkins restart may; builds and their numbers survive."""
        with self.lock:
            self.queue.clear()
            self._pending.clear()
            self._left.clear()

    def quiet_down(self, on: bool) -> None:
        self.advance()
        with self.lock:
            self.quieting_down = on
            self._assign_executors(self.clock())

    # -- items ------------------------------------------------------------------------------
    def add_job(self, job: JobDef) -> None:
        """ItemGroupMixIn.createTopLevelItem / createProjectFromXML: a new, empty job."""
        with self.lock:
            if job.full_name in self.jobs or self.folder_children(job.full_name):
                raise JenkinsError(400, f"A job already exists with the name ‘{job.full_name.rsplit('/', 1)[-1]}’")
            self.jobs[job.full_name] = job
            self.builds[job.full_name] = {}

    def delete_job(self, job: JobDef) -> None:
        """AbstractItem.delete: running builds are aborted, queued items cancelled, the job forgotten."""
        self.advance()
        with self.lock:
            for build in list(self._running_builds.values()):
                if build.job is job and build.building:
                    self.stop(build)
            for item in list(self._pending.values()):
                if item.job is job:
                    item.cancelled = True
                    self._leave(item, self.clock())
            self.jobs.pop(job.full_name, None)

    def replace_job(self, old: JobDef, new: JobDef) -> None:
        """AbstractItem.updateByXml: the job keeps its builds and its next build number."""
        with self.lock:
            new.next_build_number = old.next_build_number
            self.jobs[old.full_name] = new
            for build in self.builds[old.full_name].values():
                build.job = new
            for item in self._pending.values():
                if item.job is old:
                    item.job = new

    def set_disabled(self, job: JobDef, disabled: bool) -> None:
        self.advance()
        with self.lock:
            job.disabled = disabled
            self._assign_executors(self.clock())

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
