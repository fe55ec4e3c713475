"""Views of what ran: `status`, `history`, `logs`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler import logs
from reconciler.cli import options
from reconciler.cli.options import (
    EXIT_ERROR,
    EXIT_OK,
    add_common,
    env,
    history_dir,
)
from reconciler.config import Policy
from reconciler.core.errors import SpecError
from reconciler.core.freeze import frozen
from reconciler.core.policy import problems, violations
from reconciler.core.runs import RunStatus
from reconciler.repo.catalog import Catalog
from reconciler.repo.history import History, iso
from reconciler.service import records
from reconciler.store.open import open_store, store_exists


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="every trigger and its newest run",
                       description="Every trigger, from the specs on disk and the state store: never run, "
                                   "pending (refused, with the next attempt), queued, building, its result; "
                                   "invalid and deleted triggers marked.",
                       epilog="example: reconciler status --json | jq '.[] | select(.status == \"refused\")'")
    add_common(p, history=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("history", help="the recorded events of one trigger",
                       description="Each event of the trigger's runs, oldest first: what was asked of Jenkins "
                                   "(parameters, cause), the queue item, the build and its result.",
                       epilog="example: reconciler history team/deploy --json")
    p.add_argument("name", help="trigger name, e.g. team/deploy")
    p.add_argument("--history", type=Path, default=Path(env("history", "history")),
                   help="history directory (env RECONCILER_HISTORY)")
    p.add_argument("--triggers", type=Path, default=Path(env("triggers", "triggers")),
                   help="to tell a trigger with no runs yet from no trigger (env RECONCILER_TRIGGERS)")
    p.add_argument("--config", type=Path, default=env("config"),
                   help="the operator's config: with history write-back, the history is read from its clone "
                        "(env RECONCILER_CONFIG)")
    p.add_argument("--json", action="store_true", help="raw JSON lines")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("logs", help="print the console of a trigger's latest build",
                       description="The console of the newest build of a trigger's runs, read from Jenkins "
                                   "(progressiveText); --follow keeps printing until the build ends.",
                       epilog="example: reconciler logs team/deploy --follow")
    p.add_argument("name", help="trigger name, e.g. team/deploy")
    p.add_argument("--follow", action="store_true", help="keep printing while the build runs")
    add_common(p, history=False)
    p.set_defaults(func=cmd_logs)


def cmd_status(args: argparse.Namespace) -> int:
    """Every trigger: the specs on disk and every trigger the store has runs of, each with its newest run."""
    latest = {}
    if store_exists(args.state):
        store = open_store(args.state)
        try:
            latest = store.latest()
        finally:
            store.close()
    catalog = Catalog.scanned(args.triggers)
    now = time.time()
    config = options.operator_config(args)
    policy = Policy() if config is None else config.rules()
    rows = []
    for name in sorted(set(catalog.specs) | set(catalog.errors) | set(latest)):
        run = latest.get(name)
        spec = "valid" if name in catalog.specs else "invalid" if name in catalog.errors else "deleted"
        status = run.status if run else ("invalid" if spec == "invalid" else "never run")
        where = ""
        if run is not None:
            where = run.build_url or run.queue_url or run.last_error or ""
            if run.status is RunStatus.REFUSED:
                where = f"next attempt {records.next_attempt(run)}: {run.last_error}"
        elif spec == "invalid":
            where = str(catalog.errors[name]).splitlines()[0]
        held = _held(catalog, name, run, policy, now)
        if held is not None:
            spec, status, where = "valid" if held[0] == "frozen" else "invalid", *held
        rows.append((name, spec, status, run, where))
    if args.json:
        print(json.dumps([{"trigger": name, "spec": spec, "status": status, **(_run_json(run) if run else {})}
                          for name, spec, status, run, _ in rows], indent=2))
        return EXIT_OK
    table = [("TRIGGER", "STATUS", "RESULT", "BUILD", "AGE", "URL OR ERROR")]
    for name, spec, status, run, where in rows:
        shown = name + (" (deleted)" if spec == "deleted" else "")
        table.append((shown, status, (run.result or "") if run else "", str(run.build_number or "") if run else "",
                      _age(now - run.decided_at) if run else "", where))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    paint = _painter(sys.stdout)
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        cells[1], cells[2] = paint(row[1], cells[1]), paint(row[2], cells[2])
        print("  ".join(cells) + "  " + row[5])
    return EXIT_OK


def _held(catalog: Catalog, name: str, run: Any, policy: Policy, now: float) -> tuple[str, str] | None:
    """What the operator's config holds a valid spec to: refused by the policy (with the first offending
    key's position), or frozen, if due, until its window ends."""
    spec = catalog.specs.get(name)
    if spec is None:
        return None
    found = violations(spec, policy.rules)
    if found:
        path = catalog.root / catalog.entries[name].path
        with contextlib.suppress(OSError, UnicodeDecodeError):
            return "invalid (policy)", str(SpecError(str(path), problems(path.read_text("utf-8"), found[:1])))
        return "invalid (policy)", found[0].message
    due = spec.schedule is not None or run is None or run.fire_key != spec.revision
    freeze = frozen(policy.windows, name, datetime.fromtimestamp(now, UTC)) if due else None
    return None if freeze is None else ("frozen", str(freeze))


_COLOURS = {"SUCCESS": "32", "completed": "32", "UNSTABLE": "33", "refused": "31", "failed": "31", "lost": "31",
            "unknown": "31", "FAILURE": "31", "ABORTED": "33", "cancelled": "33", "invalid": "31",
            "invalid (policy)": "31", "frozen": "36", "building": "36", "queued": "36"}
"""ANSI colours of the words a status table shows: green done, yellow partly, red for what needs a person."""


def _painter(stream: Any) -> Any:
    """Colour on a terminal (unless NO_COLOR is set), plain text when piped."""
    if not stream.isatty() or os.environ.get("NO_COLOR"):
        return lambda word, cell: cell
    return lambda word, cell: f"\033[{_COLOURS[word]}m{cell}\033[0m" if word in _COLOURS else cell


def _run_json(run: Any) -> dict[str, Any]:
    return {"run_id": run.run_id, "result": run.result, "job": run.job, "server": run.server,
            "build_number": run.build_number, "build_url": run.build_url, "queue_url": run.queue_url,
            "decided_at": iso(run.decided_at), "posted_at": run.posted_at and iso(run.posted_at),
            "finished_at": run.finished_at and iso(run.finished_at), "duration_ms": run.duration_ms,
            "attempts": run.attempts, "last_error": run.last_error, "retry_at": run.retry_at and iso(run.retry_at),
            "parameters": dict(run.parameters) if run.parameters else None, "cause": run.cause,
            "provenance": run.provenance}


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def cmd_history(args: argparse.Namespace) -> int:
    history = history_dir(args)
    events = History(history).read(args.name)
    if not events:
        known = args.name in Catalog.scanned(args.triggers).entries
        print(f"reconciler: {args.name} has no runs yet" if known else
              f"reconciler: no trigger {args.name} in {args.triggers}, and no history for it in {history}",
              file=sys.stderr)
        return EXIT_OK if known else EXIT_ERROR
    for ev in events:
        if args.json:
            print(json.dumps(ev, sort_keys=True))
            continue
        shown = [("scheduled_for", "tick"), ("server", "server"), ("job", "job"), ("parameters", "parameters"),
                 ("cause", "cause"), ("queue_url", "queue"), ("number", "build"), ("result", "result"),
                 ("url", "url"), ("duration_ms", "ms"), ("reason", "reason")]
        extra = "  ".join(f"{label}={_plain(ev[key])}" for key, label in shown if key in ev)
        print(f"{ev.get('at')}  {ev.get('event'):<10} run {ev.get('run_id')}  {extra}".rstrip())
    return EXIT_OK


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def cmd_logs(args: argparse.Namespace) -> int:
    from reconciler.jenkins.client import Client
    if not store_exists(args.state):
        print(f"reconciler: no state store at {args.state}", file=sys.stderr)
        return EXIT_ERROR
    store = open_store(args.state)
    try:
        run = next((r for r in store.runs(args.name) if r.build_url), None)
    finally:
        store.close()
    if run is None:
        print(f"reconciler: {args.name} has no build yet", file=sys.stderr)
        return EXIT_ERROR
    servers = options.servers(args)
    if run.server not in servers:
        print(f"reconciler: server {run.server!r} of {args.name}'s build is not configured", file=sys.stderr)
        return EXIT_ERROR
    client = Client(servers[run.server])
    start, more = 0, True
    try:
        while more:
            text, start, more = client.console(run.build_url or "", start)
            sys.stdout.write(logs.redact(text))
            sys.stdout.flush()
            if not args.follow:
                break
            if not more:  # the build says when its log is complete, should a proxy drop X-More-Data
                more = client.build(run.build_url or "").log_open
            if more:
                time.sleep(1.0)
    finally:
        client.close()
    return EXIT_OK
