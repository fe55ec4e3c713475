"""Trying it out: the bundled `simulator` and the `demo`."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

from reconciler.cli.options import (
    EXIT_ERROR,
    EXIT_OK,
    env,
)


def register(sub: Any) -> None:
    p = sub.add_parser("simulator", help="serve a simulated Jenkins on 127.0.0.1 until stopped",
                       description="A Jenkins stand-in speaking Jenkins' remote API: jobs, parameters, tokens, "
                                   "CSRF crumbs, the queue, builds, consoles; with faults injectable at run time "
                                   "through /_sim/faults. See README, 'The Jenkins simulator'.",
                       epilog="example: reconciler simulator --port 8080 --job deploy --user alice:alice-token")
    p.add_argument("--port", type=int, default=int(env("sim_port", 8080)), help="0 picks a free port")
    p.add_argument("--config", type=Path, default=env("sim_config"), help="simulator YAML (jobs, users, ...)")
    p.add_argument("--job", action="append", default=[], metavar="NAME",
                   help="add a job (folder path with /); repeatable")
    p.add_argument("--user", action="append", default=[], metavar="NAME:TOKEN",
                   help="add a user with an API token; repeatable")
    p.add_argument("--no-csrf", action="store_true", help="turn CSRF protection off")
    p.add_argument("--anonymous-read", action="store_true", help="let anonymous users read")
    p.add_argument("--quiet-period", type=float, help="seconds a queued build waits (Jenkins: 5)")
    p.add_argument("--executors", type=int, help="builds that run at once (Jenkins' built-in node: 2)")
    p.set_defaults(func=cmd_simulator)

    p = sub.add_parser("demo", help="run the daemon on ./triggers against a bundled simulator",
                       description="Start a simulated Jenkins on a free loopback port and run the daemon on the "
                                   "example specs against it, showing each fire decided, posted, started and "
                                   "completed.",
                       epilog="example: reconciler demo --keep-running")
    p.add_argument("--triggers", type=Path, default=Path(env("triggers", "triggers")),
                   help="directory of trigger specs (default ./triggers)")
    p.add_argument("--workdir", type=Path, default=Path(".reconciler/demo"),
                   help="where the demo keeps its state and history (wiped at start)")
    p.add_argument("--keep-running", action="store_true", help="keep watching after the demo runs complete")
    p.set_defaults(func=cmd_demo)


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


def cmd_demo(args: argparse.Namespace) -> int:
    from reconciler.cli.demo import run_demo

    return run_demo(args.triggers, args.workdir, keep_running=args.keep_running)
