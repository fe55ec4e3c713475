"""The daemon: `run`, and `run --once` for CI."""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import logs
from reconciler.cli import options
from reconciler.cli.options import (
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_TIMEOUT,
    add_common,
    duration,
    env,
    env_flag,
)
from reconciler.config import Deliveries, OperatorConfig, Policy, servers_of
from reconciler.core.errors import ConfigError

if TYPE_CHECKING:
    from reconciler.service.liveconfig import Settings


def register(sub: Any) -> None:
    p = options.parser(sub, "run", help="watch the triggers and fire what is due (the daemon)",
                       description="The daemon: watch --triggers, fire each one-shot once per revision and each "
                                   "schedule once per tick, follow every run to its result, and record it in the "
                                   "state store and the history. With --once: one pass, then exit with a code a "
                                   "CI job can gate on (0 ok, 1 invalid specs, 2 error, 3 a run failed or was "
                                   "refused, 4 --timeout). Without --once, a missing --triggers folder is waited "
                                   "for (git-sync may not have checked it out yet), and /readyz says so.",
                       epilog="examples: reconciler run --listen 0.0.0.0:9090\n"
                              "          reconciler run --once --wait --timeout 20m")
    add_common(p)
    options.add_logging(p)
    p.add_argument("--once", action="store_true", default=env_flag("once"),
                   help="one pass: fire what is due, wait until it is posted, exit (env RECONCILER_ONCE)")
    p.add_argument("--wait", action="store_true", default=env_flag("wait"),
                   help="with --once, also follow the fired runs to their results (env RECONCILER_WAIT)")
    p.add_argument("--timeout", type=duration, default=duration(env("timeout", "30m")), metavar="DURATION",
                   help="with --once, the longest wait, e.g. 90s, 10m, 1h; then exit 4 (default 30m; 0: no limit; "
                        "env RECONCILER_TIMEOUT)")
    p.add_argument("--resync-interval", type=float, default=float(env("resync_interval", 60)),
                   help="seconds between full rescans, so no missed event loses a trigger (default 60)")
    p.add_argument("--poll-interval", type=float, default=float(env("poll_interval", 5)),
                   help="longest wait between two looks at a queued or running build (default 5 s)")
    p.add_argument("--listen", default=env("listen"), metavar="HOST:PORT",
                   help="serve /healthz, /readyz and /metrics, and the web page unless --web-listen is given "
                        "(env RECONCILER_LISTEN), e.g. 0.0.0.0:9090")
    p.add_argument("--web-listen", default=env("web_listen"), metavar="HOST:PORT",
                   help="serve the read-only web page here instead of on --listen, e.g. 127.0.0.1:8080 behind an "
                        "authenticating proxy: it shows job names, parameters and commit authors to whoever "
                        "reaches it (env RECONCILER_WEB_LISTEN)")
    p.add_argument("--web-prefix", default=env("web_prefix", ""), metavar="PATH",
                   help="the path the page is reached under through an ingress, e.g. /reconciler (an "
                        "X-Forwarded-Prefix header wins; env RECONCILER_WEB_PREFIX)")
    p.add_argument("--lease", type=float, default=float(env("lease", 3)), metavar="SECONDS",
                   help="with a PostgreSQL store: how long the leader's lease lasts unrenewed, so how soon a "
                        "standby replaces a dead leader (default 3; env RECONCILER_LEASE)")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    if args.once:
        options.triggers_dir(args)  # one pass over a folder that is not there would say nothing
    servers = options.servers(args)
    if not servers:
        print("reconciler: no Jenkins server configured: set JENKINS_URL (and JENKINS_USER, JENKINS_API_TOKEN) "
              "or give a servers config with --config", file=sys.stderr)
        return EXIT_ERROR
    remote = options.history_remote(args)
    config = options.operator_config(args)
    deliveries = Deliveries() if config is None else config.deliveries()
    logs.add_secrets(deliveries.secrets)
    log = logs.get()
    for warning in deliveries.warnings():
        log.warning("delivery_insecure", warning=warning)
    for server in servers.values():
        for warning in server.warnings():
            log.warning("server_insecure", server=server.name, warning=warning)
    startup = (servers, _policy(config), deliveries)
    if args.once:
        from reconciler.service.lifetime import close

        daemon = _assemble(args, remote, startup)
        try:
            return _run_once(daemon, args, log)
        finally:
            close(daemon)
    from reconciler.service.lifetime import Lifetime
    from reconciler.service.probes import serve

    def assemble(first: bool) -> Any:
        """The first daemon from the config as started; one assembled again (standing by after a lost
        lease) from the config as it is now, or as started if it cannot be used."""
        if first:
            return _assemble(args, remote, startup)
        try:
            return _assemble(args, remote, _read_again(args))
        except ConfigError as e:
            log.error("config_invalid", file=str(args.config), errors=logs.redact(str(e)).splitlines(),
                      note="the config the process started with is used")
            return _assemble(args, remote, startup)

    lifetime = Lifetime(assemble, lambda daemon: serve(daemon, args.listen, args.web_listen, args.web_prefix))
    lifetime.handle_signals()

    def started(daemon: Any) -> None:
        log.info("daemon_started", triggers=str(args.triggers), state=str(daemon.store.path),
                 history=str(daemon.history.root), servers=sorted(servers),
                 **({"history_remote": remote.repository, "history_branch": remote.branch} if remote else {}))

    lifetime.run(started)
    return EXIT_OK


def _assemble(args: argparse.Namespace, remote: Any, settings: Settings) -> Any:
    """The daemon's parts, as the command line and the operator's config say."""
    from reconciler.repo.writeback import Writeback
    from reconciler.service.daemon import assemble

    servers, policy, deliveries = settings
    daemon = assemble(args.triggers, args.state, args.history, servers, resync_interval=args.resync_interval,
                      poll_max=args.poll_interval, writeback=None if remote is None else Writeback(remote),
                      lease=args.lease, policy=policy, deliveries=deliveries)
    daemon.follow_config(partial(_read_again, args), None if args.config is None else str(args.config))
    return daemon


def _policy(config: OperatorConfig | None) -> Policy:
    return Policy() if config is None else config.rules()


def _read_again(args: argparse.Namespace) -> Settings:
    """The operator's config as it is on disk now, its secret files read again: the daemon's live reload."""
    config = OperatorConfig.load(Path(args.config), triggers=args.triggers, state=args.state) if args.config \
        else None
    servers = servers_of(config)
    for server in servers.values():
        logs.add_secrets(server.secrets)
    deliveries = Deliveries() if config is None else config.deliveries()
    logs.add_secrets(deliveries.secrets)
    return servers, _policy(config), deliveries


def _run_once(daemon: Any, args: argparse.Namespace, log: Any) -> int:
    """One pass, then wait for its runs (posted, or with --wait finished); the exit code says how they went."""
    outcome = daemon.run_once(wait=args.wait, timeout=args.timeout or None)
    if outcome.not_leader:
        return EXIT_ERROR
    if outcome.invalid:
        return EXIT_INVALID
    if outcome.waiting:
        log.error("wait_timed_out", timeout_s=args.timeout, runs=outcome.waiting)
        return EXIT_TIMEOUT
    if outcome.failed:
        log.error("runs_failed", runs=outcome.failed)
        return EXIT_RUN_FAILED
    return EXIT_OK
