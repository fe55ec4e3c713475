"""Which engine a `--state` location names, and opening it: a SQLite file, or a PostgreSQL DSN."""

from __future__ import annotations

from pathlib import Path

from reconciler.store.base import StateStore


def is_dsn(location: object) -> bool:
    """Whether a --state value names a PostgreSQL database rather than a SQLite file."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def open_store(location: Path | str) -> StateStore:
    """The state store at `location`: a SQLite file, or a PostgreSQL DSN (`postgresql://…`)."""
    if not is_dsn(location):
        from reconciler.store.sqlite import Store

        return Store(Path(location))
    from reconciler.store.postgres import PgStore  # psycopg is imported only by those who use it

    return PgStore(str(location))


def store_exists(location: Path | str) -> bool:
    """Whether there is a store to read (a database is assumed to be there; a file may not be yet)."""
    return is_dsn(location) or Path(location).exists()


def state_location(text: str) -> Path | str:
    """`--state`: a DSN stays a string (a Path would fold its `//`), anything else is a file."""
    return text if is_dsn(text) else Path(text)
