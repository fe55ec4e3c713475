"""The state store on PostgreSQL, for several replicas sharing the work: the same runs, the same rules.

The schema, its versions and the guarantees are SQLite's (see `state`): `UNIQUE (trigger, fire_key)`,
the decision committed before the POST, the posting mark, every step after. What PostgreSQL adds is
that several processes share it, so every write of a leader is fenced: it runs in a transaction that
first checks, under a share lock on the lease row, that this process still holds the lease it was
given (`fence`). A leader whose lease may have expired records nothing: its write fails, and the
run stays where the store says it is for the next leader.

Like the SQLite store, one connection serves the daemon's threads behind a lock. A connection that
breaks (PostgreSQL restarted, the backend terminated) is opened again on the next call, and while
the server is away, only after a pause that doubles; a write that met the break fails with a
StateError, which the daemon handles as a store that refused a write (the run stays where the store
says, for the next pass), and a read is made once more on a new connection.

Steps that SQLite writes without fsync are committed with `synchronous_commit = off` here (the
session's default; a durable write turns it on): they survive the reconciler's kill -9 (the
server has them) but perhaps not the server's crash, which leaves the run at its last durable step,
as SQLite's power loss does.

The password is never in the DSN the operator writes: PGPASSWORD, PGPASSFILE or a `passfile=`
parameter, all read by libpq itself.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import replace
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from reconciler.core.errors import NotLeader, StateError
from reconciler.core.runs import OPEN, Run, check_step
from reconciler.store import base
from reconciler.store.base import COLUMNS, SELECT, SqlStore, decode, encode, too_new


def _dialect(script: str) -> str:
    """A migration of SQLite's in PostgreSQL's types (a REAL there is a float4 here, too coarse for a time)."""
    return script.replace(" REAL", " DOUBLE PRECISION").replace("duration_ms  INTEGER", "duration_ms  BIGINT")


_LEASE_TABLE = """
    CREATE TABLE leader (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        holder     TEXT,
        epoch      BIGINT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    INSERT INTO leader (id, holder, epoch, expires_at) VALUES (1, NULL, 0, '-infinity');
"""

MIGRATIONS = [*map(_dialect, base.MIGRATIONS[:4]), _LEASE_TABLE, *map(_dialect, base.MIGRATIONS[4:])]
"""SQLite's first four versions, the lease (service/leadership.py) as the fifth, then SQLite's later
ones: a database's version number never changes meaning."""

RECONNECT_MIN = 0.2
RECONNECT_MAX = 5.0
"""Seconds between attempts to reach a server that is away: doubling from the first to the second."""

MIGRATION_LOCK = 7_215_001
"""The advisory lock replicas starting together take to migrate one at a time."""

_COLS = ",".join(COLUMNS)

Fence = Callable[[], tuple[str, int] | None]
"""The lease this process holds as (holder, epoch), or None while it may not write."""


def identity() -> str:
    """Who holds the lease, as an operator would look for it: the pod's name (else the host's) and the
    process, since a restarted container keeps its pod's name but is not the process that held it."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}/{os.getpid()}"


def _placeholders(sql: str) -> str:
    """A query written for both engines (`?`), as psycopg takes it (`%s`, a literal `%` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def display(dsn: str) -> str:
    """The DSN as it may be shown: host, port, database and user, never a password."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "postgresql://(unreadable DSN)"
    parts.pop("password", None)
    host, port = parts.get("host", ""), f":{parts['port']}" if parts.get("port") else ""
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname', '')}"


def check_dsn(dsn: str) -> None:
    """A password written into the DSN would be in every process listing and every copy of the
    config: refused, with where it belongs instead."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as e:
        raise StateError(f"cannot read the state DSN: {e}") from None
    if parts.get("password"):
        raise StateError("the state DSN carries a password; give it as PGPASSWORD, a PGPASSFILE, or "
                         "`?passfile=PATH`, so it is never written where the DSN is")


class PgStore(SqlStore):
    """The Store interface on one PostgreSQL connection, shared behind a lock."""

    def __init__(self, dsn: str, *, fence: Fence | None = None, connect_timeout: float = 5.0, hold: float = 3.0):
        """`hold`: the longest a session may sit in a transaction without a word (its process paused or
        cut off) before the server ends it, so a stalled leader's lock on the lease row cannot keep
        the next one from taking the lease; and the longest a statement waits for a lock."""
        check_dsn(dsn)
        self.dsn = dsn
        self.path = display(dsn)
        self.fence = fence
        """Set by leadership: the lease every write is checked against. None: writes are not fenced
        (the command line, a single replica)."""
        limits = (f"-c idle_in_transaction_session_timeout={int(hold * 1000)} -c lock_timeout={int(hold * 2000)} "
                  "-c synchronous_commit=off")  # durable writes turn it on for their transaction
        self._conninfo = make_conninfo(dsn, connect_timeout=max(1, int(connect_timeout)),
                                       application_name=f"reconciler {identity()}"[:63], options=limits)
        self._lock = threading.Lock()
        self._db: psycopg.Connection[Any] | None = None
        self._pause = 0.0
        self._retry_at = 0.0
        self._down = ""
        """Why the last connection attempt failed, while the server is away."""
        self.created = False
        with self._lock:
            self._connect()

    # -- the connection -------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection[Any]:
        """The connection, opened again if it broke; while the server is away, tried again only after a
        pause that doubles (up to RECONNECT_MAX), so that every thread's call does not become a connection
        attempt. The caller's error says when the next attempt is."""
        if self._db is not None and not self._db.closed and not self._db.broken:
            return self._db
        if self._db is not None:
            self._db.close()
            self._db = None
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            raise StateError(f"cannot reach state store {self.path}: {self._down}; trying again in {wait:.1f}s")
        try:
            self._db = psycopg.connect(self._conninfo, autocommit=True)
            self._migrate(self._db)
        except psycopg.Error as e:
            if self._db is not None:
                self._db.close()
            self._db = None
            self._down = _first_line(e)
            self._pause = min(self._pause * 2, RECONNECT_MAX) if self._pause else RECONNECT_MIN
            self._retry_at = time.monotonic() + self._pause
            raise StateError(f"cannot open state store {self.path}: {self._down}") from None
        self._pause, self._retry_at = 0.0, 0.0
        return self._db

    def _migrate(self, db: psycopg.Connection[Any]) -> None:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS reconciler_schema (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM reconciler_schema").fetchone()
            version = 0 if row is None else row[0]
            if row is None:
                db.execute("INSERT INTO reconciler_schema (version) VALUES (0)")
                self.created = True
            refusal = too_new(self.path, version, len(MIGRATIONS))
            if refusal is not None:
                raise StateError(refusal)
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                db.execute(script)
                db.execute("UPDATE reconciler_schema SET version = %s", (number,))

    def connection(self) -> psycopg.Connection[Any]:
        """A connection of its own, on the same DSN (leadership renews on one, never behind a query)."""
        return psycopg.connect(self._conninfo, autocommit=True)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()

    @contextlib.contextmanager
    def _writing(self, what: str, *, durable: bool) -> Iterator[psycopg.Connection[Any]]:
        """A fenced transaction: refused as a whole if this process's lease may have lapsed."""
        with self._lock:
            try:
                db = self._connect()
                with db.transaction():
                    if durable:  # the session's default is off (see __init__)
                        db.execute("SET LOCAL synchronous_commit = on")
                    self._check_fence(db)
                    yield db
            except NotLeader:
                raise
            except psycopg.Error as e:
                raise StateError(f"cannot {what} {self.path}: {_first_line(e)}") from None

    def _check_fence(self, db: psycopg.Connection[Any]) -> None:
        if self.fence is None:
            return
        lease = self.fence()
        if lease is None or not db.execute(f"SELECT 1 FROM leader WHERE {_HELD}", lease).fetchone():
            raise NotLeader(_LAPSED)

    def _step(self, run: Run, changes: dict[str, Any]) -> None:
        """One run's step that need not be fsynced, the commonest write of all (queued, started,
        completed): one statement, its own transaction, with the fence inside it."""
        sql, args = base.update_sql(run, changes)
        sql = _placeholders(sql)
        with self._lock:
            try:
                db = self._connect()
                if self.fence is None:
                    db.execute(sql, args)
                    return
                lease = self.fence()
                if lease is None:
                    raise NotLeader(_LAPSED)
                fenced = db.execute(f"WITH lease AS (SELECT 1 FROM leader WHERE {_HELD}) {sql} "
                                    "AND EXISTS (SELECT 1 FROM lease)", (*lease, *args))
                if fenced.rowcount == 0 and not db.execute(f"SELECT 1 FROM leader WHERE {_HELD}", lease).fetchone():
                    raise NotLeader(_LAPSED)
            except psycopg.Error as e:
                raise StateError(f"cannot write state store {self.path}: {_first_line(e)}") from None

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """A read that meets a connection the server's restart broke is made once more on a new one:
        reading twice is harmless, and the first read after an outage then succeeds."""
        with self._lock:
            try:
                return self._connect().execute(_placeholders(sql), args).fetchall()
            except psycopg.Error as e:
                if self._db is None or not self._db.broken:
                    raise StateError(f"cannot read state store {self.path}: {_first_line(e)}") from None
            try:
                return self._connect().execute(_placeholders(sql), args).fetchall()
            except psycopg.Error as e:
                raise StateError(f"cannot read state store {self.path}: {_first_line(e)}") from None

    # -- writes ---------------------------------------------------------------------------
    def decide(self, runs: list[Run], cursors: dict[str, float] | None = None) -> list[Run]:
        if not runs and not cursors:
            return []
        placeholders = ",".join(["%s"] * len(COLUMNS))
        inserted: list[Run] = []
        with self._writing("record decisions in", durable=True) as db:
            for run in runs:
                cur = db.execute(f"INSERT INTO runs ({_COLS}) VALUES ({placeholders}) ON CONFLICT DO NOTHING",
                                 encode(run))
                if cur.rowcount:
                    inserted.append(run)
            for trigger, after in (cursors or {}).items():
                db.execute("INSERT INTO cursors (trigger, after) VALUES (%s, %s) ON CONFLICT (trigger) "
                           "DO UPDATE SET after = GREATEST(cursors.after, excluded.after)", (trigger, after))
        return inserted

    def _write_steps(self, statements: list[tuple[str, tuple[Any, ...]]], *, durable: bool) -> None:
        with self._writing("write state store", durable=durable) as db:
            for sql, args in statements:
                db.execute(_placeholders(sql), args)

    def update_many(self, steps: list[tuple[Run, dict[str, Any]]], *, durable: bool = False) -> list[Run]:
        """One non-durable step, the commonest write of all, is one fenced statement (`_step`)."""
        if len(steps) == 1 and not durable:
            run, changes = steps[0]
            check_step(run, changes)
            self._step(run, changes)
            return [replace(run, **changes)]
        return super().update_many(steps, durable=durable)

    def retry_now(self, triggers: Collection[str] | None = None) -> int:
        with self._writing("write state store", durable=False) as db:
            if triggers is None:
                cur = db.execute("UPDATE runs SET retry_at = 0 WHERE status = 'refused'")
            else:
                cur = db.execute("UPDATE runs SET retry_at = 0 WHERE status = 'refused' AND trigger = ANY(%s::text[])",
                                 (list(triggers),))
            return cur.rowcount

    # -- reads ----------------------------------------------------------------------------
    def fired_among(self, fires: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        if not fires:
            return set()
        triggers, keys = zip(*fires, strict=True)
        return set(self._read("SELECT trigger, fire_key FROM runs WHERE (trigger, fire_key) IN "
                              "(SELECT * FROM unnest(?::text[], ?::text[])) AND status != 'abandoned'",
                              (list(triggers), list(keys))))

    def open_runs(self, excluding: Collection[str] = ()) -> list[Run]:
        rows = self._read(f"{SELECT} WHERE status = ANY(?::text[]) AND NOT run_id = ANY(?::text[]) "
                          "ORDER BY decided_at", (sorted(OPEN), list(excluding)))
        return [decode(r) for r in rows]

    def latest(self) -> dict[str, Run]:
        rows = self._read(f"SELECT DISTINCT ON (trigger) {_COLS} FROM runs ORDER BY trigger, decided_at DESC")
        return {run.trigger: run for run in map(decode, rows)}

    def writable(self) -> str | None:
        try:
            self._read("SELECT 1")
        except StateError as e:
            return str(e)
        return None



_HELD = "id = 1 AND holder = %s AND epoch = %s AND expires_at > now() FOR SHARE"
"""The lease row as this process holds it, share-locked: a takeover waits for the write, or comes first."""
_LAPSED = "not recorded: this process's lease has lapsed, and another replica may lead"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
