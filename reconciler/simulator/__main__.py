"""`python -m reconciler.simulator`: serve a simulated Jenkins on 127.0.0.1 until stopped.

The same settings as the YAML config (`--config`), with flags for the common ones; flags win.
Example: python -m reconciler.simulator --port 8080 --version 2.528.1 --job deploy --user alice:token
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import Simulator
from .config import SimConfig, SimConfigError, _version, job_from_mapping, load, user_from_mapping


def parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The simulator's options; `reconciler simulator` takes the same ones (as a parent parser)."""
    p = argparse.ArgumentParser(prog="python -m reconciler.simulator", description=__doc__.split("\n\n")[0],
                                add_help=add_help)
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    p.add_argument("--config", type=Path, help="simulator YAML (jobs, users, views, ...)")
    p.add_argument("--version", dest="jenkins_version", metavar="VERSION",
                   help="the Jenkins version to answer as (X-Jenkins, version-dependent answers), e.g. 2.528.1")
    p.add_argument("--log", type=Path, metavar="FILE", help="append one JSON line per request to FILE")
    p.add_argument("--job", action="append", default=[], metavar="NAME", help="add a job; repeatable")
    p.add_argument("--user", action="append", default=[], metavar="NAME:TOKEN",
                   help="add a user with an API token; repeatable")
    p.add_argument("--no-csrf", action="store_true", help="turn CSRF protection off")
    p.add_argument("--anonymous-read", action="store_true", help="let anonymous users read")
    p.add_argument("--quiet-period", type=float, help="seconds a queued build waits (Jenkins: 5)")
    p.add_argument("--executors", type=int, help="builds that run at once (Jenkins' built-in node: 2)")
    return p


def configure(args: argparse.Namespace) -> SimConfig:
    config = load(args.config) if args.config else SimConfig()
    config.jobs += [job_from_mapping(j) for j in args.job]
    for spec in args.user:
        name, _, token = spec.partition(":")
        config.users[name] = user_from_mapping(name, {"token": token})
    if args.jenkins_version:
        config.version = _version(args.jenkins_version)
    if args.log:
        config.log = str(args.log)
    if args.no_csrf:
        config.csrf = False
    if args.anonymous_read:
        config.anonymous_read = True
    if args.quiet_period is not None:
        config.quiet_period = args.quiet_period
    if args.executors is not None:
        config.executors = args.executors
    return config


def main(argv: Sequence[str] | None = None) -> int:
    return serve(parser().parse_args(argv))


def serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or ^C, printing the URL first (a script reads it to find the port)."""
    try:
        config = configure(args)
    except (SimConfigError, OSError) as e:
        print(f"simulator: {e}", file=sys.stderr)
        return 2
    sim = Simulator(config, args.port)
    print(sim.url, flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.suppress(KeyboardInterrupt):
        sim.serve_forever()
    return 0


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
