"""The command line: wiring only. Each command lives in the module of its family (run, specs, views,
operate, tools); the options they share are declared once (options.py). Every flag can also come
from RECONCILER_<FLAG>."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from reconciler import logs
from reconciler.cli import operate, run, specs, tools, views
from reconciler.cli.options import EXIT_ERROR, version
from reconciler.core.errors import ReconcilerError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="The GitOps way to trigger Jenkins: commit a YAML spec, the job runs once, "
                    "its outcome is on record.",
        epilog="Credentials come from the environment (JENKINS_URL, JENKINS_USER, JENKINS_API_TOKEN or "
               "JENKINS_API_TOKEN_FILE, JENKINS_JOB_TOKEN or JENKINS_JOB_TOKEN_FILE) or from references in the "
               "operator's config file (--config); never from specs. Exit codes: 0 ok, 1 invalid specs, 2 error, "
               "3 a run of run --once failed or was refused, 4 run --once timed out.")
    parser.add_argument("--version", action="version", version=f"reconciler {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in (run, specs, views, operate, tools):
        family.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(getattr(args, "log_format", "console" if args.command == "demo" else "json"),
                   level=getattr(args, "log_level", "info"))
    try:
        return int(args.func(args) or 0)
    except (ReconcilerError, OSError) as e:  # OSError: a file or folder it needs, named, in one line
        print(f"reconciler: {logs.redact(str(e))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
