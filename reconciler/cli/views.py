"""Views of what ran: `status`, `history`, `logs`."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.cli import options, output
from reconciler.cli.options import EXIT_OK, NoSuchTrigger, add_common, add_output, env, history_dir, note
from reconciler.config import Policy
from reconciler.core import text
from reconciler.core.errors import ConfigError
from reconciler.core.operations import holding
from reconciler.core.overview import as_json, outcome, overview
from reconciler.core.runs import OPEN
from reconciler.core.text import terminal
from reconciler.repo.catalog import Catalog
from reconciler.repo.history import History
from reconciler.service import records


def register(sub: Any) -> None:
    p = options.parser(sub, "status", help="every trigger: its kind, state, last run, next tick, why not firing",
                       description="Every trigger, from the specs on disk and the state store, as the web page shows "
                                   "it: its kind (one-shot or schedule), its state (fired, pending, scheduled, "
                                   "refused, failed, suspended, invalid, deleted) and why (the error with its "
                                   "position, the next attempt of a refused run), its newest run's result with the "
                                   "build link, how long ago, and a schedule's next tick. Only a run Jenkins "
                                   "accepted counts as fired. A table on a terminal; one tab-separated row per "
                                   "trigger otherwise.",
                       epilog="example: reconciler status --json | jq '.[] | select(.state == \"refused\")'")
    add_common(p, history=False)
    add_output(p)
    p.set_defaults(func=cmd_status)

    p = options.parser(sub, "history", help="the recorded events of one trigger",
                       description="Each event of the trigger's runs, oldest first: what was asked of Jenkins "
                                   "(parameters, the cause note, who asked), the queue item, the build, its "
                                   "result, and whether Jenkins kept the cause note and the parameters.",
                       epilog="examples: reconciler history team/deploy --json\n"
                              "          reconciler history team/deploy --follow --jsonl")
    p.add_argument("name", help="trigger name, e.g. team/deploy")
    p.add_argument("--history", type=Path, default=Path(env("history", "history")),
                   help="history directory (env RECONCILER_HISTORY)")
    p.add_argument("--triggers", type=Path, default=Path(env("triggers", "triggers")),
                   help="to tell a trigger with no runs yet from no trigger (env RECONCILER_TRIGGERS)")
    p.add_argument("--config", type=Path, default=env("config"),
                   help="the operator's config: with history write-back, the history is read from its clone "
                        "(env RECONCILER_CONFIG)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing events as they are recorded")
    add_output(p, jsonl="one event per line, as recorded (streams with --follow)")
    p.set_defaults(func=cmd_history)

    p = options.parser(sub, "logs", help="print the console of a trigger's latest build",
                       description="The console of the newest build of a trigger's runs, read from Jenkins "
                                   "(progressiveText). --follow waits for a run still queued to start its build, "
                                   "then prints until the build ends. --json prints the build's metadata "
                                   "instead of its console.",
                       epilog="example: reconciler logs team/deploy --follow")
    p.add_argument("name", help="trigger name, e.g. team/deploy")
    p.add_argument("-f", "--follow", action="store_true",
                   help="wait for the newest run's build, and keep printing while it runs")
    add_common(p, history=False)
    add_output(p)
    p.set_defaults(func=cmd_logs)


# -- status -----------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    """Every trigger: the specs on disk and every trigger the store has runs of, each with its newest run,
    as the web page shows them (core/overview.py: one source, schema/status.schema.json)."""
    catalog = Catalog.scanned(options.triggers_dir(args))
    store = options.state_store(args)
    try:
        latest = store.latest()
        outbox = store.outbox_summary()
        fired, given_up = records.revisions(store)
        pauses = store.pauses()
    finally:
        store.close()
    errors = {**{rel: e.error for rel, e in catalog.rejected.items() if e.error is not None}, **catalog.errors}
    now = datetime.now(UTC)
    config = options.operator_config(args)
    refused, frozen = records.held([(str(catalog.root / e.path), e.spec) for e in catalog.entries.values()
                                    if e.spec is not None], config.rules() if config else Policy(), now)
    rows = overview(catalog.specs, errors, latest, now, fired=fired, refused=refused, frozen=frozen,
                    paused=holding(pauses, now.timestamp()), given_up=given_up)
    if args.output == "json":
        output.document([as_json(row) for row in rows])
        return EXIT_OK
    table = output.Table("TRIGGER", "KIND", "STATE", "LAST RUN", "BUILD", "AGE", "NEXT TICK", "DETAIL")
    for row in rows:
        last = row.last
        build = output.Link("", None) if last is None else \
            output.Link(f"#{last.build_number}", last.build_url) if last.build_number else \
            output.Link("", last.queue_url)
        table.add(row.name, row.kind or "", output.Word(row.state), output.Word(outcome(last) if last else ""),
                  build, _age(now.timestamp() - last.decided_at) if last else "",
                  f"{row.next_tick:%Y-%m-%d %H:%M}Z" if row.next_tick else "", row.detail)
    table.show()
    if outbox["counts"]:
        print(_deliveries(outbox, now.timestamp()))
    return EXIT_OK


def _deliveries(outbox: dict[str, Any], now: float) -> str:
    """One line on commit statuses and messages: how many are sent, waiting (since when), given up (why)."""
    parts = []
    for kind, label in (("status", "commit statuses"), ("notify", "messages")):
        counts = outbox["counts"].get(kind)
        if counts:
            parts.append(f"{label} " + ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in
                                                 sorted(counts.items())))
    line = "deliveries: " + "; ".join(parts)
    if outbox["oldest_waiting"] is not None:
        line += f"; oldest waiting {_age(now - outbox['oldest_waiting'])}"
    given_up = outbox["last_given_up"]
    if given_up is not None:
        line += f"\nlast given up: {text.terminal(f'{given_up.trigger} ({given_up.kind} {given_up.state}): ')}" \
                f"{text.terminal(given_up.last_error or '')}"
    return line


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(int(seconds), 0)}s"


# -- history ----------------------------------------------------------------------------------
def cmd_history(args: argparse.Namespace) -> int:
    history = history_dir(args)
    if not history.is_dir():
        raise ConfigError(f"no history folder at {history} (--history, env RECONCILER_HISTORY)")
    read = History(history)
    events = read.read(args.name)
    for problem in read.problems:  # a bad line is skipped, and said
        note(args, f"reconciler: {output.shown(problem)}")
    if not events:
        if args.name not in Catalog.scanned(options.triggers_dir(args)).entries:
            raise NoSuchTrigger(f"no trigger {args.name} in {args.triggers}, and no history for it in {history}")
        note(args, f"reconciler: {args.name} has no runs yet")
    if args.output == "json":
        output.document({"trigger": args.name, "events": events})
        return EXIT_OK
    for ev in events:
        _show_event(args, ev)
    seen = len(events)
    while args.follow:
        time.sleep(1.0)
        events = History(history).read(args.name)
        for ev in events[seen:]:
            _show_event(args, ev)
        seen = len(events)
    return EXIT_OK


def _show_event(args: argparse.Namespace, ev: dict[str, Any]) -> None:
    if args.output == "jsonl":
        print(output.json_text(ev, sort_keys=True), flush=True)
        return
    print(terminal(history_line(ev)), flush=args.follow)


def history_line(ev: dict[str, Any]) -> str:
    """One event for people: what was sent (parameters, cause note, who asked), what Jenkins did with it."""
    parts = [str(ev.get("at")), f"{ev.get('event')!s:<9}", f"run {ev.get('run_id')}"]
    if "scheduled_for" in ev:
        parts.append(f"tick {ev['scheduled_for']}")
    if ev.get("event") in ("decided", "adopted", "missed", "skipped"):
        parts.append(f"job {ev.get('server', 'default')}:{ev.get('job')}")
        parts.append("parameters " + (_pairs(ev["parameters"]) if ev.get("parameters") else "none (build)"))
        commit = ev.get("provenance")
        if isinstance(commit, dict):
            parts.append(f"asked by {commit.get('author')} <{commit.get('email')}> in {str(commit.get('sha'))[:7]}")
        if ev.get("cause"):
            parts.append(f"cause {ev['cause']!r}")
    for key, label in (("queue_url", "queue"), ("result", "result"), ("number", "build #"), ("url", ""),
                       ("duration_ms", "ms")):
        if ev.get(key) is not None:
            parts.append(f"{label}{ev[key]}" if label.endswith("#") else
                         f"{ev[key]} {label}" if label == "ms" else f"{label} {ev[key]}".strip())
    if "causes" in ev:
        kept = any(ev.get("run_id", "") in str(c) for c in ev.get("causes") or ())
        parts.append("cause note kept by Jenkins" if kept else
                     "cause note dropped by Jenkins (the job has no build token)")
    if ev.get("ran_with"):
        parts.append(f"ran with {_pairs(ev['ran_with'])}")
    if ev.get("ignored"):
        parts.append(f"Jenkins dropped parameters {', '.join(map(str, ev['ignored']))} (the job does not define "
                     "them)")
    if ev.get("changed"):
        parts.append(f"Jenkins ran with other values: {_pairs(ev['changed'])}")
    if ev.get("reason"):
        parts.append(f"reason: {ev['reason']}")
    if ev.get("retry_at"):
        parts.append(f"next attempt {ev['retry_at']}")
    return output.shown("  ".join(parts))


def _pairs(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


# -- logs -------------------------------------------------------------------------------------
def cmd_logs(args: argparse.Namespace) -> int:
    from reconciler.jenkins.client import Client

    store = options.state_store(args)
    try:
        runs = store.runs(args.name)
        while args.follow and runs and runs[0].status in OPEN and not runs[0].build_url:  # the new build
            note(args, f"reconciler: run {runs[0].run_id} of {args.name} is {runs[0].status}; waiting for its "
                       "build to start")
            while runs and runs[0].status in OPEN and not runs[0].build_url:
                time.sleep(1.0)
                runs = store.runs(args.name)
    finally:
        store.close()
    if not runs and args.name not in Catalog.scanned(options.triggers_dir(args)).entries:
        raise NoSuchTrigger(f"no trigger {args.name} in {args.triggers}, and no runs of it in {args.state}")
    run = next((r for r in runs if r.build_url), None)
    if runs and run is not runs[0]:
        note(args, f"reconciler: the newest run of {args.name} ({runs[0].run_id}) is {runs[0].status}, without a "
                   "build" + (f"; showing the build before it, #{run.build_number}" if run else ""))
    if run is None:
        note(args, f"reconciler: {args.name} has no build yet")
        if args.output == "json":
            output.document(None)
        return EXIT_OK
    if args.output == "json":
        output.document({"trigger": run.trigger, "run_id": run.run_id, "status": str(run.status),
                         "server": run.server, "job": run.job, "build_number": run.build_number,
                         "build_url": run.build_url, "result": run.result})
        return EXIT_OK
    servers = options.servers(args)
    if run.server not in servers:
        raise ConfigError(f"server {run.server!r} of {args.name}'s build is not configured")
    client = Client(servers[run.server])
    start, more = 0, True
    try:
        while more:
            text, start, more = client.console(run.build_url or "", start)
            sys.stdout.write(output.shown(text))
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
