"""Jenkins' JSON shapes for the simulated objects, and the `tree=` filter of its remote API."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from .model import PARAM_CLASSES, Build, Jenkins, JobDef, QueueItem, _ms

JOB_CLASSES = {"freestyle": ("hudson.model.FreeStyleProject", "hudson.model.FreeStyleBuild"),
               "pipeline": ("org.jenkinsci.plugins.workflow.job.WorkflowJob",
                            "org.jenkinsci.plugins.workflow.job.WorkflowRun")}
FOLDER_CLASS = "com.cloudbees.hudson.plugins.folder.Folder"


def job_class(job: JobDef) -> str:
    return JOB_CLASSES[job.kind][0]


def build_class(job: JobDef) -> str:
    return JOB_CLASSES[job.kind][1]


def job_path(full_name: str) -> str:
    """`a b/ü` → `job/a%20b/job/%C3%BC/`, each segment encoded as Jenkins' Util.rawEncode does."""
    return "".join(f"job/{quote(seg, safe='')}/" for seg in full_name.split("/"))


def parameters_json(params: list[tuple[Any, Any]]) -> dict[str, Any]:
    values = []
    for p, v in params:
        entry: dict[str, Any] = {"_class": PARAM_CLASSES[p.type][1], "name": p.name}
        if p.type != "password":
            entry["value"] = v
        values.append(entry)
    return {"_class": "hudson.model.ParametersAction", "parameters": values}


def actions_json(params: list[tuple[Any, Any]], causes: list[dict[str, Any]],
                 parameterized: bool) -> list[dict[str, Any]]:
    actions: list[dict[str, Any]] = []
    if parameterized:
        actions.append(parameters_json(params))
    actions.append({"_class": "hudson.model.CauseAction", "causes": list(causes)})
    return actions


def build_json(root: str, build: Build, executor: int | None = None) -> dict[str, Any]:
    """Run's exported fields (Run.java: building, inProgress, result, keepLog, executor, artifacts, …),
    with AbstractBuild's builtOn, changeSet and culprits for a FreeStyle build and WorkflowRun's
    changeSets and culprits for a Pipeline run."""
    job = build.job
    # Run.getDuration: 0 until the run has ended building (Run.onEndBuilding sets it)
    now_duration = 0 if build.building or build.ends is None else _ms(build.ends) - _ms(build.started)
    out: dict[str, Any] = {
        "_class": build_class(job),
        "actions": actions_json(build.parameters, build.causes, job.parameters is not None),
        "artifacts": [],
        "building": build.building,
        "description": None,
        "displayName": f"#{build.number}",
        "duration": now_duration,
        "estimatedDuration": _ms(job.duration) if job.duration is not None else -1,
        "executor": None if executor is None or not build.in_progress else
        {"_class": "hudson.model.Executor"} if job.kind == "freestyle" else
        {"_class": "hudson.model.OneOffExecutor"},
        "fullDisplayName": f"{job.full_name.replace('/', ' » ')} #{build.number}",
        "id": str(build.number),
        "inProgress": build.in_progress,
        "keepLog": build.keep_log,
        "number": build.number,
        "queueId": build.queue_id,
        "result": build.result,
        "timestamp": _ms(build.started),
        "url": f"{root}{job_path(job.full_name)}{build.number}/",
    }
    if job.kind == "freestyle":
        out["builtOn"] = ""  # the built-in node (AbstractBuild.getBuiltOnStr)
        out["changeSet"] = {"_class": "hudson.scm.EmptyChangeLogSet", "items": [], "kind": None}
    else:
        out["changeSets"] = []
    out["culprits"] = []
    return out


def build_ref(root: str, build: Build | None) -> dict[str, Any] | None:
    if build is None:
        return None
    return {"_class": build_class(build.job), "number": build.number,
            "url": f"{root}{job_path(build.job.full_name)}{build.number}/"}


def queue_item_json(root: str, item: QueueItem, now: float, quieting_down: bool = False) -> dict[str, Any]:
    job = item.job
    out: dict[str, Any] = {
        "actions": actions_json(item.parameters, item.causes, job.parameters is not None),
        "blocked": False,
        "buildable": item.state == "buildable",
        "id": item.id,
        "inQueueSince": _ms(item.in_queue_since),
        "params": "".join(f"\n{p.name}={'****' if p.type == 'password' else v}"
                          for p, v in item.parameters),
        "stuck": False,
        "task": {"_class": job_class(job), "name": job.full_name.rsplit("/", 1)[-1],
                 "url": f"{root}{job_path(job.full_name)}", "color": color(None, job)},
        "url": f"queue/item/{item.id}/",
    }
    if item.state == "waiting":
        out["_class"] = "hudson.model.Queue$WaitingItem"
        out["timestamp"] = _ms(item.ready_at)
        out["why"] = f"In the quiet period. Expires in {max(item.ready_at - now, 0):.1f} sec"
    elif item.state == "buildable" and item.blocked_by is not None:
        out["_class"] = "hudson.model.Queue$BlockedItem"
        out["blocked"] = True
        # NotWaitingItem.buildableStartMilliseconds: when it left the waiting list, kept as it moves
        # between blocked and buildable
        out["buildableStartMilliseconds"] = _ms(item.buildable_since or now)
        out["why"] = f"Build #{item.blocked_by} is already in progress (ETA: N/A)"
    elif item.state == "buildable":
        out["_class"] = "hudson.model.Queue$BuildableItem"
        out["buildableStartMilliseconds"] = _ms(item.buildable_since or now)
        out["pending"] = False
        out["why"] = "Jenkins is about to shut down" if quieting_down else "Waiting for next available executor"
    else:
        out["_class"] = "hudson.model.Queue$LeftItem"
        out["cancelled"] = item.cancelled
        out["executable"] = build_ref(root, item.build)
        out["why"] = None
    out["buildable"] = item.state == "buildable" and item.blocked_by is None
    return out


def color(jenkins: Jenkins | None, job: JobDef) -> str:
    if job.disabled:
        return "disabled"
    if jenkins is None:
        return "notbuilt"
    last = next(_newest_first(jenkins, job), None)
    if last is None:
        return "notbuilt"
    done = _first(_newest_first(jenkins, job), lambda b: not b.building)
    base = {"SUCCESS": "blue", "UNSTABLE": "yellow", "FAILURE": "red",
            "ABORTED": "aborted", "NOT_BUILT": "notbuilt"}.get(done.result or "", "notbuilt") \
        if done else "notbuilt"
    return base + "_anime" if last.building else base


def health_report(done: list[Build]) -> list[dict[str, Any]]:
    """Job.getBuildHealthReports' build-stability report: the share of the last 5 completed builds that
    did not fail (failures are FAILURE results; UNSTABLE counts as not failed)."""
    recent = done[:5]
    if not recent:
        return []
    failed = sum(b.result == "FAILURE" for b in recent)
    score = 100 * (len(recent) - failed) // len(recent)
    icon = ("health-80plus" if score > 80 else "health-60to79" if score > 60 else "health-40to59"
            if score > 40 else "health-20to39" if score > 20 else "health-00to19")
    return [{"description": f"Build stability: {failed} out of the last {len(recent)} builds failed.",
             "iconClassName": f"icon-{icon}", "iconUrl": f"{icon}.png", "score": score}]


def _newest_first(jenkins: Jenkins, job: JobDef) -> Iterator[Build]:
    """A job's builds, newest first: its dict holds them in the order they were numbered (numbers only
    grow), so this costs nothing until read, and only as far as it is read."""
    return reversed(jenkins.builds[job.full_name].values())


def _first(builds: Iterator[Build], keep: Callable[[Build], bool]) -> Build | None:
    return next((b for b in builds if keep(b)), None)


def job_json(root: str, jenkins: Jenkins, job: JobDef, full: bool, all_builds: bool = False,
             tree: dict[str, Any] | None = None) -> dict[str, Any]:
    """`builds` is the newest 100 (Job.getNewBuilds); `allBuilds`, only when asked for, is every one.

    With the parsed `tree=`, only the fields it keeps are computed, and of a list of builds only as
    far as its range reaches: a read of `nextBuildNumber` does not build a hundred builds' JSON, nor
    a read of ten builds five thousand (apply_tree still applies the tree to what is returned)."""
    wanted = None if tree is None or "*" in tree else tree
    item_json = (lambda b: build_json(root, b)) if full else (lambda b: build_ref(root, b))
    newest = lambda: _newest_first(jenkins, job)  # noqa: E731 - read afresh by each field

    def reach(name: str, most: int | None) -> int | None:
        """How many builds `name` needs built: up to its range's end, within `most`."""
        sub = (wanted or {}).get(name)
        stop = sub.get(RANGE, slice(None)).stop if isinstance(sub, dict) else None
        return most if stop is None else stop if most is None else min(stop, most)

    def done(keep: Callable[[Build], bool] = lambda b: True) -> dict[str, Any] | None:
        found = _first(newest(), lambda b: not b.building and keep(b))  # PeepholePermalink: `!run.isBuilding()`
        return None if found is None else item_json(found)

    def queued() -> list[QueueItem]:
        return [q for q in jenkins.queue.values() if q.job is job and q.state != "left"]

    def parameter_property() -> list[dict[str, Any]]:
        if job.parameters is None:
            return []
        return [{"_class": "hudson.model.ParametersDefinitionProperty",
                 "parameterDefinitions": [p.definition_json() for p in job.parameters]}]

    def first_build() -> dict[str, Any] | None:
        found = next(iter(jenkins.builds[job.full_name].values()), None)
        return None if found is None else item_json(found)

    def last_build() -> dict[str, Any] | None:
        found = next(newest(), None)
        return None if found is None else item_json(found)

    def queue_item() -> dict[str, Any] | None:
        waiting = queued()
        return queue_item_json(root, waiting[0], jenkins.clock()) if waiting else None

    fields: dict[str, Callable[[], Any]] = {
        "_class": lambda: job_class(job),
        "actions": lambda: [],
        "buildable": lambda: not job.disabled,
        "concurrentBuild": lambda: job.runs_concurrently,
        "disabled": lambda: job.disabled,
        "builds": lambda: [item_json(b) for b in itertools.islice(newest(), reach("builds", 100))],
        **({"allBuilds": lambda: [item_json(b) for b in itertools.islice(newest(), reach("allBuilds", None))]}
           if all_builds else {}),
        "color": lambda: color(jenkins, job),
        "description": lambda: job.description,
        "displayName": lambda: job.full_name.rsplit("/", 1)[-1],
        "healthReport": lambda: health_report(list(itertools.islice((b for b in newest() if not b.building), 5))),
        "keepDependencies": lambda: False,
        "firstBuild": first_build,
        "fullDisplayName": lambda: job.full_name.replace("/", " » "),
        "fullName": lambda: job.full_name,
        "inQueue": lambda: bool(queued()),
        "lastBuild": last_build,
        "lastCompletedBuild": done,
        "lastSuccessfulBuild": lambda: done(lambda b: b.result in ("SUCCESS", "UNSTABLE")),
        "lastStableBuild": lambda: done(lambda b: b.result == "SUCCESS"),
        "lastFailedBuild": lambda: done(lambda b: b.result == "FAILURE"),
        "lastUnsuccessfulBuild": lambda: done(lambda b: b.result != "SUCCESS"),
        "lastUnstableBuild": lambda: done(lambda b: b.result == "UNSTABLE"),
        "name": lambda: job.full_name.rsplit("/", 1)[-1],
        "nextBuildNumber": lambda: job.next_build_number,
        "property": parameter_property,
        "queueItem": queue_item,
        "url": lambda: f"{root}{job_path(job.full_name)}",
    }
    return {name: make() for name, make in fields.items() if wanted is None or name in wanted or name == "_class"}


def folder_items(root: str, jenkins: Jenkins, prefix: str, visible: Any) -> list[dict[str, Any]]:
    """A folder's `jobs`: each job with its color, each sub-folder with its own `jobs`, as deep as
    they go (a `tree=` query then keeps only the levels it asks for)."""
    jobs = []
    for name in jenkins.folder_children(prefix):
        job = jenkins.jobs.get(name)
        if job is not None and not visible(job):
            continue
        entry: dict[str, Any] = {"_class": job_class(job) if job else FOLDER_CLASS,
                                 "name": name.rsplit("/", 1)[-1], "url": f"{root}{job_path(name)}"}
        if job is not None:
            entry["color"] = color(jenkins, job)
            entry["fullname"] = name
        else:
            entry["jobs"] = folder_items(root, jenkins, name, visible)
        jobs.append(entry)
    return jobs


def folder_json(root: str, jenkins: Jenkins, prefix: str, visible: Any = lambda job: True) -> dict[str, Any]:
    jobs = folder_items(root, jenkins, prefix, visible)
    if not prefix:
        return {"_class": "hudson.model.Hudson", "mode": "NORMAL", "nodeDescription":
                "the Jenkins controller's built-in node (simulated)", "nodeName": "",
                "numExecutors": jenkins.executors, "quietingDown": False, "url": root,
                "useCrumbs": True, "useSecurity": True, "jobs": jobs,
                "primaryView": {"_class": "hudson.model.AllView", "name": "all", "url": root},
                "views": [{"_class": "hudson.model.AllView", "name": "all", "url": root}]}
    return {"_class": FOLDER_CLASS, "fullName": prefix, "name": prefix.rsplit("/", 1)[-1],
            "url": f"{root}{job_path(prefix)}", "jobs": jobs}


RANGE = "{}"
"""Where a parsed tree keeps a list's `{M,N}` range: no Jenkins field has that name."""


def parse_tree(spec: str) -> dict[str, Any]:
    """`builds[number,actions[causes[userId]]]{0,5}` → {"builds": {"number": None, ..., "{}": slice(0, 5)}}."""
    tree, _ = _parse_fields(spec, 0)
    return tree


def _parse_fields(spec: str, i: int) -> tuple[dict[str, Any], int]:
    fields: dict[str, Any] = {}
    name = ""
    while i < len(spec):
        ch = spec[i]
        if ch == "[":
            sub, i = _parse_fields(spec, i + 1)
            fields[name.strip()] = sub
            name = ""
            if i < len(spec) and spec[i] == "{":
                end = spec.index("}", i)
                sub[RANGE] = _range(spec[i + 1:end])
                i = end + 1
            continue
        if ch in ",]":
            if name.strip():
                fields[name.strip()] = None
            name = ""
            if ch == "]":
                return fields, i + 1
        elif ch == "{":
            i = spec.index("}", i)
        else:
            name += ch
        i += 1
    if name.strip():
        fields[name.strip()] = None
    return fields, i


def _range(text: str) -> slice:
    """Jenkins' `{M,N}` (M to N-1), `{M,}`, `{,N}` and `{N}` (the Nth alone)."""
    if "," not in text:
        return slice(int(text), int(text) + 1)
    start, end = text.split(",", 1)
    return slice(int(start) if start.strip() else None, int(end) if end.strip() else None)


def apply_tree(value: Any, tree: dict[str, Any] | None) -> Any:
    """Keep what `tree=` asks for; Jenkins keeps `_class` on every object it reports."""
    if tree is None:
        return value
    if isinstance(value, list):
        return [apply_tree(v, tree) for v in value[tree.get(RANGE, slice(None))]]
    if isinstance(value, dict):
        out = {"_class": value["_class"]} if "_class" in value else {}
        wildcard = tree.get("*", False)
        for key in value:
            # NamedPathPruner.accept: a property's own subtree, else the `*` one
            sub = tree.get(key, wildcard)
            if sub is not False and key != RANGE:
                out[key] = apply_tree(value[key], sub)
        return out
    return value


def user_json(root: str, name: str, full_name: str) -> dict[str, Any]:
    """`/me/api/json`: who the request is authenticated as (python-jenkins' get_whoami)."""
    return {"_class": "hudson.model.User", "absoluteUrl": f"{root}user/{quote(name)}", "description": None,
            "fullName": full_name, "id": name, "property": []}


def node_json(root: str, jenkins: Jenkins) -> dict[str, Any]:
    """The built-in node: FreeStyle builds on its executors, Pipeline runs on one-off (flyweight) ones."""
    running = sorted(jenkins.running(), key=lambda b: (b.job.full_name, b.number))
    heavy = [b for b in running if b.job.kind == "freestyle"]
    light = [b for b in running if b.job.kind != "freestyle"]

    def executor(number: int, build: Any) -> dict[str, Any]:
        return {"_class": "hudson.model.Executor", "number": number, "idle": build is None,
                "currentExecutable": build_ref(root, build), "progress": -1 if build is None else 50}

    return {"_class": "hudson.model.Hudson$MasterComputer", "displayName": "Built-In Node",
            "executors": [executor(i, heavy[i] if i < len(heavy) else None) for i in range(jenkins.executors)],
            "oneOffExecutors": [executor(i, b) for i, b in enumerate(light)],
            "idle": not running, "numExecutors": jenkins.executors, "offline": False, "temporarilyOffline": False}


def computers_json(root: str, jenkins: Jenkins) -> dict[str, Any]:
    node = node_json(root, jenkins)
    return {"_class": "hudson.model.ComputerSet", "busyExecutors": sum(not e["idle"] for e in node["executors"]),
            "computer": [node], "displayName": "Nodes", "totalExecutors": jenkins.executors}


def python_literal(obj: Any) -> str:
    """`api/python`, as Stapler's PythonDataWriter writes it: JSON, but None, True and False."""
    if obj is None or isinstance(obj, bool):
        return repr(obj)
    if isinstance(obj, list):
        return "[" + ",".join(python_literal(v) for v in obj) + "]"
    if isinstance(obj, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{python_literal(v)}" for k, v in obj.items()) + "}"
    return json.dumps(obj)
