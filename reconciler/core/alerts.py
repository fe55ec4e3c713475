"""Telling people where they look: the commit status a run's step sets on its spec's commit, and
which outcomes are worth a message (and which would only be noise).

Pure rules, no I/O: the worker that delivers them (service/deliveries.py) and the adapters that
speak each forge's and chat's language (forge/) live at the edge.

Messages deduplicate per trigger, by a streak: the first run that ends other than SUCCESS after a
success (or as the trigger's first) says `failed`, once; the failures after it in the same streak
say nothing; the first SUCCESS after says `recovered`. A refused, lost or unknown run says so once
(Jenkins said no, forgot the build, or cannot tell whether it built it: someone has to act), and
counts as a failure of the streak. One
message per change of state, never one per reconcile, retry or pod.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import StrEnum

from reconciler.core import text
from reconciler.core.runs import Run, RunStatus

DESCRIPTION_MAX = 140
"""GitHub refuses a longer description (422); the others show about as much."""


class Alert(StrEnum):
    FAILED = "failed"
    REFUSED = "refused"
    LOST = "lost"
    RECOVERED = "recovered"
    PAUSED = "paused"
    UNKNOWN = "unknown"
    ABANDONED = "abandoned"


DEFAULT_ON = frozenset({Alert.FAILED, Alert.REFUSED, Alert.LOST, Alert.RECOVERED, Alert.PAUSED})

KIND = {Alert.FAILED: "failure", Alert.RECOVERED: "success", Alert.REFUSED: "warning", Alert.LOST: "warning",
        Alert.UNKNOWN: "warning", Alert.ABANDONED: "warning", Alert.PAUSED: "warning"}
"""Each alert as Apprise's notification type (the colour and icon a chat shows)."""


class CommitState(StrEnum):
    """A commit status, neutral of provider: each adapter names it in its forge's words."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """One commit status to set: `step` names the run's step it stands for (one per step, so a step
    recorded twice enqueues it once)."""

    step: str
    sha: str
    context: str
    state: CommitState
    target_url: str | None
    description: str


_FAILURE_RESULTS = frozenset({"FAILURE", "UNSTABLE", "ABORTED", "NOT_BUILT"})
_ERRORS = {RunStatus.REFUSED: "refused by Jenkins", RunStatus.LOST: "lost by Jenkins",
           RunStatus.UNKNOWN: "outcome unknown", RunStatus.FAILED: "given up"}


def status_update(run: Run, event: str, context: str) -> StatusUpdate | None:
    """The commit status a recorded step of `run` sets, if any: only fires of a one-shot whose spec has
    a commit get one (a tick of a schedule has no commit of its own)."""
    sha = (run.provenance or {}).get("sha")
    if not sha or run.fire_key.startswith("@"):
        return None
    job = run.job + (f" #{run.build_number}" if run.build_number else "")
    if event == "decided":
        return _update("decided", sha, context, CommitState.PENDING, None, f"{job}: decided, being posted to Jenkins")
    if event == "queued":
        return _update("queued", sha, context, CommitState.PENDING, run.queue_url, f"{job}: queued in Jenkins")
    if event == "started":
        return _update("started", sha, context, CommitState.RUNNING, run.build_url, f"{job}: building")
    if event == RunStatus.COMPLETED:
        result = run.result or "no result"
        state = CommitState.SUCCESS if result == "SUCCESS" else CommitState.FAILURE
        return _update("final", sha, context, state, run.build_url, f"{job}: {result}")
    if event == RunStatus.CANCELLED:
        return _update("final", sha, context, CommitState.FAILURE, run.build_url or run.queue_url, f"{job}: cancelled")
    error = _ERRORS.get(event)  # type: ignore[call-overload]  # a RunStatus is its value
    if error is None:
        return None
    why = f": {run.last_error}" if run.last_error else ""
    return _update("refused" if event == RunStatus.REFUSED else "final", sha, context, CommitState.ERROR,
                   run.build_url or run.queue_url, f"{job}: {error}{why}")


def _update(step: str, sha: str, context: str, state: CommitState, url: str | None, description: str) -> StatusUpdate:
    return StatusUpdate(step, sha, context, state, url, clip(description, DESCRIPTION_MAX))


def clip(value: str, limit: int) -> str:
    """`value` on one line, inert in a terminal, at most `limit` characters (an ellipsis says it was cut)."""
    value = text.terminal(" ".join(value.split()))
    return value if len(value) <= limit else value[:limit - 1] + "…"


def context_for(template: str, trigger: str) -> str:
    return template.replace("{trigger}", trigger)


# -- the streak ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Streak:
    """Where a trigger stands: failing or not, as of its run `run_id`'s step at `at`."""

    failing: bool = False
    run_id: str | None = None
    at: float = 0.0


OUTCOMES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.LOST, RunStatus.UNKNOWN, RunStatus.CANCELLED,
                      RunStatus.REFUSED})
"""The steps that move a streak; the others (decided, queued, started, skipped, missed) do not."""


def succeeded(run: Run) -> bool:
    return run.status is RunStatus.COMPLETED and run.result == "SUCCESS"


def next_alert(streak: Streak, run: Run, event: str, at: float) -> tuple[Alert | None, Streak]:
    """The message a step says, if any, and the streak after it. A step no newer than the streak's is
    one already counted (a restart going over recent runs again): it says nothing and moves nothing."""
    if event not in OUTCOMES or at < streak.at or (at == streak.at and run.run_id == streak.run_id):
        return None, streak
    if event == RunStatus.COMPLETED and run.result == "SUCCESS":
        return (Alert.RECOVERED if streak.failing else None), Streak(False, run.run_id, at)
    after = Streak(True, run.run_id, at)
    if event == RunStatus.REFUSED:
        return Alert.REFUSED, after
    if event == RunStatus.LOST:
        return Alert.LOST, after
    if event == RunStatus.UNKNOWN:
        return Alert.UNKNOWN, after
    return (None if streak.failing else Alert.FAILED), after


def streak_of(latest: Run | None) -> Streak:
    """A trigger's streak as its newest outcome left it: how a fresh store, rebuilt from history, goes
    on where the last pod stopped instead of announcing again what that pod announced."""
    if latest is None:
        return Streak()
    return Streak(not succeeded(latest), latest.run_id, latest.finished_at or latest.decided_at)


# -- who hears of it -------------------------------------------------------------------------------

def glob_pattern(glob: str) -> re.Pattern[str]:
    """A trigger-name glob: `*` within one folder, `**` across folders, `?` one character."""
    out = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out))


def wants(on: Collection[str], triggers: Collection[str], alert: Alert, trigger: str) -> bool:
    """Whether a channel with these settings hears of `alert` about `trigger` (no globs: every trigger)."""
    return alert in on and (not triggers or any(glob_pattern(g).fullmatch(trigger) for g in triggers))


# -- the message ------------------------------------------------------------------------------------

_HEADLINES = {Alert.FAILED: "failed", Alert.RECOVERED: "recovered", Alert.REFUSED: "was refused by Jenkins",
              Alert.LOST: "was lost by Jenkins", Alert.UNKNOWN: "has an unknown outcome",
              Alert.ABANDONED: "was abandoned", Alert.PAUSED: "is paused"}
_LINK = re.compile(r"https?://[A-Za-z0-9.:-]+(/[A-Za-z0-9._~%/!$&'+,;=:@-]*)?")
"""A URL shown as a link: no character a chat reads as markup (`<>|*_()[]` and the like)."""


def facts(run: Run) -> dict[str, str | None]:
    """What a message says about a run, stored with it in the outbox until it is sent."""
    commit = run.provenance or {}
    return {"trigger": run.trigger, "job": run.job, "number": str(run.build_number or "") or None,
            "result": run.result or run.status.value, "url": run.build_url or run.queue_url,
            "reason": run.last_error, "sha": commit.get("sha"), "author": commit.get("author"),
            "subject": commit.get("subject")}


def message(alert: Alert, facts: dict[str, str | None], escape: Callable[[str], str]) -> tuple[str, str]:
    """Title and body naming the trigger, job, result, build URL and commit; every piece of text from a
    spec, a commit or Jenkins passes `escape`, the channel's escaper."""
    trigger = escape(facts.get("trigger") or "")
    title = f"{trigger} {_HEADLINES[alert]}"
    job = escape(facts.get("job") or "") + (f" #{facts['number']}" if facts.get("number") else "")
    lines = [f"Trigger: {trigger}", f"Job: {job}", f"Result: {escape(facts.get('result') or '')}"]
    url = facts.get("url")
    if url:
        lines.append(f"Build: {url if _LINK.fullmatch(url) else escape(url)}")
    if facts.get("sha"):
        sha = str(facts["sha"])[:7]
        lines.append(f"Commit: {escape(sha)} by {escape(facts.get('author') or '?')}: "
                     f"{escape(clip(facts.get('subject') or '', 200))}")
    if facts.get("reason") and alert is not Alert.RECOVERED:
        lines.append(f"Reason: {escape(clip(facts['reason'] or '', 500))}")
    return title, "\n".join(lines)
