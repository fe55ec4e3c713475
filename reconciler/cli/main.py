"""The command line: wiring only. Each command lives in the module of its family (run, specs, views,
operate, ops, tools); the options they share are declared once (options.py). Every flag can also come
from RECONCILER_<FLAG>."""

# PYTHON_ARGCOMPLETE_OK  (argcomplete: this program completes its own arguments)

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from reconciler import logs
from reconciler.cli import operate, ops, run, specs, tools, views
from reconciler.cli.options import EXIT_ERROR, EXIT_INVALID, EXIT_PIPE, Formatter, NoSuchTrigger, version
from reconciler.core.errors import ReconcilerError

EXIT_CODES = ("Exit codes: 0 ok; 1 invalid specs, or no such trigger; 2 an error of configuration (a missing "
              "folder, state store, git revision, server or credential); 3 a run of run --once failed or was "
              "refused; 4 run --once timed out; 130 interrupted; 141 the reader of the output went away.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler", formatter_class=Formatter,
        description="The GitOps way to trigger Jenkins: commit a YAML spec, the job runs once, "
                    "its outcome is on record.",
        epilog="Credentials come from the environment (JENKINS_URL, JENKINS_USER, JENKINS_API_TOKEN or "
               "JENKINS_API_TOKEN_FILE, JENKINS_JOB_TOKEN or JENKINS_JOB_TOKEN_FILE) or from references in the "
               "operator's config file (--config); never from specs.\n" + EXIT_CODES)
    parser.add_argument("--version", action="version", version=f"reconciler {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in (run, specs, views, operate, ops, tools):
        family.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # a shell asking for completions (`reconciler completion`)
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    level = getattr(args, "log_level", None) or \
        ("warning" if args.quiet else "debug" if args.verbose else "info")
    logs.configure(getattr(args, "log_format", None), level=level)
    try:
        return int(args.func(args) or 0)
    except NoSuchTrigger as e:
        print(f"reconciler: {logs.redact(str(e))}", file=sys.stderr)
        return EXIT_INVALID
    except BrokenPipeError:
        return _reader_gone()
    except (ReconcilerError, OSError) as e:  # OSError: a file or folder it needs, named, in one line
        print(f"reconciler: {logs.redact(str(e))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _reader_gone() -> int:
    """`reconciler status | head -1`: the rest of the output has nowhere to go. Ended quietly, and stdout
    pointed at /dev/null so that flushing it at exit does not complain either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_PIPE


if __name__ == "__main__":
    sys.exit(main())
