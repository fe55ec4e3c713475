"""Steering runs without a commit: `retry`, `adopt`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from reconciler.cli.options import (
    EXIT_INVALID,
    EXIT_OK,
    add_common,
    env,
    history_dir,
)
from reconciler.repo.catalog import Catalog
from reconciler.service import records
from reconciler.store.open import open_store, state_location


def register(sub: Any) -> None:
    p = sub.add_parser("adopt", help="mark every current one-shot as fired, without firing (bringing an "
                                     "existing directory under the reconciler)",
                       description="Record every one-shot's current revision as fired, so that only later changes "
                                   "fire: for a directory of specs that already ran by other means.",
                       epilog="example: reconciler adopt --triggers triggers --state .reconciler/state.db")
    add_common(p)
    p.set_defaults(func=cmd_adopt)

    p = sub.add_parser("retry", help="post refused runs again now (after fixing a token, a job name, a proxy)",
                       description="Runs Jenkins refused (401, 403, 404, a login redirect, TLS) are retried with "
                                   "growing delays and at every start; this makes them due at once. The running "
                                   "daemon takes them up within seconds.",
                       epilog="example: reconciler retry team/deploy nightly/regression")
    p.add_argument("names", nargs="*", metavar="NAME", help="triggers (default: every refused run)")
    p.add_argument("--state", type=state_location, default=state_location(env("state", ".reconciler/state.db")),
                   help="state store: a SQLite file or postgresql://HOST/DB (env RECONCILER_STATE)")
    p.set_defaults(func=cmd_retry)


def cmd_retry(args: argparse.Namespace) -> int:
    store = open_store(args.state)
    try:
        count = store.retry_now(args.names or None)
    finally:
        store.close()
    print(f"{count} refused run(s) due again; a running daemon posts them within seconds", file=sys.stderr)
    return EXIT_OK


def cmd_adopt(args: argparse.Namespace) -> int:
    catalog = Catalog.scanned(args.triggers)
    adopted = records.adopt(list(catalog.specs.values()), history_dir(args), args.state)
    for run in adopted:
        print(f"adopted {run.trigger} (revision {run.fire_key})")
    print(f"{len(adopted)} trigger(s) adopted; {len(catalog.errors)} invalid", file=sys.stderr)
    return EXIT_INVALID if catalog.errors else EXIT_OK
