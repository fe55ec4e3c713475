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

from reconciler.core.operations import Pause, Request
from reconciler.core.redact import redact
from reconciler.core.runs import ACCEPTED, OPEN, Run, RunStatus, check_step

_RUN_INSERT = "INSERT INTO runs ({}) VALUES ({}) ON CONFLICT DO NOTHING"
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
    """
    CREATE TABLE requests (
        run_id          TEXT PRIMARY KEY,
        request_id      TEXT NOT NULL,
        trigger         TEXT NOT NULL,
        kind            TEXT NOT NULL,
        note            TEXT,
        requested_by    TEXT NOT NULL,
        os_user         TEXT NOT NULL,
        at              REAL NOT NULL,
        override_freeze INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE pauses (
        trigger    TEXT PRIMARY KEY,
        paused_by  TEXT NOT NULL,
        os_user    TEXT NOT NULL,
        note       TEXT,
        since      REAL NOT NULL,
        until      REAL,
        reason     TEXT,
        resumed_at REAL
    );
    CREATE TABLE operations (
        id       TEXT PRIMARY KEY,
        trigger  TEXT NOT NULL,
        event    TEXT NOT NULL,
        at       REAL NOT NULL,
        fields   TEXT NOT NULL,
        recorded INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX operations_unrecorded ON operations (at) WHERE recorded = 0;
    CREATE INDEX runs_requested ON runs (decided_at) WHERE status = 'requested';
    """,
]

COLUMNS = tuple(f.name for f in fields(Run))
SELECT = f"SELECT {','.join(COLUMNS)} FROM runs"
REQUEST_COLUMNS = ("run_id", "request_id", "trigger", "kind", "note", "requested_by", "os_user", "at",
                   "override_freeze")
PAUSE_COLUMNS = ("trigger", "paused_by", "os_user", "note", "since", "until", "reason", "resumed_at")


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
    def revive(self, runs: list[Run]) -> list[Run]: ...
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
    def request(self, runs: list[tuple[Run, Request]], entries: list[Operation]) -> list[Run]: ...
    def requested(self) -> list[tuple[Run, Request | None]]: ...
    def statuses(self, trigger: str, keys: Collection[str]) -> dict[str, str]: ...
    def pause(self, pause: Pause, entry: Operation) -> None: ...
    def resume(self, trigger: str, at: float, entry: Operation) -> bool: ...
    def pauses(self) -> list[Pause]: ...
    def unrecorded(self) -> list[Operation]: ...
    def recorded(self, ids: Collection[str]) -> None: ...


@dataclass(frozen=True, slots=True)
class Operation:
    """An operator's act (a request, a pause, a resume) waiting for the daemon to write its history line:
    the daemon is the one writer of history, wherever the command ran."""

    id: str
    trigger: str
    event: str
    at: float
    fields: dict[str, Any]


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
    """,
    """
    # -- operations (core/operations.py): requests, pauses, and their history lines ----------------
    def request(self, runs: list[tuple[Run, Request]], entries: list[Operation]) -> list[Run]:
        """Record requested runs, each with who asked and an entry for its history line, in one durable
        transaction; returns the runs that are new (a run already on record, a retried `--key`, is left
        as it is, and gets no second entry)."""
        statements: list[tuple[str, tuple[Any, ...]]] = []
        for (run, request), entry in zip(runs, entries, strict=True):
            statements += [_operation_sql(entry, "NOT EXISTS (SELECT 1 FROM runs WHERE run_id = ?)", run.run_id),
                           (_RUN_INSERT.format(",".join(COLUMNS), ",".join("?" * len(COLUMNS))), encode(run)),
                           (f"INSERT INTO requests ({','.join(REQUEST_COLUMNS)}) VALUES "
                            f"({','.join('?' * len(REQUEST_COLUMNS))}) ON CONFLICT DO NOTHING",
                            (request.run_id, request.request_id, request.trigger, request.kind,
                             stored_text(request.note), request.by, request.os_user, request.at,
                             int(request.override_freeze)))]
        if statements:
            self._write_steps(statements, durable=True)
        new = self._entries_among([e.id for e in entries])
        return [run for (run, _), entry in zip(runs, entries, strict=True) if entry.id in new]

    def _entries_among(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(ids):
            found |= {row[0] for row in self._read(
                f"SELECT id FROM operations WHERE id IN ({','.join('?' * len(chunk))})", tuple(chunk))}
        return found

    def requested(self) -> list[tuple[Run, Request | None]]:
        """Requested runs not yet taken up, oldest first, each with who asked for it."""
        cols = ",".join(f"runs.{c}" for c in COLUMNS) + "," + ",".join(f"q.{c}" for c in REQUEST_COLUMNS)
        rows = self._read(f"SELECT {cols} FROM runs LEFT JOIN requests q ON q.run_id = runs.run_id "
                          "WHERE runs.status = 'requested' ORDER BY runs.decided_at, runs.fire_key")
        out = []
        for row in rows:
            run, asked = decode(row[:len(COLUMNS)]), row[len(COLUMNS):]
            out.append((run, None if asked[0] is None else Request(
                run_id=asked[0], request_id=asked[1], trigger=asked[2], kind=asked[3], note=asked[4], by=asked[5],
                os_user=asked[6], at=asked[7], override_freeze=bool(asked[8]))))
        return out

    def statuses(self, trigger: str, keys: Collection[str]) -> dict[str, str]:
        """The status of each of `trigger`'s runs with one of these fire keys, by key."""
        found: dict[str, str] = {}
        for chunk in _chunks(list(keys)):
            found.update(self._read(f"SELECT fire_key, status FROM runs WHERE trigger = ? AND fire_key IN "
                                    f"({','.join('?' * len(chunk))})", (trigger, *chunk)))
        return found

    def pause(self, pause: Pause, entry: Operation) -> None:
        """Pause (or pause again, with a new note) a trigger, and its history line's entry."""
        values = (pause.trigger, pause.by, pause.os_user, stored_text(pause.note), pause.since, pause.until,
                  pause.reason, None)
        updates = ",".join(f"{c} = excluded.{c}" for c in PAUSE_COLUMNS[1:])
        self._write_steps([(f"INSERT INTO pauses ({','.join(PAUSE_COLUMNS)}) VALUES "
                            f"({','.join('?' * len(PAUSE_COLUMNS))}) ON CONFLICT (trigger) DO UPDATE SET {updates}",
                            values), _operation_sql(entry)], durable=True)

    def resume(self, trigger: str, at: float, entry: Operation) -> bool:
        """Lift a trigger's pause; False if it was not paused."""
        held = "EXISTS (SELECT 1 FROM pauses WHERE trigger = ? AND resumed_at IS NULL)"
        self._write_steps([_operation_sql(entry, held, trigger),
                           ("UPDATE pauses SET resumed_at = ? WHERE trigger = ? AND resumed_at IS NULL",
                            (at, trigger))], durable=True)
        return bool(self._entries_among([entry.id]))

    def pauses(self) -> list[Pause]:
        """Every trigger ever paused: those still held, and when the others were resumed."""
        rows = self._read(f"SELECT {','.join(PAUSE_COLUMNS)} FROM pauses ORDER BY trigger")
        return [Pause(trigger=r[0], by=r[1], os_user=r[2], note=r[3], since=r[4], until=r[5], reason=r[6],
                      resumed_at=r[7]) for r in rows]

    def unrecorded(self) -> list[Operation]:
        """Operators' acts whose history lines are not written yet, oldest first."""
        rows = self._read("SELECT id, trigger, event, at, fields FROM operations WHERE recorded = 0 ORDER BY at, id")
        return [Operation(id=r[0], trigger=r[1], event=r[2], at=r[3], fields=json.loads(r[4])) for r in rows]

    def recorded(self, ids: Collection[str]) -> None:
        self._write_steps([("UPDATE operations SET recorded = 1 WHERE id = ?", (i,)) for i in ids], durable=False)


def _operation_sql(entry: Operation, condition: str | None = None, *args: Any) -> tuple[str, tuple[Any, ...]]:
    """The INSERT of an operation's entry, made only if `condition` holds (in the same transaction)."""
    values = (entry.id, entry.trigger, entry.event, entry.at, redact(json.dumps(entry.fields, sort_keys=True)))
    if condition is None:
        return "INSERT INTO operations (id, trigger, event, at, fields) VALUES (?, ?, ?, ?, ?)", values
    return (f"INSERT INTO operations (id, trigger, event, at, fields) SELECT ?, ?, ?, ?, ? WHERE {condition}",
            (*values, *args))


def _chunks(items: list[str], size: int = 500) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
