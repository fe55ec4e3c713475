"""Steering runs without a commit: `retry`, `adopt`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from reconciler.cli import options
from reconciler.cli.options import EXIT_INVALID, EXIT_OK, NoSuchTrigger, add_common, history_dir, note
from reconciler.core.preview import counted
from reconciler.repo.catalog import Catalog
from reconciler.service import records


def register(sub: Any) -> None:
    p = options.parser(sub, "adopt", help="mark every current one-shot as fired, without firing (bringing an "
                                     "existing directory under the reconciler)",
                       description="Record every one-shot's current revision as fired, so that only later changes "
                                   "fire: for a directory of specs that already ran by other means.",
                       epilog="example: reconciler adopt --triggers triggers --state .reconciler/state.db")
    add_common(p)
    p.set_defaults(func=cmd_adopt)

    p = options.parser(sub, "retry", help="post refused runs again now (after fixing a token, a job name, a proxy)",
                       description="Runs Jenkins refused (401, 403, 404, a login redirect, TLS) are retried with "
                                   "growing delays and at every start; this makes them due at once. The running "
                                   "daemon takes them up within seconds.",
                       epilog="example: reconciler retry team/deploy nightly/regression")
    p.add_argument("names", nargs="*", metavar="NAME", help="triggers (default: every refused run)")
    add_common(p, history=False)
    p.set_defaults(func=cmd_retry)


def cmd_retry(args: argparse.Namespace) -> int:
    store = options.state_store(args)
    try:
        if args.names:
            known = set(store.latest())
            unknown = [name for name in args.names if name not in known]
            if unknown and Path(args.triggers).is_dir():  # a trigger with no runs yet is no mistake
                unknown = [name for name in unknown if name not in Catalog.scanned(args.triggers).entries]
            if unknown:
                raise NoSuchTrigger(f"no trigger {', '.join(unknown)} in {args.triggers}, and no runs of "
                                    f"{'it' if len(unknown) == 1 else 'them'} in {args.state}")
        count = store.retry_now(args.names or None)
    finally:
        store.close()
    note(args, f"{counted(count, 'refused run')} due again; a running daemon looks "
               f"{'it' if count == 1 else 'them'} up and posts within seconds")
    return EXIT_OK


def cmd_adopt(args: argparse.Namespace) -> int:
    catalog = Catalog.scanned(options.triggers_dir(args))
    adopted = records.adopt(list(catalog.specs.values()), history_dir(args), args.state)
    for run in adopted:
        print(f"adopted {run.trigger} (revision {run.fire_key})")
    note(args, f"{counted(len(adopted), 'trigger')} adopted; {len(catalog.errors)} invalid")
    return EXIT_INVALID if catalog.errors else EXIT_OK
