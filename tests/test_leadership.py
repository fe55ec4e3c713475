"""Leadership on a real PostgreSQL: one holder at a time, epochs that only grow, a lapsed leader stops."""

from __future__ import annotations

import threading
import time

import psycopg

from reconciler.metrics import Metrics
from reconciler.service.leadership import Leadership
from reconciler.store.postgres import PgStore

from .conftest import wait_for


def start(dsn: str, holder: str, lease: float = 1.5) -> tuple[Leadership, threading.Event]:
    leadership = Leadership(PgStore(dsn).connection, holder, lease=lease, metrics=Metrics())
    stop = threading.Event()
    threading.Thread(target=leadership.run, args=(stop,), daemon=True).start()
    return leadership, stop


def test_one_replica_leads_and_another_takes_over_only_after_the_lease_expires(pg_dsn):
    a, stop_a = start(pg_dsn, "a")
    wait_for(a.elected.is_set, what="a to lead")
    b, stop_b = start(pg_dsn, "b")
    try:
        time.sleep(2 * a.lease)
        assert not b.elected.is_set() and b.notes() == [f"standing by: a leads (epoch {a.epoch})"]
        stop_a.set()  # a stops renewing, as a killed process does
        stopped = time.monotonic()
        wait_for(b.elected.is_set, what="b to take over")
        assert time.monotonic() - stopped >= a.lease - a.renew_every - 0.1, "not before the lease could expire"
        assert b.epoch == a.epoch + 1
        assert b.notes() == [f"leading (epoch {b.epoch})"]
        assert not a.may_act(), "a's own view of its lease ran out before b could take it"
    finally:
        stop_a.set()
        stop_b.set()


def test_a_leader_that_finds_its_lease_taken_gives_up_for_good(pg_dsn):
    a, stop = start(pg_dsn, "a", lease=3.0)
    try:
        wait_for(a.elected.is_set, what="a to lead")
        with psycopg.connect(pg_dsn, autocommit=True) as db:  # someone took it (a paused leader's view)
            db.execute("UPDATE leader SET holder = 'b', epoch = epoch + 1, expires_at = now() + interval '1 hour'")
        wait_for(a.lost.is_set, what="a to notice")
        assert not a.may_act() and a.fence() is None
    finally:
        stop.set()


def test_a_leader_whose_connection_is_cut_renews_on_a_new_one(pg_dsn):
    a, stop = start(pg_dsn, "a", lease=3.0)
    try:
        wait_for(a.elected.is_set, what="a to lead")
        epoch = a.epoch
        with psycopg.connect(pg_dsn, autocommit=True) as db:
            [cut] = db.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name "
                               "LIKE 'reconciler%' AND datname = current_database()").fetchone()
            assert cut >= 1
            time.sleep(2 * a.lease)
            [renewing] = db.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                                    "'reconciler%' AND datname = current_database()").fetchone()
        assert renewing >= 1, "a connected again"
        assert a.may_act() and a.epoch == epoch and not a.lost.is_set()
    finally:
        stop.set()
