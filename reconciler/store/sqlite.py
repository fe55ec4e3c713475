"""The state store in one SQLite file (WAL): the embedded default, for one replica."""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
import threading
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from reconciler.core.errors import StateError
from reconciler.core.runs import Run
from reconciler.store.base import _OPEN_SQL, COLUMNS, MIGRATIONS, SELECT, SqlStore, decode, encode, too_new


class Store(SqlStore):
    """Two connections, shared by the daemon's threads behind one lock; SQLite in WAL mode. Durable
    writes go through one opened at synchronous=FULL (their commit is fsynced), the others through one
    at NORMAL (survives kill -9, not a power loss): a durable write is one statement, not three with
    the setting switched around it, and every statement is one more GIL hand-off in a busy daemon."""

    def __init__(self, path: Path):
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.created = not path.exists() or path.stat().st_size == 0
            self._db = self._connect("NORMAL")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._durable = self._connect("FULL")
            self._migrate()
        except sqlite3.Error as e:
            raise StateError(f"cannot open state store {path}: {e}") from None
        except OSError as e:
            raise StateError(f"cannot create state store {path}: {e.strerror}") from None
        self._lock = threading.Lock()

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("PRAGMA cache_size=-1024")  # KiB: the hot pages are the unique index's
        return db

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        refusal = too_new(self.path, version, len(MIGRATIONS))
        if refusal:
            raise StateError(refusal)
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self._durable.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")

    def close(self) -> None:
        self._db.close()
        self._durable.close()

    @contextlib.contextmanager
    def _writing(self, what: str, *, durable: bool) -> Iterator[sqlite3.Connection]:
        """A connection, held for a write: the FULL one if `durable`. Whatever fails, no transaction is
        left open (every later write would fail inside it), and a store error says what could not be
        written where."""
        db = self._durable if durable else self._db
        with self._lock:
            try:
                yield db
            except BaseException as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
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
        with self._writing("record decisions in", durable=True) as db:
            db.execute("BEGIN IMMEDIATE")
            for run in runs:
                cur = db.execute(f"INSERT OR IGNORE INTO runs ({','.join(COLUMNS)}) VALUES ({placeholders})",
                                 encode(run))
                if cur.rowcount:
                    inserted.append(run)
            for trigger, after in (cursors or {}).items():
                db.execute("INSERT INTO cursors (trigger, after) VALUES (?, ?) ON CONFLICT (trigger) "
                           "DO UPDATE SET after = MAX(after, excluded.after)", (trigger, after))
            db.execute("COMMIT")
        return inserted

    def _write_steps(self, statements: list[tuple[str, tuple[Any, ...]]], *, durable: bool) -> None:
        with self._writing("write state store", durable=durable) as db:
            if len(statements) == 1:
                db.execute(*statements[0])
            else:  # a batch of one kind of step (a burst's posting marks) is one call
                db.execute("BEGIN IMMEDIATE")
                for sql, same in itertools.groupby(statements, key=lambda statement: statement[0]):
                    db.executemany(sql, [args for _, args in same])
                db.execute("COMMIT")

    # -- reads ----------------------------------------------------------------------------
    def fired_among(self, fires: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these `(trigger, fire_key)` pairs have fired. Asked of the store on each pass, in one
        query, not kept in memory: the store stays the one record of what fired. One query for the pass,
        not one per spec: in a resync of a large tree, this is the question asked most."""
        if not fires:
            return set()
        return set(self._read("SELECT trigger, fire_key FROM runs WHERE (trigger, fire_key) IN (SELECT "
                              "json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?)) "
                              "AND status != 'abandoned'",
                              (json.dumps(list(fires)),)))

    def open_runs(self, excluding: Collection[str] = ()) -> list[Run]:
        """The runs with work left, but those whose ids are `excluding` (those already carried, when
        a full pass looks for stranded ones: only the others are decoded)."""
        rows = self._read(f"{SELECT} WHERE status IN ({_OPEN_SQL}) "
                          "AND run_id NOT IN (SELECT value FROM json_each(?)) ORDER BY decided_at",
                          (json.dumps(list(excluding)),))
        return [decode(r) for r in rows]

    def latest(self) -> dict[str, Run]:
        """The newest run of every trigger."""
        rows = self._read(f"{SELECT} r WHERE decided_at = "
                          "(SELECT MAX(decided_at) FROM runs WHERE trigger = r.trigger) ORDER BY trigger")
        return {run.trigger: run for run in map(decode, rows)}

    def retry_now(self, triggers: Collection[str] | None = None) -> int:
        """Make refused runs (of `triggers`, or all) due at once; how many there were."""
        with self._writing("write state store", durable=False) as db:
            if triggers is None:
                cur = db.execute("UPDATE runs SET retry_at = 0 WHERE status = 'refused'")
            else:
                cur = db.execute("UPDATE runs SET retry_at = 0 WHERE status = 'refused' AND trigger IN "
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
