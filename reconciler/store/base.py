"""What both engines of the state store share: the schema, the encoding of a run, the queries.

The decision is committed before the POST and the outcome after it. A UNIQUE (trigger, fire_key)
constraint makes a second fire of one revision (or one scheduled tick) impossible, whatever the
process does in between. Queries are written once, with `?` placeholders, in SQL both engines speak;
an engine rewrites the placeholders its driver wants (`SqlStore._read`) and answers the few
questions whose SQL differs. Every step of a run passes `core.runs.advance`, so no engine records a
transition the run lifecycle forbids.

Migrations are additive, one version at a time, so that during a rolling update an old and a new
replica can share one database; a store whose schema is newer than the code is refused, never written.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Protocol

from reconciler.core.redact import redact
from reconciler.core.runs import ACCEPTED, OPEN, Run, RunStatus, check_step

_OPEN_SQL = ",".join(f"'{status}'" for status in sorted(OPEN))
"""OPEN as SQL literals: SQLite uses the partial index of open runs only for a query that names its
values, not one that binds them as parameters (that one read every run ever recorded)."""
_UNACCEPTED_SQL = ",".join(f"'{status}'" for status in sorted(set(RunStatus) - ACCEPTED))

MIGRATIONS = [
    """
    CREATE TABLE runs (
        run_id       TEXT PRIMARY KEY,
        trigger      TEXT NOT NULL,
        fire_key     TEXT NOT NULL,
        server       TEXT NOT NULL,
        job          TEXT NOT NULL,
        parameters   TEXT,
        cause        TEXT,
        tag_param    TEXT,
        status       TEXT NOT NULL,
        decided_at   REAL NOT NULL,
        posted_at    REAL,
        queue_url    TEXT,
        build_number INTEGER,
        build_url    TEXT,
        result       TEXT,
        duration_ms  INTEGER,
        finished_at  REAL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        last_error   TEXT,
        UNIQUE (trigger, fire_key)
    );
    CREATE INDEX runs_by_trigger ON runs (trigger, decided_at);
    CREATE INDEX runs_open ON runs (status) WHERE status IN ('decided', 'posting', 'queued', 'building');
    """,
    """
    CREATE TABLE cursors (
        trigger TEXT PRIMARY KEY,
        after   REAL NOT NULL
    );
    """,
    """
    ALTER TABLE runs ADD COLUMN retry_at REAL;
    CREATE INDEX runs_refused ON runs (retry_at) WHERE status = 'refused';
    """,
    """
    ALTER TABLE runs ADD COLUMN provenance TEXT;
    """,
    """
    ALTER TABLE runs ADD COLUMN next_build INTEGER;
    """,
    """
    CREATE TABLE outbox (
        id         TEXT PRIMARY KEY,
        run_id     TEXT NOT NULL,
        trigger    TEXT NOT NULL,
        kind       TEXT NOT NULL,
        state      TEXT NOT NULL,
        payload    TEXT NOT NULL,
        created_at REAL NOT NULL,
        due_at     REAL NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 0,
        outcome    TEXT,
        done_at    REAL,
        last_error TEXT
    );
    CREATE INDEX outbox_due ON outbox (due_at) WHERE outcome IS NULL;
    CREATE INDEX outbox_by_run ON outbox (run_id, kind);
    CREATE TABLE streaks (
        trigger TEXT PRIMARY KEY,
        failing INTEGER NOT NULL,
        run_id  TEXT,
        at      REAL NOT NULL
    );
    """,
]

COLUMNS = tuple(f.name for f in fields(Run))
SELECT = f"SELECT {','.join(COLUMNS)} FROM runs"


OUTBOX_COLUMNS = ("id", "run_id", "trigger", "kind", "state", "payload", "created_at", "due_at", "attempts",
                  "outcome", "done_at", "last_error")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One row of the outbox: a commit status or a message waiting to be sent (or sent, or given up).
    Its id names the run, the channel and the step, so enqueuing a step again changes nothing."""

    id: str
    run_id: str
    trigger: str
    kind: str
    """`status`, or `notify<N>` for the operator's Nth channel."""
    state: str
    payload: dict[str, Any]
    created_at: float
    due_at: float
    attempts: int = 0
    outcome: str | None = None
    """None while waiting; `delivered`, `given_up` or `superseded` (a newer status of its run came first)."""
    done_at: float | None = None
    last_error: str | None = None


def _delivery(row: tuple[Any, ...]) -> Delivery:
    data = dict(zip(OUTBOX_COLUMNS, row, strict=True))
    data["payload"] = json.loads(data["payload"])
    return Delivery(**data)


class StateStore(Protocol):
    """What the daemon asks of a state store; `sqlite.Store` and `postgres.PgStore` both answer it."""

    path: Any

    def decide(self, runs: list[Run], cursors: dict[str, float] | None = None) -> list[Run]: ...
    def update_many(self, steps: list[tuple[Run, dict[str, Any]]], *, durable: bool = False) -> list[Run]: ...
    def retry_now(self, triggers: Collection[str] | None = None) -> int: ...
    def fired_among(self, fires: Collection[tuple[str, str]]) -> set[tuple[str, str]]: ...
    def fired(self) -> set[tuple[str, str]]: ...
    def unaccepted(self) -> list[Run]: ...
    def revive(self, runs: list[Run]) -> list[Run]:
        """Decide again those of `runs` whose record was abandoned (a run read back from history that no
        spec asked for then): a line in history may say a revision was decided, but only a spec's asking
        makes it fire, so a forged line cannot keep a later change from firing. The runs revived."""
        revived = []
        for run in runs:
            [[status]] = self._read("SELECT status FROM runs WHERE run_id = ?", (run.run_id,)) or [[None]]
            if status == RunStatus.ABANDONED:
                changes = {c: getattr(run, c) for c in COLUMNS if c not in ("run_id", "trigger", "fire_key")}
                self.update_many([(replace(run, status=RunStatus.ABANDONED), changes)], durable=True)
                revived.append(run)
        return revived

    def last_ticks(self) -> dict[str, str]: ...
    def cursors(self) -> dict[str, float]: ...
    def open_runs(self, excluding: Collection[str] = ()) -> list[Run]: ...
    def runs(self, trigger: str | None = None, limit: int = 1000) -> list[Run]: ...
    def latest(self) -> dict[str, Run]: ...
    def refused_due(self, now: float) -> list[Run]: ...
    def next_retry_at(self) -> float | None: ...
    def writable(self) -> str | None: ...
    def is_empty(self) -> bool: ...
    def enqueue(self, rows: list[Delivery], streak: tuple[str, bool, str | None, float] | None = None) -> None: ...
    def outbox_due(self, now: float, limit: int = 50) -> list[Delivery]: ...
    def settle(self, delivery: Delivery, **changes: Any) -> None: ...
    def outbox_summary(self) -> dict[str, Any]: ...
    def outbox_oldest(self) -> float | None: ...
    def streak(self, trigger: str) -> tuple[bool, str | None, float] | None: ...
    def has_streaks(self) -> bool: ...
    def outcomes_since(self, since: float) -> list[Run]: ...
    def newest_outcomes(self) -> list[Run]: ...
    def prune_outbox(self, before: float) -> int: ...
    def close(self) -> None: ...


def too_new(path: object, version: int, known: int) -> str | None:
    """Why a store cannot be used by code that knows `known` versions, if it cannot. Every migration
    adds (a table, a nullable column, an index) and drops nothing, so code one version behind still
    reads and writes the store correctly: that is what lets an old and a new replica share one
    database during a rolling update. Two or more versions ahead is refused before anything is written."""
    if version <= known + 1:
        return None
    return (f"state store {path} has schema version {version}, newer than this reconciler knows "
            f"({known}); upgrade the reconciler (older code never writes a store it may not understand)")


def encode(run: Run) -> tuple[Any, ...]:
    values = [getattr(run, c) for c in COLUMNS]
    values[COLUMNS.index("parameters")] = None if run.parameters is None else json.dumps(run.parameters)
    values[COLUMNS.index("provenance")] = None if run.provenance is None else json.dumps(run.provenance)
    values[COLUMNS.index("last_error")] = stored_text(run.last_error)
    return tuple(values)


def stored_text(error: str | None) -> str | None:
    """An error's text as stored: Jenkins or a proxy may echo a credential back in an error page."""
    return None if error is None else redact(error)


def decode(row: tuple[Any, ...]) -> Run:
    data = dict(zip(COLUMNS, row, strict=True))
    if data["parameters"] is not None:
        data["parameters"] = tuple(tuple(p) for p in json.loads(data["parameters"]))
    if data["provenance"] is not None:
        data["provenance"] = json.loads(data["provenance"])
    return Run(**data)


def update_sql(run: Run, changes: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """One step of one run as an UPDATE, its values encoded as `encode` would."""
    values = [json.dumps(v) if k == "parameters" and v is not None else stored_text(v) if k == "last_error" else v
              for k, v in changes.items()]
    return f"UPDATE runs SET {','.join(f'{k} = ?' for k in changes)} WHERE run_id = ?", (*values, run.run_id)


class SqlStore:
    """The queries both engines answer alike. An engine provides `_read` (a query, `?` placeholders)
    and `_write_steps` (UPDATE statements in one transaction)."""

    path: Any

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _write_steps(self, statements: list[tuple[str, tuple[Any, ...]]], *, durable: bool) -> None:
        raise NotImplementedError

    def update_many(self, steps: list[tuple[Run, dict[str, Any]]], *, durable: bool = False) -> list[Run]:
        """Record a step of each of several runs in one commit: the steps a burst takes together share
        a commit, and one fsync if `durable`. Only `durable` commits are fsynced: every write survives
        kill -9, and after a power loss a run whose later steps were lost falls back to its last
        durable one. A step the run lifecycle forbids is refused before anything is written."""
        for run, changes in steps:
            check_step(run, changes)
        self._write_steps([update_sql(run, changes) for run, changes in steps], durable=durable)
        return [replace(run, **changes) for run, changes in steps]

    def fired(self) -> set[tuple[str, str]]:
        """The one-shot revisions ever decided. Ticks are not listed: a schedule's cursor (and the
        UNIQUE key) keeps each tick to one fire, and a minutely schedule has half a million a year."""
        return set(self._read("SELECT trigger, fire_key FROM runs WHERE fire_key NOT LIKE '@%' "
                              "AND status != 'abandoned'"))

    def unaccepted(self) -> list[Run]:
        """The one-shot runs decided that Jenkins has not accepted (or not yet): `fired` lists them too,
        for the daemon decides a revision once, but a reader must not call them fired."""
        rows = self._read(f"{SELECT} WHERE fire_key NOT LIKE '@%' AND status IN ({_UNACCEPTED_SQL})")
        return [decode(r) for r in rows]

    def revive(self, runs: list[Run]) -> list[Run]:
        """Decide again those of `runs` whose record was abandoned (a run read back from history that no
        spec asked for then): a line in history may say a revision was decided, but only a spec's asking
        makes it fire, so a forged line cannot keep a later change from firing. The runs revived."""
        revived = []
        for run in runs:
            [[status]] = self._read("SELECT status FROM runs WHERE run_id = ?", (run.run_id,)) or [[None]]
            if status == RunStatus.ABANDONED:
                changes = {c: getattr(run, c) for c in COLUMNS if c not in ("run_id", "trigger", "fire_key")}
                self.update_many([(replace(run, status=RunStatus.ABANDONED), changes)], durable=True)
                revived.append(run)
        return revived

    def last_ticks(self) -> dict[str, str]:
        """Each schedule's latest recorded tick key (keys sort as their times do)."""
        return dict(self._read("SELECT trigger, MAX(fire_key) FROM runs WHERE fire_key LIKE '@%' GROUP BY trigger"))

    def cursors(self) -> dict[str, float]:
        return dict(self._read("SELECT trigger, after FROM cursors"))

    def runs(self, trigger: str | None = None, limit: int = 1000) -> list[Run]:
        where, args = ("WHERE trigger = ?", (trigger,)) if trigger else ("", ())
        rows = self._read(f"{SELECT} {where} ORDER BY decided_at DESC LIMIT ?", (*args, limit))
        return [decode(r) for r in rows]

    def refused_due(self, now: float) -> list[Run]:
        """Refused runs whose next attempt is due."""
        rows = self._read(f"{SELECT} WHERE status = 'refused' AND COALESCE(retry_at, 0) <= ? ORDER BY decided_at",
                          (now,))
        return [decode(r) for r in rows]

    def next_retry_at(self) -> float | None:
        """When the next refused run is due (the daemon's loop wakes for it)."""
        return self._read("SELECT MIN(COALESCE(retry_at, 0)) FROM runs WHERE status = 'refused'")[0][0]

    def is_empty(self) -> bool:
        return not self._read("SELECT 1 FROM runs LIMIT 1")

    # -- the outbox (service/deliveries.py) ---------------------------------------------------
    def enqueue(self, rows: list[Delivery], streak: tuple[str, bool, str | None, float] | None = None) -> None:
        """Add deliveries (one already there is left as it is) and move a trigger's streak, in one
        commit. A commit status supersedes its run's older ones still waiting: only the newest is sent."""
        statements: list[tuple[str, tuple[Any, ...]]] = []
        for row in rows:
            values = asdict(row)
            values["payload"] = json.dumps(row.payload, sort_keys=True)
            values["last_error"] = stored_text(row.last_error)
            statements.append((f"INSERT INTO outbox ({','.join(OUTBOX_COLUMNS)}) VALUES "
                               f"({','.join('?' * len(OUTBOX_COLUMNS))}) ON CONFLICT (id) DO NOTHING",
                               tuple(values[c] for c in OUTBOX_COLUMNS)))
            if row.kind == "status":
                statements.append(("UPDATE outbox SET outcome = 'superseded', done_at = ? WHERE run_id = ? AND "
                                   "kind = 'status' AND outcome IS NULL AND created_at < ? AND id <> ?",
                                   (row.created_at, row.run_id, row.created_at, row.id)))
        if streak is not None:
            trigger, failing, run_id, at = streak
            statements.append(("INSERT INTO streaks (trigger, failing, run_id, at) VALUES (?, ?, ?, ?) ON CONFLICT "
                               "(trigger) DO UPDATE SET failing = excluded.failing, run_id = excluded.run_id, "
                               "at = excluded.at", (trigger, int(failing), run_id, at)))
        if statements:
            self._write_steps(statements, durable=False)

    def outbox_due(self, now: float, limit: int = 50) -> list[Delivery]:
        rows = self._read(f"SELECT {','.join(OUTBOX_COLUMNS)} FROM outbox WHERE outcome IS NULL AND due_at <= ? "
                          "ORDER BY created_at, id LIMIT ?", (now, limit))
        return [_delivery(r) for r in rows]

    def settle(self, delivery: Delivery, **changes: Any) -> None:
        """Record how an attempt went: `outcome` (and `done_at`) once it is over, or the next `due_at`."""
        if "last_error" in changes:
            changes["last_error"] = stored_text(changes["last_error"])
        self._write_steps([(f"UPDATE outbox SET {','.join(f'{k} = ?' for k in changes)} WHERE id = ?",
                            (*changes.values(), delivery.id))], durable=False)

    def outbox_summary(self) -> dict[str, Any]:
        """Counts by kind and outcome (`waiting` for those not yet over), the oldest waiting one's time,
        and the newest given up, with why."""
        counts: dict[str, dict[str, int]] = {}
        for kind, outcome, count in self._read("SELECT CASE WHEN kind = 'status' THEN 'status' ELSE 'notify' END, "
                                               "COALESCE(outcome, 'waiting'), COUNT(*) FROM outbox GROUP BY 1, 2"):
            counts.setdefault(kind, {})[outcome] = count
        oldest = self.outbox_oldest()
        given_up = self._read(f"SELECT {','.join(OUTBOX_COLUMNS)} FROM outbox WHERE outcome = 'given_up' "
                              "ORDER BY done_at DESC LIMIT 1")
        return {"counts": counts, "oldest_waiting": oldest,
                "last_given_up": _delivery(given_up[0]) if given_up else None}

    def outbox_oldest(self) -> float | None:
        """When the oldest delivery still waiting was enqueued (read through the index of waiting ones)."""
        return self._read("SELECT MIN(created_at) FROM outbox WHERE outcome IS NULL AND due_at >= 0")[0][0]

    def streak(self, trigger: str) -> tuple[bool, str | None, float] | None:
        rows = self._read("SELECT failing, run_id, at FROM streaks WHERE trigger = ?", (trigger,))
        return None if not rows else (bool(rows[0][0]), rows[0][1], rows[0][2])

    def has_streaks(self) -> bool:
        return bool(self._read("SELECT 1 FROM streaks LIMIT 1"))

    def outcomes_since(self, since: float) -> list[Run]:
        """Runs that ended since `since`, oldest first, and those waiting after a refusal."""
        rows = self._read(f"{SELECT} WHERE finished_at >= ? OR status = 'refused' ORDER BY "
                          "COALESCE(finished_at, decided_at)", (since,))
        return [decode(r) for r in rows]

    def newest_outcomes(self) -> list[Run]:
        """Each trigger's newest run that ended (or waits refused): where its streak stands."""
        ended = "status IN ('completed', 'failed', 'lost', 'unknown', 'cancelled', 'refused')"
        rows = self._read(f"{SELECT} r WHERE {ended} AND COALESCE(finished_at, decided_at) = (SELECT "
                          f"MAX(COALESCE(finished_at, decided_at)) FROM runs WHERE trigger = r.trigger AND {ended})")
        return [decode(r) for r in rows]

    def prune_outbox(self, before: float) -> int:
        """Forget deliveries over before `before`; how many."""
        count = self._read("SELECT COUNT(*) FROM outbox WHERE outcome IS NOT NULL AND done_at < ?", (before,))[0][0]
        if count:
            self._write_steps([("DELETE FROM outbox WHERE outcome IS NOT NULL AND done_at < ?", (before,))],
                              durable=False)
        return count
