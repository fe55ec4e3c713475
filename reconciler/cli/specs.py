"""Commands over the specs themselves: `validate`, `check`, `plan`, `next`, `schema`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.cli import options, output
from reconciler.cli.options import (
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_OK,
    NoSuchTrigger,
    add_common,
    add_output,
    duration,
    env,
    history_dir,
    note,
    timestamp,
)
from reconciler.config import Policy, Server
from reconciler.core.errors import ConfigError, Problem, SpecError
from reconciler.core.plan import Action, plan, unknown_server
from reconciler.core.preview import counted
from reconciler.core.runs import ACCEPTED, RunStatus
from reconciler.repo.catalog import Catalog, check_file
from reconciler.service import records


def register(sub: Any) -> None:
    p = options.parser(sub, "validate", help="check specs; prints file:line:col: message per error, exit 1 if any",
                       description="Judge spec files as the daemon does, without Jenkins: YAML, schema, links, "
                                   "names, and the servers they name when servers are configured. Fast enough "
                                   "for a pre-commit hook. Every problem of every file is printed; notes (how a "
                                   "job written as its URL path was read) go to stderr.",
                       epilog="examples: reconciler validate triggers/\n"
                              "          reconciler validate triggers/team/deploy.yaml --config /etc/reconciler/"
                              "servers.yaml")
    p.add_argument("paths", nargs="*", type=Path, help="files or directories (default: --triggers)")
    p.add_argument("--triggers", type=Path, default=Path(env("triggers", "triggers")),
                   help="the triggers directory, for links and the config file's place (env RECONCILER_TRIGGERS)")
    p.add_argument("--config", type=Path, default=env("config"),
                   help="the operator's config: specs naming another server, or asking what its `policy:` does "
                        "not allow, are invalid (env RECONCILER_CONFIG; JENKINS_URL makes `default` known)")
    add_output(p)
    p.set_defaults(func=cmd_validate)

    p = options.parser(sub, "check", help="check specs against the live Jenkins, read-only (GETs only)",
                       description="For each spec, against the configured server: the job exists and we may read "
                                   "it, is buildable, its parameter definitions match (unknown names, choices, "
                                   "booleans, parameters without defaults), the endpoint fits, and nothing "
                                   "redirects to a login page. One read per job however many specs name it; never "
                                   "a POST. A server that refuses our credentials (or sends us to a login page) is a "
                                   "configuration error: exit 2.",
                       epilog="example: reconciler check triggers/ --config /etc/reconciler/servers.yaml --json")
    p.add_argument("paths", nargs="*", type=Path, help="files or directories (default: --triggers)")
    p.add_argument("--triggers", type=Path, default=Path(env("triggers", "triggers")),
                   help="directory of trigger specs (env RECONCILER_TRIGGERS)")
    p.add_argument("--config", type=Path, default=env("config"),
                   help="the operator's servers config (env RECONCILER_CONFIG)")
    add_output(p)
    p.add_argument("--timeout", type=duration, default=duration("30s"), metavar="DURATION",
                   help="the longest a server's checks may take (default 30s)")
    p.set_defaults(func=cmd_check)

    p = options.parser(sub, "plan", help="what a pass would do now (or --at TIME), per trigger",
                       description="Per trigger: fire, up to date, pending (refused by Jenkins, to be posted "
                                   "again), paused (who, when, why; and the requested runs and backfill ticks that "
                                   "wait), scheduled (with the next tick), suspended or invalid. Reads the state "
                                   "store and the history (a missing state store: the history alone, said on "
                                   "stderr); sends nothing. Only a run Jenkins accepted counts as fired.",
                       epilog="example: reconciler plan --at 2026-12-24T03:00:00+01:00 --json")
    add_common(p)
    add_output(p)
    p.add_argument("--at", type=timestamp, help="ISO 8601 time to plan for (default: now); naive means UTC")
    p.add_argument("--base", metavar="REV", help="preview a change: compare the triggers at this git revision "
                                                 "(e.g. origin/main) with --head; offline, no Jenkins, no state")
    p.add_argument("--head", metavar="REV", help="with --base: the revision to merge (default: the working tree)")
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                   help="with --base: text, a markdown pull-request comment, or JSON")
    p.add_argument("--check", action="store_true",
                   help="with --base: also check what will fire against the live Jenkins (read-only)")
    p.set_defaults(func=cmd_plan)

    p = options.parser(sub, "next", help="upcoming fire times of a scheduled trigger",
                       description="The next ticks of a schedule, with H resolved, in its time zone and in UTC.",
                       epilog="example: reconciler next nightly/regression --count 10")
    p.add_argument("name", help="trigger name, e.g. nightly/regression")
    p.add_argument("--count", type=int, default=5, help="how many ticks (default 5)")
    p.add_argument("--triggers", type=Path, default=Path(env("triggers", "triggers")),
                   help="directory of trigger specs (env RECONCILER_TRIGGERS)")
    add_output(p)
    p.set_defaults(func=cmd_next)

    p = options.parser(sub, "schema", help="print the JSON Schema of a trigger spec (for editors and CI)",
                       description="The JSON Schema of a trigger spec, for editors (yaml-language-server) and CI. "
                                   "The shape of each command's --json output is in schema/<command>.schema.json.",
                       epilog="example: reconciler schema > schema/trigger.schema.json")
    p.set_defaults(func=cmd_schema)


def cmd_validate(args: argparse.Namespace) -> int:
    """Specs judged as the daemon judges them: their files, and the servers they name where servers are
    configured (a --config, or JENKINS_URL; in another repository's pre-commit hook there are none).
    Every problem is printed, a file's and the config's alike."""
    errors: list[SpecError | ConfigError] = []
    servers = None
    policy = Policy()
    if args.config or os.environ.get("JENKINS_URL"):
        try:
            servers = options.servers(args)
            policy = _policy(args) or policy
        except ConfigError as e:  # judged like any file: one more invalid one, with its position
            errors.append(e)
    count, invalid, specs = _collect(args.paths or [args.triggers], args)
    errors += invalid
    if servers is not None:
        errors += [SpecError(shown, [Problem(*_value_position(shown, "server"), unknown_server(spec.server,
                                                                                               servers))])
                   for shown, spec in specs if spec.server not in servers]
    errors += records.against_policy(specs, policy)
    warnings = [] if servers is None else untagged(specs, servers)
    notes = [(shown, *_value_position(shown, "job"), text) for shown, spec in specs for text in spec.notes]
    if args.output == "json":
        output.document({"checked": count, "invalid": len(errors), "problems": [
            problem for e in errors for problem in _problems(e)],
            "notes": [{"path": path, "line": line, "column": column, "message": text}
                      for path, line, column, text in notes],
            "warnings": warnings})
    else:
        for err in errors:
            print(output.shown(str(err)))
        for path, line, column, text in notes:
            note(args, output.shown(f"{path}:{line}:{column}: note: {text}"))
        for warning in warnings:
            note(args, output.shown(warning))
        warned = f", {counted(len(warnings), 'warning')}" if warnings else ""
        note(args, f"{counted(count, 'spec')} checked, {len(errors)} invalid{warned}")
    return EXIT_INVALID if errors else EXIT_OK


def untagged(specs: list[tuple[str, Any]], servers: Any) -> list[str]:
    """A warning for each spec whose runs carry no tag Jenkins keeps (its server has no job token, it
    has no run_id_parameter): after a crash while posting, such a run cannot be looked up in Jenkins."""
    out = []
    for path, spec in specs:
        server = servers.get(spec.server)
        if server is None or server.job_token or spec.run_id_parameter:
            continue
        line, column = _value_position(path, "job")
        out.append(f"{path}:{line}:{column}: warning: cannot be made exactly-once after a crash: no run id "
                   f"reaches Jenkins (server {spec.server!r} has no job_token, the spec no run_id_parameter), so "
                   "a run interrupted while posting cannot be looked up and is recorded `unknown`, not posted "
                   "again; set run_id_parameter to a parameter the job defines, or give the server a job_token "
                   "(and the job that token)")
    return out


def _problems(error: SpecError | ConfigError) -> list[dict[str, Any]]:
    """Each problem with its position; a config error's position is in its text (`file:line:col: …`)."""
    if isinstance(error, SpecError):
        return [{"path": error.path, "line": p.line, "column": p.column, "message": p.message}
                for p in error.problems]
    path, line, column, message = _split_position(str(error))
    return [{"path": path, "line": line, "column": column, "message": message}]


def _split_position(text: str) -> tuple[str, int, int, str]:
    import re

    found = re.match(r"^(.*?):(\d+):(\d+): (.*)$", text, re.S)
    if found is None:
        return "", 1, 1, text
    return found[1], int(found[2]), int(found[3]), found[4]


def _collect(paths: list[Path], args: argparse.Namespace) -> tuple[int, list[SpecError], list[tuple[str, Any]]]:
    """The spec files under `paths` (folders scanned, files judged as a scan would): how many, the
    invalid ones, and the valid ones with the path to show. The servers config, if among them, is
    left to whoever judges it as config. A path that does not exist is a configuration error."""
    config = Path(args.config).resolve() if getattr(args, "config", None) else None
    errors: list[SpecError] = []
    specs: list[tuple[str, Any]] = []
    count = 0
    for path in paths:
        if not path.exists() and not path.is_symlink():
            raise ConfigError(f"no such file or folder: {path}" + (" (--triggers, env RECONCILER_TRIGGERS)"
                                                                  if path == args.triggers else ""))
        if config is not None and path.resolve() == config:  # `validate triggers/*.yaml servers.yaml`
            count += 1
        elif path.is_dir():
            catalog = Catalog.scanned(path)
            count += len(catalog.entries) + len(catalog.rejected)
            errors += [SpecError(str(path / e.path), e.problems) for e in catalog.errors.values()]
            specs += [(str(path / e.path), e.spec) for e in catalog.entries.values() if e.spec is not None]
        else:
            count += 1
            judged = check_file(str(path), str(args.triggers))
            if isinstance(judged, SpecError):
                errors.append(judged)
            else:
                specs.append((str(path), judged))
    return count, errors, specs


def _policy(args: argparse.Namespace) -> Policy | None:
    """The `policy:` and `freeze:` of --config, if given: they hold no secrets, so CI may be given them."""
    config = options.operator_config(args)
    return None if config is None else config.rules()


def cmd_check(args: argparse.Namespace) -> int:
    """The live contract check: each spec against the job it names, read-only."""
    from reconciler.jenkins import contract
    from reconciler.jenkins.client import Client

    servers = options.servers(args)
    count, invalid, specs = _collect(args.paths or [args.triggers], args)
    refused = records.against_policy(specs, _policy(args) or Policy())
    invalid += refused
    specs = [(shown, spec) for shown, spec in specs if shown not in {e.path for e in refused}]
    clients = {name: Client(server, attempts=2, backoff=0.2, max_backoff=1.0) for name, server in servers.items()}
    try:
        report = contract.check(specs, clients, per_server=args.timeout)
    finally:
        for client in clients.values():
            client.close()
    problems = [str(e) for e in invalid] + [str(f) for f in report.findings]
    warnings = untagged(specs, servers)
    if args.output == "json":
        output.document({"specs": count, "jobs": report.jobs, "reads": report.reads, "users": report.users,
                         "unreached": report.unreached, "warnings": warnings,
                         "problems": [{"path": f.path, "line": f.line, "column": f.column, "message": f.message}
                                      for f in report.findings] + [p for e in invalid for p in _problems(e)]})
    else:
        for line in problems:
            print(output.shown(line))
        for line in warnings:
            note(args, output.shown(line))
    users = ", ".join(f"{user} on {server}" for server, user in sorted(report.users.items()))
    unreached = "; ".join(f"server {server!r} not checked: {why}" for server, why in sorted(report.unreached.items()))
    note(args, f"{counted(count, 'spec')} checked against {counted(report.jobs, 'job')} in "
               f"{counted(report.reads, 'read')}" + (f", as {users}" if users else "") +
               f"; {counted(len(problems), 'problem')}. Job/Build permission is proven only by a POST, which check "
               "never sends" + (f"\nreconciler: {unreached}" if unreached else ""))
    if report.unreached:
        return EXIT_ERROR  # credentials, a login page, a server down: configuration, not the specs
    return EXIT_INVALID if problems else EXIT_OK


def _value_position(path: str, key: str) -> tuple[int, int]:
    from reconciler.core.spec import position_in

    try:
        return position_in(Path(path).read_text(encoding="utf-8"), key, value=True)
    except (OSError, UnicodeDecodeError):
        return 1, 1


def cmd_plan(args: argparse.Namespace) -> int:
    if args.base:
        return _plan_change(args)
    from reconciler.store.open import store_exists

    catalog = Catalog.scanned(options.triggers_dir(args))
    history = history_dir(args)
    if not store_exists(args.state):
        note(args, f"reconciler: no state store at {args.state}: planning from the history in {history} alone")
    skipped: list[str] = []
    fired, cursors = records.fired(history, args.state, skipped)
    for problem in skipped:  # a bad history line is not evidence of a fire: said, so no one wonders why
        note(args, f"reconciler: {output.shown(problem)}")
    real_now = datetime.now(UTC)
    at = args.at or real_now
    policy = _policy(args) or Policy()
    paused, requested = records.operated(args.state)
    against = {e.name: error for e in catalog.entries.values() if e.spec is not None
               for error in records.against_policy([(str(catalog.root / e.path), e.spec)], policy)}
    specs = {name: spec for name, spec in catalog.specs.items() if name not in against}
    servers = options.servers(args)
    verdicts = plan(specs, {**catalog.errors, **against}, fired, servers, now=at, cursors=cursors,
                    unaccepted=records.unaccepted(history, args.state), since=min(real_now, at),
                    windows=policy.windows, paused=paused, requested=requested)
    if args.output == "json":
        output.document([{"trigger": v.trigger, "action": v.action.value, "detail": v.detail,
                          "server": v.spec.server if v.spec else None, "job": v.spec.job if v.spec else None,
                          "endpoint": v.spec.endpoint if v.spec else None,
                          "parameters": dict(v.spec.parameters) if v.spec and v.spec.parameters else None,
                          "revision": v.spec.revision if v.spec else None} for v in verdicts])
    else:
        counts = Counter(v.action for v in verdicts)
        said = ", ".join(f"{n} {_ACTION_WORDS[action][n != 1]}" for action, n in counts.items())
        title = f"Plan at {at.isoformat(timespec='seconds')} for {counted(len(verdicts), 'trigger')}" + \
            (f": {said}" if said else "")
        table = output.Table("TRIGGER", "ACTION", "DETAIL", title=title)
        for v in verdicts:
            table.add(v.trigger, output.Word(v.action.value), v.detail.splitlines()[0] if v.detail else "")
        table.show()
        for line in _backlog(args.state, servers):
            note(args, line)
    return EXIT_INVALID if any(v.action is Action.INVALID for v in verdicts) else EXIT_OK


def _backlog(state: Path | str, servers: dict[str, Server]) -> list[str]:
    """Per server, the runs decided and not yet POSTed (the store's `decided` and `posting`), and the pace
    the operator's config holds it to: a burst draining at `rate`, or waiting for Jenkins' queue, shows
    here as in /readyz."""
    from reconciler.store.open import open_store, store_exists

    if not store_exists(state):
        return []
    store = open_store(state)
    try:
        waiting = Counter(r.server for r in store.open_runs() if r.status in (RunStatus.DECIDED, RunStatus.POSTING))
    finally:
        store.close()
    lines = []
    for name, count in sorted(waiting.items()):
        server = servers.get(name)
        pace = [] if server is None else \
            ([f"rate {server.rate:g}/s"] if server.rate else []) + \
            ([f"max_queued {server.max_queued}"] if server.max_queued else [])
        held = f", held to {' and '.join(pace)} by the operator's config" if pace else ""
        lines.append(f"backlog: {counted(count, 'run')} decided for server {name}, waiting to be POSTed{held}")
    return lines


_ACTION_WORDS = {Action.FIRE: ("to fire", "to fire"), Action.UP_TO_DATE: ("up to date", "up to date"),
                 Action.INVALID: ("invalid", "invalid"), Action.SUSPENDED: ("suspended", "suspended"),
                 Action.SCHEDULED: ("scheduled", "scheduled"), Action.PENDING: ("pending", "pending"),
                 Action.NOT_FIRED: ("given up, not fired", "given up, not fired"),
                 Action.FROZEN: ("frozen", "frozen"), Action.PAUSED: ("paused", "paused")}


def _plan_change(args: argparse.Namespace) -> int:
    """`plan --base REV [--head REV]`: what merging would do, from git alone (and the base's history)."""
    from reconciler.core import preview
    from reconciler.jenkins import contract
    from reconciler.jenkins.client import Client
    from reconciler.repo.revisions import Repository

    repo = Repository.of(args.triggers, args.history)
    now = args.at or datetime.now(UTC)
    policy = _policy(args)
    policy_note = None if policy is not None and policy.rules is not None else \
        "policy: not checked (" + ("the config has no `policy:`" if policy is not None else
                                   "give --config with the operator's published config to check it") + ")"
    with contextlib.ExitStack() as stack:
        base, base_history = stack.enter_context(repo.checkout(args.base))
        head = stack.enter_context(repo.checkout(args.head))[0] if args.head else \
            Catalog.scanned(options.triggers_dir(args))
        fired = {(r.trigger, r.fire_key) for r in base_history.runs() if r.status in ACCEPTED}
        changes = preview.preview(_entries(base), _entries(head), fired, now,
                                  rules=None if policy is None else policy.rules)
        findings: list[str] = []
        if args.check:
            firing = [(str(head.root / e.path), e.spec) for e in head.entries.values() if e.spec is not None
                      and any(c.trigger == e.name and c.request is not None for c in changes)]
            clients = {name: Client(server, attempts=2, backoff=0.2, max_backoff=1.0)
                       for name, server in options.servers(args).items()}
            report = contract.check(firing, clients, per_server=30.0)
            root = str(head.root) + os.sep
            findings = [str(f).replace(root, "") for f in report.findings]
    fmt = "json" if args.output == "json" else args.format
    title = f"reconciler plan {args.base}..{args.head or 'working tree'}"
    if fmt == "json":
        out = json.loads(preview.as_json(changes))
        out["check"] = findings if args.check else None
        out["policy_checked"] = policy_note is None
        output.document(out)
    elif fmt == "markdown":
        print(preview.as_markdown(changes, title))
        if findings:
            print("\n**Live check against Jenkins found problems:**\n")
            print("\n".join(f"- `{line}`" for line in findings))
        if policy_note:
            print(f"\n_{policy_note}_")
    else:
        print(output.shown(preview.as_text(changes, title)))
        for line in findings:
            print(output.shown(f"check: {line}"))
        if policy_note:
            print(output.shown(policy_note))
    invalid = any(c.kind in (preview.Kind.INVALID, preview.Kind.POLICY) for c in changes)
    return EXIT_INVALID if invalid or findings else EXIT_OK


def _entries(catalog: Catalog) -> dict[str, Any]:
    """A catalog's entries by trigger, the files that cannot be triggers among them."""
    return {**{e.name: e for e in catalog.rejected.values()}, **catalog.entries}


def cmd_next(args: argparse.Namespace) -> int:
    from reconciler.core.schedule import ticks

    catalog = Catalog.scanned(options.triggers_dir(args))
    if args.name in catalog.errors:
        print(output.shown(str(catalog.errors[args.name])), file=sys.stderr)
        return EXIT_INVALID
    spec = catalog.specs.get(args.name)
    if spec is None:
        raise NoSuchTrigger(f"no trigger {args.name} in {args.triggers}")
    if spec.schedule is None:
        raise NoSuchTrigger(f"{args.name} is a one-shot trigger (no `schedule:`): it has no ticks")
    upcoming = ticks(spec.schedule, datetime.now(UTC))
    found = [next(upcoming) for _ in range(args.count)]
    if args.output == "json":
        output.document({"trigger": spec.name, "expression": spec.schedule.expression, "cron": spec.schedule.cron,
                         "timezone": spec.schedule.timezone, "suspended": spec.suspend,
                         "ticks": [{"local": t.astimezone(spec.schedule.tz).isoformat(),
                                    "utc": f"{t:%Y-%m-%dT%H:%M:%SZ}"} for t in found]})
        return EXIT_OK
    print(output.shown(f"{spec.name}: {spec.schedule.expression!r} → {spec.schedule.cron!r} in "
                       f"{spec.schedule.timezone}" + (" (suspended: nothing fires)" if spec.suspend else "")))
    for tick in found:
        print(f"  {tick.astimezone(spec.schedule.tz).isoformat()}  ({tick:%Y-%m-%dT%H:%M:%SZ})")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from reconciler.core.spec import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return EXIT_OK
