"""Operating triggers without a commit: `trigger`, `pause`, `resume`, `backfill`.

Each command writes to the state store (`--state`, the daemon's own) and returns: the running daemon
takes it up within seconds, or `reconciler run --once` does. The daemon writes the history line of
each act, with who asked (`--by`, declared, not authenticated) and the OS user the command ran as, into
its own history (`--history` is taken, like every command's, and left to it).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from reconciler.cli import options
from reconciler.cli.options import (
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_OK,
    NoSuchTrigger,
    add_common,
    duration,
    env,
    timestamp,
)
from reconciler.core.freeze import frozen
from reconciler.core.operations import (
    BACKFILL_MAX,
    OperationError,
    Pause,
    Request,
    backfill_keys,
    backfill_run,
    backfill_ticks,
    check_note,
    holding,
    iso,
    request_id,
    requested_run,
)
from reconciler.core.policy import violations
from reconciler.core.runs import Run, RunStatus
from reconciler.core.spec import Spec
from reconciler.repo.catalog import Catalog
from reconciler.service.operations import entry
from reconciler.store.base import StateStore
from reconciler.store.open import open_store, store_exists

BY_HELP = "who asks, as recorded in history (default: $USER); declared, not authenticated: the OS user is " \
          "recorded beside it"


def register(sub: Any) -> None:
    p = options.parser(sub, "trigger", help="run a trigger once more now, without a commit",
                       description="One extra run of NAME now, one-shot or schedule, whatever its revision or tick, "
                                   "keyed by a run id of its own: each call is a new run (with --key, a retried "
                                   "call is the same run). A running daemon posts it within seconds; so does "
                                   "`reconciler run --once`. A paused trigger's request waits for `resume`.",
                       epilog="example: reconciler trigger nightly/regression --note 'after the fix' --by alice")
    p.add_argument("name", metavar="NAME", help="trigger name, e.g. nightly/regression")
    p.add_argument("--note", help="why, carried in the cause note and the history")
    p.add_argument("--by", default=None, help=BY_HELP)
    p.add_argument("--key", help="idempotency key: a second call with the same key is the same run")
    p.add_argument("--override-freeze", action="store_true",
                   help="fire now even inside a freeze window of the operator's config (recorded with the "
                        "request; never honoured from history)")
    add_common(p)
    p.set_defaults(func=cmd_trigger)

    p = options.parser(sub, "pause", help="hold triggers back, with a note, until resumed",
                       description="Nothing of a paused trigger fires: its ticks are recorded `skipped` (reason: "
                                   "paused) and never caught up; one-shots that become due, requested runs and "
                                   "backfills wait and fire on resume. `status` and `plan` show who paused it, "
                                   "when and why.",
                       epilog="example: reconciler pause nightly/regression --note 'Jenkins is sick, INC-42' "
                              "--until 2026-12-24T08:00:00+01:00")
    p.add_argument("names", nargs="+", metavar="NAME", help="trigger names")
    p.add_argument("--note", required=True, help="why (required): shown by status and plan, and in the history")
    p.add_argument("--until", type=_until, metavar="TIME",
                   help="resume by itself at this ISO 8601 time (naive means UTC), or after a duration like 2h")
    p.add_argument("--by", default=None, help=BY_HELP)
    add_common(p)
    p.set_defaults(func=cmd_pause)

    p = options.parser(sub, "resume", help="lift the pause of triggers",
                       description="Lift a pause: the next tick fires (the paused ones are not caught up), and "
                                   "what waited (one-shots, requested runs, backfills) fires now.",
                       epilog="example: reconciler resume nightly/regression")
    p.add_argument("names", nargs="+", metavar="NAME", help="trigger names")
    p.add_argument("--by", default=None, help=BY_HELP)
    add_common(p)
    p.set_defaults(func=cmd_resume)

    p = options.parser(sub, "backfill", help="fire the past ticks of a schedule that have no run",
                       description="Each tick of NAME's schedule in [--from, --to) that has no run (a tick "
                                   "recorded only as missed or skipped has none) is fired, keyed by its tick (a "
                                   "repeated backfill fires nothing), with scheduled_time_parameter set to that "
                                   "tick and a cause saying backfill. With concurrency: forbid, one at a time in "
                                   "tick order. Ticks after now are the schedule's own.",
                       epilog="example: reconciler backfill nightly/regression --from 2026-12-20T00:00Z "
                              "--to 2026-12-23T00:00Z --dry-run")
    p.add_argument("name", metavar="NAME", help="a scheduled trigger")
    p.add_argument("--from", dest="start", type=timestamp, required=True, metavar="TIME",
                   help="first instant (ISO 8601, naive means UTC), included")
    p.add_argument("--to", dest="end", type=timestamp, required=True, metavar="TIME", help="last instant, excluded")
    p.add_argument("--dry-run", action="store_true", help="list the ticks, as `next` does, and fire nothing")
    p.add_argument("--max", type=int, default=BACKFILL_MAX, metavar="N",
                   help=f"refuse (firing nothing) if more than N ticks would fire (default {BACKFILL_MAX})")
    p.add_argument("--note", help="why, carried in each run's cause note and history")
    p.add_argument("--by", default=None, help=BY_HELP)
    add_common(p)
    p.set_defaults(func=cmd_backfill)


def _until(text: str) -> float:
    try:
        return timestamp(text).timestamp()
    except argparse.ArgumentTypeError:
        try:
            return time.time() + duration(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"not an ISO 8601 time or a duration like 2h: {text!r}") from None


def os_user() -> str:
    """The account the command runs as (not $USER, which anyone may set)."""
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid()) if hasattr(os, "getuid") else getpass.getuser()


def who(args: argparse.Namespace) -> str:
    by = args.by or env("by") or os.environ.get("USER") or os_user()
    if not by.strip() or len(by) > 200 or any(ord(c) < 32 for c in by):
        raise OperationError("--by: a name on one line, at most 200 characters")
    return by


def _spec(catalog: Catalog, name: str, triggers: Any) -> Spec:
    if name in catalog.errors:
        raise OperationError(f"{name} is invalid, so it cannot run:\n{catalog.errors[name]}")
    spec = catalog.specs.get(name)
    if spec is None:
        raise NoSuchTrigger(f"no trigger {name} in {triggers}")
    return spec


def _policy_says(args: argparse.Namespace, spec: Spec, override: bool = False) -> str | None:
    """The operator's policy (--config) on a request: refused (OperationError) when it does not allow the
    spec; a note when a freeze window holds it now (it waits for the window's end, unless `override`)."""
    config = options.operator_config(args)
    if config is None:
        return None
    policy = config.rules()
    found = violations(spec, policy.rules)
    if found:
        raise OperationError(f"{spec.name}: the operator's policy does not allow it: {found[0].message}")
    freeze = frozen(policy.windows, spec.name, datetime.now(UTC))
    if freeze is None:
        return None
    if override:
        return f"{spec.name} is frozen ({freeze}); --override-freeze: it fires anyway, and the override is recorded"
    return f"{spec.name} is frozen ({freeze}); the run waits for the window's end (--override-freeze fires it now)"


def _held(store: StateStore, names: list[str], now: float) -> dict[str, Pause]:
    return {n: p for n, p in holding(store.pauses(), now).items() if n in names}


def _run_fields(run: Run, request: Request) -> dict[str, Any]:
    """The `requested` history line: the run's first, with what it takes to rebuild it and who asked."""
    return {"run_id": run.run_id, "fire_key": run.fire_key, "request_id": request.request_id, "kind": request.kind,
            "by": request.by, "os_user": request.os_user, "note": request.note,
            "override_freeze": request.override_freeze or None, "server": run.server, "job": run.job,
            "parameters": None if run.parameters is None else dict(run.parameters), "cause": run.cause,
            "tag_param": run.tag_param,
            "scheduled_for": run.fire_key[2:] if run.fire_key.startswith("+@") else None}


def cmd_trigger(args: argparse.Namespace) -> int:
    try:
        spec = _spec(Catalog.scanned(args.triggers), args.name, args.triggers)
        note, by = check_note(args.note), who(args)
        policy = _policy_says(args, spec, args.override_freeze)
    except OperationError as e:
        print(f"reconciler: {e}", file=sys.stderr)
        return EXIT_INVALID if args.name in Catalog.scanned(args.triggers).errors else EXIT_ERROR
    now = time.time()
    request = Request(run_id="", request_id=request_id(args.key, uuid.uuid4().hex[:16]), trigger=spec.name,
                      kind="trigger", note=note, by=by, os_user=os_user(), at=now,
                      override_freeze=args.override_freeze)
    run = requested_run(spec, request)
    request = replace(request, run_id=run.run_id)
    store = open_store(args.state)
    try:
        new = store.request([(run, request)], [entry(spec.name, "requested", now, **_run_fields(run, request))])
        held = _held(store, [spec.name], now)
        if not new:
            [known] = [r for r in store.runs(spec.name, limit=100_000) if r.run_id == run.run_id] or [run]
            print(f"{spec.name}: --key {args.key!r} was requested before: run {run.run_id} ({known.status}); "
                  "nothing new requested")
            return EXIT_OK
    finally:
        store.close()
    print(f"{spec.name}: requested run {run.run_id} by {by}; a running daemon posts it within seconds "
          "(or `reconciler run --once`)")
    if spec.name in held:
        print(f"{spec.name} is {held[spec.name].describe()}; the run waits for `reconciler resume {spec.name}`")
    if policy is not None:
        print(policy)
    return EXIT_OK


def _known(args: argparse.Namespace, names: list[str]) -> Catalog:
    catalog = Catalog.scanned(args.triggers)
    unknown = [n for n in names if n not in catalog.entries]
    if unknown:
        raise NoSuchTrigger(f"no trigger {', '.join(unknown)} in {args.triggers}: nothing done")
    return catalog


def cmd_pause(args: argparse.Namespace) -> int:
    try:
        _known(args, args.names)
        note, by = check_note(args.note), who(args)
    except OperationError as e:
        print(f"reconciler: {e}", file=sys.stderr)
        return EXIT_ERROR
    now = time.time()
    if args.until is not None and args.until <= now:
        print(f"reconciler: --until {iso(args.until)} has passed already: nothing paused", file=sys.stderr)
        return EXIT_ERROR
    user = os_user()
    store = open_store(args.state)
    try:
        for name in dict.fromkeys(args.names):
            pause = Pause(trigger=name, by=by, os_user=user, note=note, since=now, until=args.until)
            store.pause(pause, entry(name, "paused", now, by=by, os_user=user, note=note,
                                     until=None if args.until is None else iso(args.until)))
            print(f"{name}: {pause.describe()}")
    finally:
        store.close()
    options.note(args, "a running daemon holds them from its next turn (within seconds)")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    try:
        by = who(args)
    except OperationError as e:
        print(f"reconciler: {e}", file=sys.stderr)
        return EXIT_ERROR
    now, user = time.time(), os_user()
    store = open_store(args.state)
    try:
        for name in dict.fromkeys(args.names):
            if store.resume(name, now, entry(name, "resumed", now, by=by, os_user=user)):
                print(f"{name}: resumed by {by}")
            else:
                print(f"{name}: was not paused")
    finally:
        store.close()
    return EXIT_OK


def cmd_backfill(args: argparse.Namespace) -> int:
    try:
        spec = _spec(Catalog.scanned(args.triggers), args.name, args.triggers)
        note, by = check_note(args.note), who(args)
        policy = _policy_says(args, spec)
        now = datetime.now(UTC)
        keys = backfill_keys(spec, args.start, args.end, now) if spec.schedule else []
        recorded: dict[str, Any] = {}
        if keys and store_exists(args.state):
            store = open_store(args.state)
            try:
                recorded = {k: RunStatus(v) for k, v in store.statuses(spec.name, keys).items()}
            finally:
                store.close()
        ticks = backfill_ticks(spec, args.start, args.end, now, recorded)
    except OperationError as e:
        print(f"reconciler: {e}", file=sys.stderr)
        return EXIT_ERROR
    assert spec.schedule is not None
    firing = [t for t in ticks if t.fire]
    if args.dry_run or len(firing) > args.max:
        print(f"{spec.name}: {spec.schedule.expression!r} → {spec.schedule.cron!r} in {spec.schedule.timezone}")
        for t in ticks:
            verb = "fire" if t.fire else "skip"
            print(f"  {t.tick.astimezone(spec.schedule.tz).isoformat()}  ({t.tick:%Y-%m-%dT%H:%M:%SZ})  "
                  f"{verb}: {t.why}")
    if args.end > now:
        options.note(args, f"ticks after now ({now:%Y-%m-%dT%H:%M:%SZ}) are left to the schedule")
    if len(firing) > args.max:
        print(f"reconciler: {len(firing)} ticks would fire, more than --max {args.max}: nothing requested; "
              "narrow the range or raise --max", file=sys.stderr)
        return EXIT_ERROR
    if args.dry_run:
        options.note(args, f"{len(firing)} of {len(ticks)} tick(s) would fire; --dry-run: nothing requested")
        return EXIT_OK
    at = time.time()
    request = Request(run_id="", request_id=uuid.uuid4().hex[:16], trigger=spec.name, kind="backfill", note=note,
                      by=by, os_user=os_user(), at=at)
    pairs = []
    for t in firing:
        run = backfill_run(spec, t.tick, request)
        pairs.append((run, replace(request, run_id=run.run_id)))
    store = open_store(args.state)
    try:
        new = store.request(pairs, [entry(spec.name, "requested", at, **_run_fields(r, q)) for r, q in pairs])
        held = _held(store, [spec.name], at)
    finally:
        store.close()
    for run in new:
        print(f"  requested {run.fire_key[2:]}  run {run.run_id}")
    print(f"{spec.name}: {len(new)} backfill run(s) requested by {by}, {len(ticks) - len(firing)} tick(s) had runs "
          f"already; a running daemon posts them within seconds (or `reconciler run --once`)"
          + (", one at a time in tick order" if spec.concurrency != "allow" else ""))
    if spec.name in held:
        print(f"{spec.name} is {held[spec.name].describe()}; the runs wait for `reconciler resume {spec.name}`")
    if policy is not None and new:
        print(policy)
    return EXIT_OK
