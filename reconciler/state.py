"""The state store: every run, from the decision to fire to its outcome, in one SQLite file.

The decision is committed before the POST and the outcome after it. A UNIQUE (trigger, fire_key)
constraint makes a second fire of one revision (or one scheduled tick) impossible, whatever the
process does in between.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

from .errors import StateError
from .logs import redact

OPEN = ("decided", "posting", "queued", "building")
"""A run in one of these states still has work to do: post it, or follow it. A `refused` run (Jenkins
never accepted it) waits for its `retry_at`, when the daemon posts it again."""
_OPEN_SQL = ",".join(f"'{status}'" for status in OPEN)
"""OPEN as SQL literals: SQLite uses the partial index of open runs only for a query that names its
values, not one that binds them as parameters (that one read every run ever recorded)."""

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
]


@dataclass(frozen=True, slots=True)
class Run:
    run_id: str
    trigger: str
    fire_key: str
    server: str
    job: str
    parameters: tuple[tuple[str, str], ...] | None
    cause: str | None
    tag_param: str | None
    status: str
    decided_at: float
    posted_at: float | None = None
    queue_url: str | None = None
    build_number: int | None = None
    build_url: str | None = None
    result: str | None = None
    duration_ms: int | None = None
    finished_at: float | None = None
    attempts: int = 0
    last_error: str | None = None
    retry_at: float | None = None
    """For a run Jenkins refused (status `refused`): when to post it again."""
    provenance: dict[str, str] | None = None
    """The commit behind the spec it fired (sha, author, email, date, subject), where git knows it."""

    @property
    def is_open(self) -> bool:
        return self.status in OPEN


COLUMNS = tuple(f.name for f in fields(Run))


class StateStore(Protocol):
    """What the daemon asks of a state store; `Store` (SQLite) and `pgstore.PgStore` both answer it."""

    path: Any

    def decide(self, runs: list[Run], cursors: dict[str, float] | None = None) -> list[Run]: ...
    def update_many(self, steps: list[tuple[Run, dict[str, Any]]], *, durable: bool = False) -> list[Run]: ...
    def retry_now(self, triggers: Collection[str] | None = None) -> int: ...
    def fired_among(self, fires: Collection[tuple[str, str]]) -> set[tuple[str, str]]: ...
    def fired(self) -> set[tuple[str, str]]: ...
    def last_ticks(self) -> dict[str, str]: ...
    def cursors(self) -> dict[str, float]: ...
    def open_runs(self, excluding: Collection[str] = ()) -> list[Run]: ...
    def runs(self, trigger: str | None = None, limit: int = 1000) -> list[Run]: ...
    def latest(self) -> dict[str, Run]: ...
    def refused_due(self, now: float) -> list[Run]: ...
    def next_retry_at(self) -> float | None: ...
    def writable(self) -> str | None: ...
    def is_empty(self) -> bool: ...
    def close(self) -> None: ...


def is_dsn(location: object) -> bool:
    """Whether a --state value names a PostgreSQL database rather than a SQLite file."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def open_store(location: Path | str) -> StateStore:
    """The state store at `location`: a SQLite file, or a PostgreSQL DSN (`postgresql://…`)."""
    if not is_dsn(location):
        return Store(Path(location))
    from .pgstore import PgStore  # psycopg is imported only by those who use it

    return PgStore(str(location))


def store_exists(location: Path | str) -> bool:
    """Whether there is a store to read (a database is assumed to be there; a file may not be yet)."""
    return is_dsn(location) or Path(location).exists()


def state_location(text: str) -> Path | str:
    """`--state`: a DSN stays a string (a Path would fold its `//`), anything else is a file."""
    return text if is_dsn(text) else Path(text)


def run_id_of(trigger: str, fire_key: str) -> str:
    """A run's id follows from what it fires (the trigger and its revision or tick), not from chance: a
    process that lost the record of a fire (a fresh pod whose last history lines never reached git)
    derives the same id, and finds the build Jenkins keeps it on, instead of posting it again."""
    return hashlib.sha256(f"{trigger}\0{fire_key}".encode()).hexdigest()[:16]


def _encode(run: Run) -> tuple[Any, ...]:
    values = [getattr(run, c) for c in COLUMNS]
    values[COLUMNS.index("parameters")] = None if run.parameters is None else json.dumps(run.parameters)
    values[COLUMNS.index("provenance")] = None if run.provenance is None else json.dumps(run.provenance)
    values[COLUMNS.index("last_error")] = _text(run.last_error)
    return tuple(values)


def _text(error: str | None) -> str | None:
    """An error's text as stored: Jenkins or a proxy may echo a credential back in an error page."""
    return None if error is None else redact(error)


def _decode(row: tuple[Any, ...]) -> Run:
    data = dict(zip(COLUMNS, row, strict=True))
    if data["parameters"] is not None:
        data["parameters"] = tuple(tuple(p) for p in json.loads(data["parameters"]))
    if data["provenance"] is not None:
        data["provenance"] = json.loads(data["provenance"])
    return Run(**data)


class Store:
    """One connection, shared by the daemon's threads behind a lock; SQLite in WAL mode."""

    def __init__(self, path: Path):
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.created = not path.exists() or path.stat().st_size == 0
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA cache_size=-1024")  # KiB: the hot pages are the unique index's
            self._migrate()
        except sqlite3.Error as e:
            raise StateError(f"cannot open state store {path}: {e}") from None
        except OSError as e:
            raise StateError(f"cannot create state store {path}: {e.strerror}") from None
        self._lock = threading.Lock()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StateError(f"state store {self.path} has schema version {version}, newer than this "
                             f"reconciler knows ({len(MIGRATIONS)}); upgrade the reconciler")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._durably():
                self._db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _durably(self) -> Iterator[None]:
        """Commits inside are fsynced (WAL, synchronous=FULL); the rest run at NORMAL, which survives
        kill -9 but not a power loss. Every statement is one more GIL hand-off in a busy daemon."""
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            yield
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")

    @contextlib.contextmanager
    def _writing(self, what: str, *, durable: bool) -> Iterator[None]:
        """The connection, held for a write. Whatever fails, no transaction is left open (every later
        write would fail inside it), and a store error says what could not be written where."""
        with self._lock, self._durably() if durable else contextlib.nullcontext():
            try:
                yield
            except BaseException as e:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise StateError(f"cannot {what} {self.path}: {e}") from None
                raise

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise StateError(f"cannot read state store {self.path}: {e}") from None

    # -- writes ---------------------------------------------------------------------------
    def decide(self, runs: list[Run], cursors: dict[str, float] | None = None) -> list[Run]:
        """Record decisions in one transaction; returns the runs that were new (the others exist).

        `cursors` moves schedules' last handled tick in the same transaction as the ticks' runs.
        """
        if not runs and not cursors:
            return []
        placeholders = ",".join("?" * len(COLUMNS))
        inserted: list[Run] = []
        with self._writing("record decisions in", durable=True):
            self._db.execute("BEGIN IMMEDIATE")
            for run in runs:
                cur = self._db.execute(
                    f"INSERT OR IGNORE INTO runs ({','.join(COLUMNS)}) VALUES ({placeholders})", _encode(run))
                if cur.rowcount:
                    inserted.append(run)
            for trigger, after in (cursors or {}).items():
                self._db.execute("INSERT INTO cursors (trigger, after) VALUES (?, ?) ON CONFLICT (trigger) "
                                 "DO UPDATE SET after = MAX(after, excluded.after)", (trigger, after))
            self._db.execute("COMMIT")
        return inserted

    def update_many(self, steps: list[tuple[Run, dict[str, Any]]], *, durable: bool = False) -> list[Run]:
        """Record a step of each of several runs in one commit: the steps a burst takes together share
        a commit, and one fsync if `durable`. Only `durable` commits are fsynced: every write survives
        kill -9 (WAL), and after a power loss a run whose later steps were lost falls back to its last
        durable one."""
        statements = []
        for run, changes in steps:
            values = [json.dumps(v) if k == "parameters" and v is not None else _text(v) if k == "last_error" else v
                      for k, v in changes.items()]
            statements.append((f"UPDATE runs SET {','.join(f'{k} = ?' for k in changes)} WHERE run_id = ?",
                               (*values, run.run_id)))
        with self._writing("write state store", durable=durable):
            if len(statements) == 1:
                self._db.execute(*statements[0])
            else:
                self._db.execute("BEGIN IMMEDIATE")
                for sql, args in statements:
                    self._db.execute(sql, args)
                self._db.execute("COMMIT")
        return [replace(run, **changes) for run, changes in steps]

    # -- reads ----------------------------------------------------------------------------
    def fired_among(self, fires: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these `(trigger, fire_key)` pairs have fired. Asked of the store on each pass, in one
        query, not kept in memory: the store stays the one record of what fired. One query for the pass,
        not one per spec: in a resync of a large tree, this is the question asked most."""
        if not fires:
            return set()
        return set(self._read("SELECT trigger, fire_key FROM runs WHERE (trigger, fire_key) IN (SELECT "
                              "json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))",
                              (json.dumps(list(fires)),)))

    def fired(self) -> set[tuple[str, str]]:
        """The one-shot revisions ever fired. Ticks are not listed: a schedule's cursor (and the
        UNIQUE key) keeps each tick to one fire, and a minutely schedule has half a million a year."""
        return set(self._read("SELECT trigger, fire_key FROM runs WHERE fire_key NOT LIKE '@%'"))

    def last_ticks(self) -> dict[str, str]:
        """Each schedule's latest recorded tick key (keys sort as their times do)."""
        return dict(self._read("SELECT trigger, MAX(fire_key) FROM runs WHERE fire_key LIKE '@%' GROUP BY trigger"))

    def cursors(self) -> dict[str, float]:
        return dict(self._read("SELECT trigger, after FROM cursors"))

    def open_runs(self, excluding: Collection[str] = ()) -> list[Run]:
        """The runs with work left, but those whose ids are `excluding` (those already carried, when
        a full pass looks for stranded ones: only the others are decoded)."""
        rows = self._read(f"SELECT {','.join(COLUMNS)} FROM runs WHERE status IN ({_OPEN_SQL}) "
                          "AND run_id NOT IN (SELECT value FROM json_each(?)) ORDER BY decided_at",
                          (json.dumps(list(excluding)),))
        return [_decode(r) for r in rows]

    def runs(self, trigger: str | None = None, limit: int = 1000) -> list[Run]:
        where, args = ("WHERE trigger = ?", (trigger,)) if trigger else ("", ())
        rows = self._read(f"SELECT {','.join(COLUMNS)} FROM runs {where} ORDER BY decided_at DESC LIMIT ?",
                          (*args, limit))
        return [_decode(r) for r in rows]

    def latest(self) -> dict[str, Run]:
        """The newest run of every trigger."""
        rows = self._read(f"SELECT {','.join(COLUMNS)} FROM runs r WHERE decided_at = "
                          "(SELECT MAX(decided_at) FROM runs WHERE trigger = r.trigger) ORDER BY trigger")
        return {run.trigger: run for run in map(_decode, rows)}

    def refused_due(self, now: float) -> list[Run]:
        """Refused runs whose next attempt is due."""
        rows = self._read(f"SELECT {','.join(COLUMNS)} FROM runs WHERE status = 'refused' AND "
                          "COALESCE(retry_at, 0) <= ? ORDER BY decided_at", (now,))
        return [_decode(r) for r in rows]

    def next_retry_at(self) -> float | None:
        """When the next refused run is due (the daemon's loop wakes for it)."""
        return self._read("SELECT MIN(COALESCE(retry_at, 0)) FROM runs WHERE status = 'refused'")[0][0]

    def retry_now(self, triggers: Collection[str] | None = None) -> int:
        """Make refused runs (of `triggers`, or all) due at once; how many there were."""
        with self._writing("write state store", durable=False):
            if triggers is None:
                cur = self._db.execute("UPDATE runs SET retry_at = 0 WHERE status = 'refused'")
            else:
                cur = self._db.execute("UPDATE runs SET retry_at = 0 WHERE status = 'refused' AND trigger IN "
                                       "(SELECT value FROM json_each(?))", (json.dumps(list(triggers)),))
            return cur.rowcount

    def writable(self) -> str | None:
        """None if a write transaction can start; otherwise why not (for /readyz)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("ROLLBACK")
                return None
            except sqlite3.Error as e:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                return f"state store {self.path} is not writable: {e}"

    def is_empty(self) -> bool:
        return not self._read("SELECT 1 FROM runs LIMIT 1")
