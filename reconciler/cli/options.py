"""What every command shares: options read from flags or RECONCILER_* variables, exit codes, servers."""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler import logs
from reconciler.config import HistoryRemote, OperatorConfig, Server, servers_of
from reconciler.store.open import state_location

EXIT_OK, EXIT_INVALID, EXIT_ERROR, EXIT_RUN_FAILED, EXIT_TIMEOUT = 0, 1, 2, 3, 4
"""`run --once`: 3 when a run was refused, failed, lost or cancelled, or (with --wait) its build ended
other than SUCCESS; 4 when --timeout passed first. Invalid specs (1) win over both."""


def env(name: str, default: Any = None) -> Any:
    return os.environ.get("RECONCILER_" + name.upper().replace("-", "_"), default)


def env_flag(name: str) -> bool:
    return str(env(name, "")).lower() in ("1", "true", "yes", "on")


def add_common(p: argparse.ArgumentParser, *, state: bool = True, history: bool = True) -> None:
    p.add_argument("--triggers", type=Path, default=Path(env("triggers", "triggers")),
                   help="directory of trigger specs (default: ./triggers; env RECONCILER_TRIGGERS)")
    p.add_argument("--config", type=Path, default=env("config"),
                   help="the operator's servers config, outside the triggers directory (env RECONCILER_CONFIG)")
    if state:
        p.add_argument("--state", type=state_location, default=state_location(env("state", ".reconciler/state.db")),
                       help="state store: a SQLite file (default: .reconciler/state.db) or postgresql://HOST/DB, "
                            "the password from PGPASSWORD or a passfile (env RECONCILER_STATE)")
    if history:
        p.add_argument("--history", type=Path, default=Path(env("history", "history")),
                       help="history directory, meant to be committed (default: ./history; env RECONCILER_HISTORY)")
    p.add_argument("--log-format", choices=("json", "console"), default=env("log_format", "json"),
                   help="log lines as JSON (default) or for people (env RECONCILER_LOG_FORMAT)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   default=env("log_level", "info"), help="(env RECONCILER_LOG_LEVEL)")


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("reconciler")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def duration(text: str) -> float:
    from reconciler.core.schedule import ScheduleError, parse_duration

    try:
        return parse_duration(str(text)).total_seconds()
    except ScheduleError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def operator_config(args: argparse.Namespace) -> OperatorConfig | None:
    """The operator's config file (--config), read once per command however many of its parts it uses."""
    if not getattr(args, "config", None):
        return None
    if "_operator_config" not in vars(args):
        args._operator_config = OperatorConfig.load(Path(args.config), triggers=args.triggers,
                                                    state=getattr(args, "state", None))
    return args._operator_config


def servers(args: argparse.Namespace) -> dict[str, Server]:
    servers = servers_of(operator_config(args))
    for server in servers.values():
        logs.add_secrets(server.secrets)
    return servers


def history_remote(args: argparse.Namespace) -> HistoryRemote | None:
    config = operator_config(args)
    return None if config is None else config.history_remote()


def history_dir(args: argparse.Namespace) -> Path:
    """Where the daemon writes history: in its write-back clone when the operator's config names a
    repository to push to, else --history."""
    remote = history_remote(args)
    return args.history if remote is None else remote.history_dir
