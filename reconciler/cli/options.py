"""What every command shares: options read from flags or RECONCILER_* variables, exit codes, servers."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler import logs
from reconciler.config import HistoryRemote, OperatorConfig, Server, servers_of
from reconciler.core.errors import ConfigError, ReconcilerError
from reconciler.store.open import state_location

EXIT_OK, EXIT_INVALID, EXIT_ERROR, EXIT_RUN_FAILED, EXIT_TIMEOUT = 0, 1, 2, 3, 4
"""1: invalid specs, or no such trigger. 2: configuration (a missing folder, state store, git revision,
server or credential). `run --once`: 3 when a run was refused, failed, lost or cancelled, or (with
--wait) its build ended other than SUCCESS; 4 when --timeout passed first. Invalid specs (1) win over both."""
EXIT_PIPE = 141
"""The reader of stdout went away (`status | head -1`): ended quietly, as a shell reports SIGPIPE."""


class NoSuchTrigger(ReconcilerError):
    """A trigger name that neither the specs nor the records know: exit 1, like an invalid spec."""


class Formatter(argparse.HelpFormatter):
    """Help wrapped to the terminal's width, keeping the line breaks written into the text (examples)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent)
                         if line.strip() else "" for line in text.splitlines())


def parser(sub: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand, with the options every command takes (--quiet, --verbose)."""
    p: argparse.ArgumentParser = sub.add_parser(name, formatter_class=Formatter, **kwargs)
    talk = p.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true", help="print only the result: no notes or summaries "
                                                                "on stderr (and, for the daemon, warnings and "
                                                                "errors only)")
    talk.add_argument("-v", "--verbose", action="store_true", help="say more (for the daemon: debug logs)")
    return p


def add_output(p: argparse.ArgumentParser, *, jsonl: str | None = None) -> None:
    """`--json` (alias `-o json`): one JSON document, its shape in schema/<command>.schema.json."""
    p.add_argument("-o", "--output", choices=("text", "json", *(("jsonl",) if jsonl else ())), default="text",
                   help="text for people (default), or json: one document, its shape in schema/"
                        + (f"; jsonl: {jsonl}" if jsonl else ""))
    p.add_argument("--json", dest="output", action="store_const", const="json", help="same as -o json")
    if jsonl:
        p.add_argument("--jsonl", dest="output", action="store_const", const="jsonl", help="same as -o jsonl")


def add_logging(p: argparse.ArgumentParser) -> None:
    """For the commands that log (the daemon, the demo)."""
    p.add_argument("--log-format", choices=("json", "console"), default=env("log_format"),
                   help="log lines for people (console: the default on a terminal) or as JSON (the default "
                        "otherwise) (env RECONCILER_LOG_FORMAT)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=env("log_level"),
                   help="default info (--quiet: warning, --verbose: debug) (env RECONCILER_LOG_LEVEL)")


def note(args: argparse.Namespace, text: str) -> None:
    """A line for people on stderr (a summary, a hint), which --quiet leaves out."""
    if not getattr(args, "quiet", False):
        print(text, file=sys.stderr)


def triggers_dir(args: argparse.Namespace) -> Path:
    """--triggers, which must exist for a command that reads it."""
    path = Path(args.triggers)
    if not path.is_dir():
        raise ConfigError(f"no triggers folder at {path} (--triggers, env RECONCILER_TRIGGERS)"
                          if not path.exists() else f"--triggers {path} is not a folder")
    return path


def state_store(args: argparse.Namespace) -> Any:
    """--state, opened, for a command that reads it: it must exist (opening would create it)."""
    from reconciler.store.open import open_store, store_exists

    if not store_exists(args.state):
        raise ConfigError(f"no state store at {args.state} (--state, env RECONCILER_STATE): the daemon creates "
                          "it on its first pass")
    return open_store(args.state)


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
