"""What the records say, read by people and by the daemon alike: what has fired, what Jenkins
refused, and marking specs as fired without firing (`adopt`). The state store and the history are
read together: a fresh store may know less than the history committed to git."""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from reconciler.config import Policy
from reconciler.core import policy as rules
from reconciler.core.errors import SpecError
from reconciler.core.freeze import frozen
from reconciler.core.operations import holding
from reconciler.core.overview import Problem
from reconciler.core.plan import Action
from reconciler.core.runs import ACCEPTED, Run, RunStatus, new_run
from reconciler.core.schedule import cursors
from reconciler.core.spec import Spec
from reconciler.repo.history import History, iso
from reconciler.store.base import StateStore
from reconciler.store.open import open_store, store_exists


def fired(history_dir: Path, state: Path | str,
          problems: list[str] | None = None) -> tuple[set[tuple[str, str]], dict[str, datetime]]:
    """What has fired, and where each schedule stands: the state store, and the history behind it.
    The history's bad lines, skipped, are added to `problems` (`file:line: why`)."""
    history = History(history_dir)
    found = {(r.trigger, r.fire_key) for r in history.runs()}
    if problems is not None:
        problems += history.problems
    stored: dict[str, float] = {}
    if store_exists(state):
        store = open_store(state)
        try:
            found |= store.fired() | set(store.last_ticks().items())
            stored = store.cursors()
        finally:
            store.close()
    return found, cursors(stored, found)


def revisions(store: StateStore, among: Collection[tuple[str, str]] | None = None
              ) -> tuple[set[tuple[str, str]], dict[tuple[str, str], str]]:
    """The one-shot revisions Jenkins accepted, by (trigger, revision): what `status` and the page call
    fired, for a spec reverted to one; and those given up without Jenkins accepting them, with what
    `plan` says of each (the daemon will not post them again). The store decides a revision once, and
    its `fired` lists them all, refused and given up too. `among`: only these pairs are asked about
    (the page asks for the specs' current revisions)."""
    decided = store.fired() if among is None else store.fired_among(among)
    unaccepted = store.unaccepted()
    wanted = None if among is None else set(among)
    given_up = {(r.trigger, r.fire_key): not_fired(r)[1] for r in unaccepted
                if r.status is RunStatus.FAILED and (wanted is None or (r.trigger, r.fire_key) in wanted)}
    return decided - {(r.trigger, r.fire_key) for r in unaccepted}, given_up


def unaccepted(history_dir: Path, state: Path | str) -> dict[tuple[str, str], tuple[Action, str]]:
    """One-shot runs decided that Jenkins did not accept (ACCEPTED says which count as fired), by
    (trigger, revision): what a reader is to be told instead of "already fired". The state store's
    word wins over the history's."""
    runs = {r.run_id: r for r in History(history_dir).runs()
            if r.status not in ACCEPTED and not r.fire_key.startswith("@")}
    if store_exists(state):
        store = open_store(state)
        try:
            stored = store.unaccepted()
            accepted = store.fired() - {(r.trigger, r.fire_key) for r in stored}
            runs = {i: r for i, r in runs.items() if (r.trigger, r.fire_key) not in accepted}
            runs.update({r.run_id: r for r in stored})
        finally:
            store.close()
    return {(r.trigger, r.fire_key): not_fired(r) for r in runs.values()}


def not_fired(run: Run) -> tuple[Action, str]:
    """What became of a run Jenkins has not accepted, in a reader's words."""
    error = f": {run.last_error}" if run.last_error else ""
    if run.status is RunStatus.REFUSED:
        return Action.PENDING, f"Jenkins refused it; next attempt {next_attempt(run)}{error}"
    if run.status is RunStatus.FAILED:
        return Action.NOT_FIRED, f"revision {run.fire_key} was given up without Jenkins accepting it{error}"
    return Action.PENDING, f"revision {run.fire_key} decided, not yet accepted by Jenkins ({run.status}){error}"


def operated(state: Path | str) -> tuple[dict[str, str], dict[str, str]]:
    """Who paused which trigger (when, why), and the requested runs that wait, by trigger, as `plan` says them."""
    if not store_exists(state):
        return {}, {}
    store = open_store(state)
    try:
        pauses, waiting = store.pauses(), [run for run, _ in store.requested()]
    finally:
        store.close()
    paused = {name: pause.describe() for name, pause in holding(pauses, time.time()).items()}
    by_trigger: dict[str, list[Run]] = {}
    for run in waiting:
        by_trigger.setdefault(run.trigger, []).append(run)
    return paused, {name: requested_summary(runs) for name, runs in by_trigger.items()}


def requested_summary(runs: list[Run]) -> str:
    """`1 requested run (now); backfill of 5 ticks 2026-…Z … 2026-…Z`."""
    now = [r for r in runs if r.fire_key.startswith("!")]
    ticks = sorted(r.fire_key[2:] for r in runs if r.fire_key.startswith("+@"))
    parts = [f"{len(now)} requested run(s) now"] if now else []
    if ticks:
        span = ticks[0] if len(ticks) == 1 else f"{ticks[0]} … {ticks[-1]}"
        parts.append(f"backfill of {len(ticks)} tick(s) {span}")
    return "; ".join(parts)


def next_attempt(run: Run) -> str:
    return iso(run.retry_at) if run.retry_at else "at the daemon's next turn"


def adopt(specs: list[Spec], history_dir: Path, state: Path | str) -> list[Run]:
    """Record each one-shot's current revision as fired without firing it; the runs newly recorded."""
    done, _ = fired(history_dir, state)
    now = time.time()
    runs = [replace(new_run(spec, now), status=RunStatus.ADOPTED, finished_at=now) for spec in specs
            if spec.schedule is None and (spec.name, spec.revision) not in done]
    store = open_store(state)
    history = History(history_dir)
    try:
        adopted = store.decide(runs)
    finally:
        store.close()
    for run in adopted:
        history.decided(run, now, event="adopted")
    return adopted


def against_policy(specs: list[tuple[str, Spec]], policy: Policy) -> list[SpecError]:
    """The specs the policy refuses, each violation at the offending key of its file (`specs` pairs a
    spec with the path of its file as shown)."""
    out = []
    for shown, spec in specs:
        found = rules.violations(spec, policy.rules)
        if found:
            try:
                text = Path(shown).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                text = ""
            out.append(SpecError(shown, rules.problems(text, found)))
    return out


def held(specs: list[tuple[str, Spec]], policy: Policy, now: datetime) -> tuple[dict[str, list[Problem]],
                                                                                dict[str, str]]:
    """What the operator's config holds back, by trigger: the specs its policy refuses (see
    `against_policy`), and the triggers a freeze window covers now, with the window and its end."""
    names = {shown: spec.name for shown, spec in specs}
    refused = {names[e.path]: [Problem(p.message, e.path, p.line, p.column) for p in e.problems]
               for e in against_policy(specs, policy)}
    covered = {spec.name: str(freeze) for _, spec in specs
               if (freeze := frozen(policy.windows, spec.name, now)) is not None}
    return refused, covered
