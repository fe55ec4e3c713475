"""The command line: thin wiring over the modules. Every flag can also come from RECONCILER_<FLAG>."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler import logs
from reconciler.config import Server, load_history_remote, load_servers
from reconciler.core.errors import ConfigError, Problem, ReconcilerError, SpecError
from reconciler.core.plan import Action, plan, unknown_server
from reconciler.core.runs import RunStatus
from reconciler.repo.catalog import Catalog, check_file
from reconciler.repo.history import History, iso
from reconciler.store.open import open_store, state_location, store_exists

EXIT_OK, EXIT_INVALID, EXIT_ERROR, EXIT_RUN_FAILED, EXIT_TIMEOUT = 0, 1, 2, 3, 4
"""`run --once`: 3 when a run was refused, failed, lost or cancelled, or (with --wait) its build ended
other than SUCCESS; 4 when --timeout passed first. Invalid specs (1) win over both."""


def _env(name: str, default: Any = None) -> Any:
    return os.environ.get("RECONCILER_" + name.upper().replace("-", "_"), default)


def _env_flag(name: str) -> bool:
    return str(_env(name, "")).lower() in ("1", "true", "yes", "on")


def _add_common(p: argparse.ArgumentParser, *, state: bool = True, history: bool = True) -> None:
    p.add_argument("--triggers", type=Path, default=Path(_env("triggers", "triggers")),
                   help="directory of trigger specs (default: ./triggers; env RECONCILER_TRIGGERS)")
    p.add_argument("--config", type=Path, default=_env("config"),
                   help="the operator's servers config, outside the triggers directory (env RECONCILER_CONFIG)")
    if state:
        p.add_argument("--state", type=state_location, default=state_location(_env("state", ".reconciler/state.db")),
                       help="state store: a SQLite file (default: .reconciler/state.db) or postgresql://HOST/DB, "
                            "the password from PGPASSWORD or a passfile (env RECONCILER_STATE)")
    if history:
        p.add_argument("--history", type=Path, default=Path(_env("history", "history")),
                       help="history directory, meant to be committed (default: ./history; env RECONCILER_HISTORY)")
    p.add_argument("--log-format", choices=("json", "console"), default=_env("log_format", "json"),
                   help="log lines as JSON (default) or for people (env RECONCILER_LOG_FORMAT)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   default=_env("log_level", "info"), help="(env RECONCILER_LOG_LEVEL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="The GitOps way to trigger Jenkins: commit a YAML spec, the job runs once, "
                    "its outcome is on record.",
        epilog="Credentials come from the environment (JENKINS_URL, JENKINS_USER, JENKINS_API_TOKEN or "
               "JENKINS_API_TOKEN_FILE, JENKINS_JOB_TOKEN or JENKINS_JOB_TOKEN_FILE) or from references in the "
               "operator's config file (--config); never from specs. Exit codes: 0 ok, 1 invalid specs, 2 error, "
               "3 a run of run --once failed or was refused, 4 run --once timed out.")
    parser.add_argument("--version", action="version", version=f"reconciler {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="watch the triggers and fire what is due (the daemon)",
                       description="The daemon: watch --triggers, fire each one-shot once per revision and each "
                                   "schedule once per tick, follow every run to its result, and record it in the "
                                   "state store and the history. With --once: one pass, then exit with a code a "
                                   "CI job can gate on (0 ok, 1 invalid specs, 2 error, 3 a run failed or was "
                                   "refused, 4 --timeout).",
                       epilog="examples: reconciler run --listen 0.0.0.0:9090\n"
                              "          reconciler run --once --wait --timeout 20m",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p)
    p.add_argument("--once", action="store_true", default=_env_flag("once"),
                   help="one pass: fire what is due, wait until it is posted, exit (env RECONCILER_ONCE)")
    p.add_argument("--wait", action="store_true", default=_env_flag("wait"),
                   help="with --once, also follow the fired runs to their results (env RECONCILER_WAIT)")
    p.add_argument("--timeout", type=_duration, default=_duration(_env("timeout", "30m")), metavar="DURATION",
                   help="with --once, the longest wait, e.g. 90s, 10m, 1h; then exit 4 (default 30m; 0: no limit; "
                        "env RECONCILER_TIMEOUT)")
    p.add_argument("--resync-interval", type=float, default=float(_env("resync_interval", 60)),
                   help="seconds between full rescans, so no missed event loses a trigger (default 60)")
    p.add_argument("--poll-interval", type=float, default=float(_env("poll_interval", 5)),
                   help="longest wait between two looks at a queued or running build (default 5 s)")
    p.add_argument("--listen", default=_env("listen"), metavar="HOST:PORT",
                   help="serve /healthz, /readyz and /metrics, and the web page unless --web-listen is given "
                        "(env RECONCILER_LISTEN), e.g. 0.0.0.0:9090")
    p.add_argument("--web-listen", default=_env("web_listen"), metavar="HOST:PORT",
                   help="serve the read-only web page here instead of on --listen, e.g. 127.0.0.1:8080 behind an "
                        "authenticating proxy: it shows job names, parameters and commit authors to whoever "
                        "reaches it (env RECONCILER_WEB_LISTEN)")
    p.add_argument("--web-prefix", default=_env("web_prefix", ""), metavar="PATH",
                   help="the path the page is reached under through an ingress, e.g. /reconciler (an "
                        "X-Forwarded-Prefix header wins; env RECONCILER_WEB_PREFIX)")
    p.add_argument("--lease", type=float, default=float(_env("lease", 3)), metavar="SECONDS",
                   help="with a PostgreSQL store: how long the leader's lease lasts unrenewed, so how soon a "
                        "standby replaces a dead leader (default 3; env RECONCILER_LEASE)")

    p = sub.add_parser("validate", help="check specs; prints file:line:col: message per error, exit 1 if any",
                       description="Judge spec files as the daemon does, without Jenkins: YAML, schema, links, "
                                   "names, and the servers they name when servers are configured. Fast enough "
                                   "for a pre-commit hook.",
                       epilog="examples: reconciler validate triggers/\n"
                              "          reconciler validate triggers/team/deploy.yaml --config /etc/reconciler/"
                              "servers.yaml",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", type=Path, help="files or directories (default: --triggers)")
    p.add_argument("--triggers", type=Path, default=Path(_env("triggers", "triggers")),
                   help="the triggers directory, for links and the config file's place (env RECONCILER_TRIGGERS)")
    p.add_argument("--config", type=Path, default=_env("config"),
                   help="the operator's servers config: specs naming another server are invalid "
                        "(env RECONCILER_CONFIG; JENKINS_URL makes `default` known)")

    p = sub.add_parser("check", help="check specs against the live Jenkins, read-only (GETs only)",
                       description="For each spec, against the configured server: the job exists and we may read "
                                   "it, is buildable, its parameter definitions match (unknown names, choices, "
                                   "booleans, parameters without defaults), the endpoint fits, and nothing "
                                   "redirects to a login page. One read per job however many specs name it; never "
                                   "a POST.",
                       epilog="example: reconciler check triggers/ --config /etc/reconciler/servers.yaml --json")
    p.add_argument("paths", nargs="*", type=Path, help="files or directories (default: --triggers)")
    p.add_argument("--triggers", type=Path, default=Path(_env("triggers", "triggers")),
                   help="directory of trigger specs (env RECONCILER_TRIGGERS)")
    p.add_argument("--config", type=Path, default=_env("config"),
                   help="the operator's servers config (env RECONCILER_CONFIG)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timeout", type=_duration, default=_duration("30s"), metavar="DURATION",
                   help="the longest a server's checks may take (default 30s)")

    p = sub.add_parser("plan", help="what a pass would do now (or --at TIME), per trigger",
                       description="Per trigger: fire, up to date, pending (refused by Jenkins, to be posted "
                                   "again), scheduled (with the next tick), suspended or invalid. Reads the state "
                                   "store and the history; sends nothing.",
                       epilog="example: reconciler plan --at 2026-12-24T03:00:00+01:00 --json")
    _add_common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output (same as --format json)")
    p.add_argument("--at", type=_timestamp, help="ISO 8601 time to plan for (default: now); naive means UTC")
    p.add_argument("--base", metavar="REV", help="preview a change: compare the triggers at this git revision "
                                                 "(e.g. origin/main) with --head; offline, no Jenkins, no state")
    p.add_argument("--head", metavar="REV", help="with --base: the revision to merge (default: the working tree)")
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                   help="with --base: text, a markdown pull-request comment, or JSON")
    p.add_argument("--check", action="store_true",
                   help="with --base: also check what will fire against the live Jenkins (read-only)")

    p = sub.add_parser("next", help="upcoming fire times of a scheduled trigger",
                       description="The next ticks of a schedule, with H resolved, in its time zone and in UTC.",
                       epilog="example: reconciler next nightly/regression --count 10")
    p.add_argument("name", help="trigger name, e.g. nightly/regression")
    p.add_argument("--count", type=int, default=5, help="how many ticks (default 5)")
    p.add_argument("--triggers", type=Path, default=Path(_env("triggers", "triggers")),
                   help="directory of trigger specs (env RECONCILER_TRIGGERS)")

    p = sub.add_parser("status", help="every trigger and its newest run",
                       description="Every trigger, from the specs on disk and the state store: never run, "
                                   "pending (refused, with the next attempt), queued, building, its result; "
                                   "invalid and deleted triggers marked.",
                       epilog="example: reconciler status --json | jq '.[] | select(.status == \"refused\")'")
    _add_common(p, history=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("history", help="the recorded events of one trigger",
                       description="Each event of the trigger's runs, oldest first: what was asked of Jenkins "
                                   "(parameters, cause), the queue item, the build and its result.",
                       epilog="example: reconciler history team/deploy --json")
    p.add_argument("name", help="trigger name, e.g. team/deploy")
    p.add_argument("--history", type=Path, default=Path(_env("history", "history")),
                   help="history directory (env RECONCILER_HISTORY)")
    p.add_argument("--triggers", type=Path, default=Path(_env("triggers", "triggers")),
                   help="to tell a trigger with no runs yet from no trigger (env RECONCILER_TRIGGERS)")
    p.add_argument("--config", type=Path, default=_env("config"),
                   help="the operator's config: with history write-back, the history is read from its clone "
                        "(env RECONCILER_CONFIG)")
    p.add_argument("--json", action="store_true", help="raw JSON lines")

    p = sub.add_parser("logs", help="print the console of a trigger's latest build",
                       description="The console of the newest build of a trigger's runs, read from Jenkins "
                                   "(progressiveText); --follow keeps printing until the build ends.",
                       epilog="example: reconciler logs team/deploy --follow")
    p.add_argument("name", help="trigger name, e.g. team/deploy")
    p.add_argument("--follow", action="store_true", help="keep printing while the build runs")
    _add_common(p, history=False)

    p = sub.add_parser("adopt", help="mark every current one-shot as fired, without firing (bringing an "
                                     "existing directory under the reconciler)",
                       description="Record every one-shot's current revision as fired, so that only later changes "
                                   "fire: for a directory of specs that already ran by other means.",
                       epilog="example: reconciler adopt --triggers triggers --state .reconciler/state.db")
    _add_common(p)

    p = sub.add_parser("retry", help="post refused runs again now (after fixing a token, a job name, a proxy)",
                       description="Runs Jenkins refused (401, 403, 404, a login redirect, TLS) are retried with "
                                   "growing delays and at every start; this makes them due at once. The running "
                                   "daemon takes them up within seconds.",
                       epilog="example: reconciler retry team/deploy nightly/regression")
    p.add_argument("names", nargs="*", metavar="NAME", help="triggers (default: every refused run)")
    p.add_argument("--state", type=state_location, default=state_location(_env("state", ".reconciler/state.db")),
                   help="state store: a SQLite file or postgresql://HOST/DB (env RECONCILER_STATE)")

    p = sub.add_parser("simulator", help="serve a simulated Jenkins on 127.0.0.1 until stopped",
                       description="A Jenkins stand-in speaking Jenkins' remote API: jobs, parameters, tokens, "
                                   "CSRF crumbs, the queue, builds, consoles; with faults injectable at run time "
                                   "through /_sim/faults. See README, 'The Jenkins simulator'.",
                       epilog="example: reconciler simulator --port 8080 --job deploy --user alice:alice-token")
    p.add_argument("--port", type=int, default=int(_env("sim_port", 8080)), help="0 picks a free port")
    p.add_argument("--config", type=Path, default=_env("sim_config"), help="simulator YAML (jobs, users, ...)")
    p.add_argument("--job", action="append", default=[], metavar="NAME",
                   help="add a job (folder path with /); repeatable")
    p.add_argument("--user", action="append", default=[], metavar="NAME:TOKEN",
                   help="add a user with an API token; repeatable")
    p.add_argument("--no-csrf", action="store_true", help="turn CSRF protection off")
    p.add_argument("--anonymous-read", action="store_true", help="let anonymous users read")
    p.add_argument("--quiet-period", type=float, help="seconds a queued build waits (Jenkins: 5)")
    p.add_argument("--executors", type=int, help="builds that run at once (Jenkins' built-in node: 2)")

    sub.add_parser("schema", help="print the JSON Schema of a trigger spec (for editors and CI)",
                   description="The JSON Schema of a trigger spec, for editors (yaml-language-server) and CI.",
                   epilog="example: reconciler schema > schema/trigger.schema.json")

    p = sub.add_parser("demo", help="run the daemon on ./triggers against a bundled simulator",
                       description="Start a simulated Jenkins on a free loopback port and run the daemon on the "
                                   "example specs against it, showing each fire decided, posted, started and "
                                   "completed.",
                       epilog="example: reconciler demo --keep-running")
    p.add_argument("--triggers", type=Path, default=Path(_env("triggers", "triggers")),
                   help="directory of trigger specs (default ./triggers)")
    p.add_argument("--workdir", type=Path, default=Path(".reconciler/demo"),
                   help="where the demo keeps its state and history (wiped at start)")
    p.add_argument("--keep-running", action="store_true", help="keep watching after the demo runs complete")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("reconciler")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(getattr(args, "log_format", "console" if args.command == "demo" else "json"),
                   level=getattr(args, "log_level", "info"))
    try:
        return int(COMMANDS[args.command](args) or 0)
    except (ReconcilerError, OSError) as e:  # OSError: a file or folder it needs, named, in one line
        print(f"reconciler: {logs.redact(str(e))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _duration(text: str) -> float:
    from reconciler.core.schedule import ScheduleError, parse_duration

    try:
        return parse_duration(str(text)).total_seconds()
    except ScheduleError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _servers(args: argparse.Namespace) -> dict[str, Server]:
    servers = load_servers(Path(args.config) if args.config else None, triggers=args.triggers)
    for server in servers.values():
        logs.add_secrets(server.secrets)
    return servers


def _history_dir(args: argparse.Namespace) -> Path:
    """Where the daemon writes history: in its write-back clone when the operator's config names a
    repository to push to, else --history."""
    config = getattr(args, "config", None)
    remote = None if not config else \
        load_history_remote(Path(config), triggers=args.triggers, state=getattr(args, "state", None))
    return args.history if remote is None else remote.history_dir


def _fired(args: argparse.Namespace) -> tuple[set[tuple[str, str]], dict[str, datetime]]:
    """What has fired, and where each schedule stands: the state store, and the history behind it."""
    from reconciler.core.schedule import cursors
    fired = {(r.trigger, r.fire_key) for r in History(_history_dir(args)).runs()}
    stored: dict[str, float] = {}
    if store_exists(args.state):
        store = open_store(args.state)
        fired |= store.fired() | set(store.last_ticks().items())
        stored = store.cursors()
        store.close()
    return fired, cursors(stored, fired)


def _refused(args: argparse.Namespace) -> dict[tuple[str, str], str]:
    """Refused runs by (trigger, revision): why, and when the daemon posts them again."""
    if not store_exists(args.state):
        return {}
    store = open_store(args.state)
    try:
        runs = store.refused_due(float("inf"))
    finally:
        store.close()
    return {(r.trigger, r.fire_key): f"Jenkins refused it; next attempt {_next_attempt(r)}: {r.last_error}"
            for r in runs}


def _next_attempt(run: Any) -> str:
    return iso(run.retry_at) if run.retry_at else "at the daemon's next turn"


def cmd_run(args: argparse.Namespace) -> int:
    from reconciler.repo.writeback import Writeback
    from reconciler.service.daemon import assemble

    servers = _servers(args)
    if not servers:
        print("reconciler: no Jenkins server configured: set JENKINS_URL (and JENKINS_USER, JENKINS_API_TOKEN) "
              "or give a servers config with --config", file=sys.stderr)
        return EXIT_ERROR
    remote = load_history_remote(args.config, triggers=args.triggers, state=args.state)
    writeback = None if remote is None else Writeback(remote)
    daemon = assemble(args.triggers, args.state, args.history, servers, resync_interval=args.resync_interval,
                      poll_max=args.poll_interval, writeback=writeback, lease=args.lease)
    log = logs.get()
    for server in servers.values():
        for warning in server.warnings():
            log.warning("server_insecure", server=server.name, warning=warning)
    listeners = []
    if not args.once:
        from reconciler.service.probes import serve

        listeners = serve(daemon, args.listen, args.web_listen, args.web_prefix)
    try:
        if args.once:
            return _run_once(daemon, args, log)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, daemon.request_stop)
        log.info("daemon_started", triggers=str(args.triggers), state=str(daemon.store.path),
                 history=str(daemon.history.root), servers=sorted(servers),
                 **({"history_remote": remote.repository, "history_branch": remote.branch} if remote else {}))
        daemon.run(daemon.executor.stop)
        if daemon.leadership is not None and daemon.leadership.lost.is_set():
            log.error("daemon_exiting", reason="leadership lost: starting again makes this a standby")
            return EXIT_ERROR
        return EXIT_OK
    finally:
        for listener in listeners:
            listener.stop()
        in_flight = daemon.close()
        log.info("daemon_stopped", in_flight=len(in_flight),
                 **({"runs": {r.run_id: f"{r.trigger}: {r.status}" for r in in_flight}} if in_flight else {}))


def _run_once(daemon: Any, args: argparse.Namespace, log: Any) -> int:
    """One pass, then wait for its runs (posted, or with --wait finished) and say how they went."""
    if daemon.leadership is not None:  # replicas on PostgreSQL: one pass, as the leader or not at all
        threading.Thread(target=daemon.leadership.run, args=(daemon.executor.stop,), daemon=True).start()
        if not daemon.leadership.elected.wait(2 * daemon.leadership.lease):
            holder, epoch = daemon.leadership.seen
            log.error("not_leader", leader=holder, epoch=epoch, reason="another replica holds the lease")
            return EXIT_ERROR
    daemon.take_in_history(daemon.executor.stop)
    daemon.bootstrap()
    started = {r.run_id for r in daemon.executor.active()}
    fired = daemon.pass_once()
    started |= {r.run_id for r in fired}
    done = daemon.executor.wait_idle(args.timeout or None, posted_only=not args.wait)
    log.info("pass_completed", specs=len(daemon.catalog.entries), fired=len(fired),
             invalid=len(daemon.catalog.errors) + len(daemon.unconfigured))
    if daemon.catalog.errors or daemon.unconfigured:
        return EXIT_INVALID
    if not done:
        waiting = [r for r in daemon.executor.active() if r.run_id in started]
        log.error("wait_timed_out", timeout_s=args.timeout, runs={r.trigger: r.status for r in waiting})
        return EXIT_TIMEOUT
    runs = [r for r in daemon.store.runs(limit=100_000) if r.run_id in started]
    bad = {r.trigger: r.result or r.status for r in runs
           if r.status in (RunStatus.REFUSED, RunStatus.FAILED, RunStatus.LOST, RunStatus.CANCELLED) or
           (args.wait and r.status is RunStatus.COMPLETED and r.result != "SUCCESS")}
    if bad:
        log.error("runs_failed", runs=bad)
        return EXIT_RUN_FAILED
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    store = open_store(args.state)
    try:
        count = store.retry_now(args.names or None)
    finally:
        store.close()
    print(f"{count} refused run(s) due again; a running daemon posts them within seconds", file=sys.stderr)
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    """Specs judged as the daemon judges them: their files, and the servers they name where servers are
    configured (a --config, or JENKINS_URL; in another repository's pre-commit hook there are none)."""
    errors: list[SpecError | ConfigError] = []
    servers = None
    if args.config or os.environ.get("JENKINS_URL"):
        try:
            servers = _servers(args)
        except ConfigError as e:  # judged like any file: one more invalid one, with its position
            errors.append(e)
    count, invalid, specs = _collect(args.paths or [args.triggers], args)
    errors += invalid
    if servers is not None:
        errors += [SpecError(shown, [Problem(*_value_position(shown, "server"), unknown_server(spec.server,
                                                                                               servers))])
                   for shown, spec in specs if spec.server not in servers]
    for err in errors:
        print(err)
    print(f"{count} spec(s) checked, {len(errors)} invalid", file=sys.stderr)
    return EXIT_INVALID if errors else EXIT_OK


def _collect(paths: list[Path], args: argparse.Namespace) -> tuple[int, list[SpecError], list[tuple[str, Any]]]:
    """The spec files under `paths` (folders scanned, files judged as a scan would): how many, the
    invalid ones, and the valid ones with the path to show. The servers config, if among them, is
    left to whoever judges it as config."""
    config = Path(args.config).resolve() if getattr(args, "config", None) else None
    errors: list[SpecError] = []
    specs: list[tuple[str, Any]] = []
    count = 0
    for path in paths:
        if config is not None and path.resolve() == config:  # `validate triggers/*.yaml servers.yaml`
            count += 1
        elif path.is_dir():
            catalog = Catalog.scanned(path)
            count += len(catalog.entries) + len(catalog.rejected)
            errors += [SpecError(str(path / e.path), e.problems) for e in catalog.errors.values()]
            specs += [(str(path / e.path), e.spec) for e in catalog.entries.values() if e.spec is not None]
        elif path.exists():
            count += 1
            judged = check_file(str(path), str(args.triggers))
            if isinstance(judged, SpecError):
                errors.append(judged)
            else:
                specs.append((str(path), judged))
        else:
            errors.append(SpecError(str(path), [Problem(1, 1, "no such file or directory")]))
    return count, errors, specs


def cmd_check(args: argparse.Namespace) -> int:
    """The live contract check: each spec against the job it names, read-only."""
    from reconciler.jenkins import contract
    from reconciler.jenkins.client import Client

    servers = _servers(args)
    count, invalid, specs = _collect(args.paths or [args.triggers], args)
    clients = {name: Client(server, attempts=2, backoff=0.2, max_backoff=1.0) for name, server in servers.items()}
    try:
        report = contract.check(specs, clients, per_server=args.timeout)
    finally:
        for client in clients.values():
            client.close()
    problems = [str(e) for e in invalid] + [str(f) for f in report.findings]
    if args.json:
        print(json.dumps({"specs": count, "jobs": report.jobs, "reads": report.reads, "users": report.users,
                          "problems": [{"path": f.path, "line": f.line, "column": f.column, "message": f.message}
                                       for f in report.findings] +
                                      [{"path": e.path, "line": p.line, "column": p.column, "message": p.message}
                                       for e in invalid for p in e.problems]}, indent=2))
    else:
        for line in problems:
            print(line)
    users = ", ".join(f"{user} on {server}" for server, user in sorted(report.users.items())) or "no server"
    print(f"{count} spec(s) checked against {report.jobs} job(s) in {report.reads} read(s), as {users}; "
          f"{len(problems)} problem(s). Job/Build permission is proven only by a POST, which check never sends",
          file=sys.stderr)
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
    catalog = Catalog.scanned(args.triggers)
    fired, cursors = _fired(args)
    real_now = datetime.now(UTC)
    verdicts = plan(catalog.specs, catalog.errors, fired, _servers(args), now=args.at or real_now,
                    cursors=cursors, refused=_refused(args), since=min(real_now, args.at or real_now))
    if args.json:
        print(json.dumps([{"trigger": v.trigger, "action": v.action.value, "detail": v.detail,
                           "server": v.spec.server if v.spec else None, "job": v.spec.job if v.spec else None,
                           "endpoint": v.spec.endpoint if v.spec else None,
                           "parameters": dict(v.spec.parameters) if v.spec and v.spec.parameters else None,
                           "revision": v.spec.revision if v.spec else None} for v in verdicts], indent=2))
    else:
        width = max((len(v.trigger) for v in verdicts), default=7)
        for v in verdicts:
            detail = v.detail.splitlines()[0] if v.detail else ""
            print(f"{v.trigger:<{width}}  {v.action.value:<10}  {detail}")
    return EXIT_INVALID if any(v.action is Action.INVALID for v in verdicts) else EXIT_OK


def _plan_change(args: argparse.Namespace) -> int:
    """`plan --base REV [--head REV]`: what merging would do, from git alone (and the base's history)."""
    from reconciler.core import preview
    from reconciler.jenkins import contract
    from reconciler.jenkins.client import Client
    from reconciler.repo.revisions import Repository

    repo = Repository.of(args.triggers, args.history)
    now = args.at or datetime.now(UTC)
    with contextlib.ExitStack() as stack:
        base, base_history = stack.enter_context(repo.checkout(args.base))
        head = stack.enter_context(repo.checkout(args.head))[0] if args.head else Catalog.scanned(args.triggers)
        fired = {(r.trigger, r.fire_key) for r in base_history.runs()}
        changes = preview.preview(_entries(base), _entries(head), fired, now)
        findings: list[str] = []
        if args.check:
            firing = [(str(head.root / e.path), e.spec) for e in head.entries.values() if e.spec is not None
                      and any(c.trigger == e.name and c.request is not None for c in changes)]
            clients = {name: Client(server, attempts=2, backoff=0.2, max_backoff=1.0)
                       for name, server in _servers(args).items()}
            report = contract.check(firing, clients, per_server=30.0)
            root = str(head.root) + os.sep
            findings = [str(f).replace(root, "") for f in report.findings]
    fmt = "json" if args.json else args.format
    if fmt == "json":
        out = json.loads(preview.as_json(changes))
        out["check"] = findings if args.check else None
        print(json.dumps(out, indent=2))
    elif fmt == "markdown":
        print(preview.as_markdown(changes, f"reconciler plan {args.base}..{args.head or 'working tree'}"))
        if findings:
            print("\n**Live check against Jenkins found problems:**\n")
            print("\n".join(f"- `{line}`" for line in findings))
    else:
        print(preview.as_text(changes))
        for line in findings:
            print(f"check: {line}")
    invalid = any(c.kind is preview.Kind.INVALID for c in changes)
    return EXIT_INVALID if invalid or findings else EXIT_OK


def _entries(catalog: Catalog) -> dict[str, Any]:
    """A catalog's entries by trigger, the files that cannot be triggers among them."""
    return {**{e.name: e for e in catalog.rejected.values()}, **catalog.entries}


def cmd_next(args: argparse.Namespace) -> int:
    from reconciler.core.schedule import ticks

    catalog = Catalog.scanned(args.triggers)
    if args.name in catalog.errors:
        print(catalog.errors[args.name], file=sys.stderr)
        return EXIT_INVALID
    spec = catalog.specs.get(args.name)
    if spec is None:
        print(f"reconciler: no trigger {args.name} in {args.triggers}", file=sys.stderr)
        return EXIT_ERROR
    if spec.schedule is None:
        print(f"reconciler: {args.name} is a one-shot trigger (no `schedule:`): it has no ticks", file=sys.stderr)
        return EXIT_ERROR
    print(f"{spec.name}: {spec.schedule.expression!r} → {spec.schedule.cron!r} in {spec.schedule.timezone}")
    upcoming = ticks(spec.schedule, datetime.now(UTC))
    for _ in range(args.count):
        tick = next(upcoming)
        print(f"  {tick.astimezone(spec.schedule.tz).isoformat()}  ({tick:%Y-%m-%dT%H:%M:%SZ})")
    return EXIT_OK


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
    rows = []
    for name in sorted(set(catalog.specs) | set(catalog.errors) | set(latest)):
        run = latest.get(name)
        spec = "valid" if name in catalog.specs else "invalid" if name in catalog.errors else "deleted"
        status = run.status if run else ("invalid" if spec == "invalid" else "never run")
        where = ""
        if run is not None:
            where = run.build_url or run.queue_url or run.last_error or ""
            if run.status is RunStatus.REFUSED:
                where = f"next attempt {_next_attempt(run)}: {run.last_error}"
        elif spec == "invalid":
            where = str(catalog.errors[name]).splitlines()[0]
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


_COLOURS = {"SUCCESS": "32", "completed": "32", "UNSTABLE": "33", "refused": "31", "failed": "31", "lost": "31",
            "FAILURE": "31", "ABORTED": "33", "cancelled": "33", "invalid": "31", "building": "36", "queued": "36"}
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
    history = _history_dir(args)
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
    servers = _servers(args)
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
            if more:
                time.sleep(1.0)
    finally:
        client.close()
    return EXIT_OK


def cmd_adopt(args: argparse.Namespace) -> int:
    from reconciler.core.runs import new_run
    catalog = Catalog.scanned(args.triggers)
    fired, _ = _fired(args)
    now = time.time()
    one_shots = [spec for spec in catalog.specs.values() if spec.schedule is None]
    runs = [replace(new_run(spec, now), status=RunStatus.ADOPTED, finished_at=now) for spec in one_shots
            if (spec.name, spec.revision) not in fired]
    store = open_store(args.state)
    history = History(_history_dir(args))
    for run in store.decide(runs):
        history.decided(run, now, event="adopted")
        print(f"adopted {run.trigger} (revision {run.fire_key})")
    store.close()
    print(f"{len(runs)} trigger(s) adopted; {len(catalog.errors)} invalid", file=sys.stderr)
    return EXIT_INVALID if catalog.errors else EXIT_OK


def cmd_simulator(args: argparse.Namespace) -> int:
    from reconciler.simulator import SimConfig, SimConfigError, Simulator, job_from_mapping, load, user_from_mapping

    try:
        config = load(Path(args.config)) if args.config else SimConfig()
        config.jobs += [job_from_mapping(j) for j in args.job]
    except (SimConfigError, OSError) as e:
        print(f"reconciler simulator: {e}", file=sys.stderr)
        return EXIT_ERROR
    for spec in args.user:
        name, _, token = spec.partition(":")
        config.users[name] = user_from_mapping(name, {"token": token})
    if args.no_csrf:
        config.csrf = False
    if args.anonymous_read:
        config.anonymous_read = True
    if args.quiet_period is not None:
        config.quiet_period = args.quiet_period
    if args.executors is not None:
        config.executors = args.executors
    sim = Simulator(config, args.port)
    print(sim.url, flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.suppress(KeyboardInterrupt):
        sim.serve_forever()
    return EXIT_OK


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def cmd_schema(args: argparse.Namespace) -> int:
    from reconciler.core.spec import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from reconciler.cli.demo import run_demo

    return run_demo(args.triggers, args.workdir, keep_running=args.keep_running)


COMMANDS = {"run": cmd_run, "retry": cmd_retry, "validate": cmd_validate, "check": cmd_check, "plan": cmd_plan,
            "status": cmd_status, "history": cmd_history, "logs": cmd_logs, "adopt": cmd_adopt,
            "simulator": cmd_simulator, "demo": cmd_demo, "next": cmd_next, "schema": cmd_schema}


if __name__ == "__main__":
    sys.exit(main())
