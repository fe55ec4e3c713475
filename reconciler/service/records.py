"""What the records say, read by people and by the daemon alike: what has fired, what Jenkins
refused, and marking specs as fired without firing (`adopt`). The state store and the history are
read together: a fresh store may know less than the history committed to git."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from reconciler.core.runs import Run, RunStatus, new_run
from reconciler.core.schedule import cursors
from reconciler.core.spec import Spec
from reconciler.repo.history import History, iso
from reconciler.store.open import open_store, store_exists


def fired(history_dir: Path, state: Path | str) -> tuple[set[tuple[str, str]], dict[str, datetime]]:
    """What has fired, and where each schedule stands: the state store, and the history behind it."""
    found = {(r.trigger, r.fire_key) for r in History(history_dir).runs()}
    stored: dict[str, float] = {}
    if store_exists(state):
        store = open_store(state)
        try:
            found |= store.fired() | set(store.last_ticks().items())
            stored = store.cursors()
        finally:
            store.close()
    return found, cursors(stored, found)


def refused(state: Path | str) -> dict[tuple[str, str], str]:
    """Refused runs by (trigger, revision): why, and when the daemon posts them again."""
    if not store_exists(state):
        return {}
    store = open_store(state)
    try:
        runs = store.refused_due(float("inf"))
    finally:
        store.close()
    return {(r.trigger, r.fire_key): f"Jenkins refused it; next attempt {next_attempt(r)}: {r.last_error}"
            for r in runs}


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
