"""The state store on a real PostgreSQL: the SQLite store's rules, shared by processes, fenced by a lease."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest

from reconciler import logs
from reconciler.core.errors import NotLeader, StateError
from reconciler.core.runs import Run
from reconciler.service.leadership import Leadership
from reconciler.store.postgres import MIGRATIONS, PgStore, display

from .conftest import wait_for


def run(trigger: str = "t", key: str = "rev1", **kw) -> Run:
    return Run(run_id=uuid.uuid4().hex[:16], trigger=trigger, fire_key=key, server="default", job="j",
               parameters=(("A", "1"),), cause="c", tag_param=None, status="decided", decided_at=1.0, **kw)


def test_a_second_decision_for_the_same_revision_is_refused_across_processes(pg_dsn):
    one, other = PgStore(pg_dsn), PgStore(pg_dsn)
    assert len(one.decide([run()])) == 1
    assert other.decide([run()]) == []
    assert other.fired() == {("t", "rev1")} and not other.is_empty()


def test_every_question_the_daemon_asks_is_answered_as_sqlite_answers_it(pg_dsn):
    store = PgStore(pg_dsn)
    a, tick, refused = run(key="rev1"), run(key="@2026-01-01T00:01:00Z"), run("r", "rev9")
    store.decide([a, tick, refused], cursors={"t": 100.0})
    store.decide([], cursors={"t": 50.0})  # a cursor never moves back
    assert store.cursors() == {"t": 100.0}
    assert store.fired_among([("t", "rev1"), ("t", "rev2"), ("r", "rev9")]) == {("t", "rev1"), ("r", "rev9")}
    assert store.last_ticks() == {"t": "@2026-01-01T00:01:00Z"}
    logs.add_secrets(["pg-test-api-token"])
    store.update_many([(a, {"status": "queued", "queue_url": "q/1", "parameters": (("B", "2"),)}),
                       (refused, {"status": "refused", "retry_at": 30.0, "last_error": "401 for pg-test-api-token"})],
                      durable=True)
    assert {r.run_id for r in store.open_runs()} == {a.run_id, tick.run_id}
    assert [r.run_id for r in store.open_runs(excluding=[a.run_id])] == [tick.run_id]
    assert store.refused_due(10.0) == [] and store.next_retry_at() == 30.0
    assert store.retry_now(["r"]) == 1 and [r.run_id for r in store.refused_due(10.0)] == [refused.run_id]
    [latest_t] = [r for r in store.latest().values() if r.trigger == "t"]
    assert latest_t.decided_at == 1.0 and set(store.latest()) == {"t", "r"}
    [back] = [r for r in store.runs("t") if r.run_id == a.run_id]
    assert back.parameters == (("B", "2"),) and back.queue_url == "q/1"
    assert store.writable() is None
    assert "pg-test-api-token" not in (store.runs("r")[0].last_error or "x pg-test-api-token")


def test_replicas_starting_together_migrate_once(pg_dsn):
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            PgStore(pg_dsn).close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with psycopg.connect(pg_dsn) as db:
        assert db.execute("SELECT version FROM reconciler_schema").fetchall() == [(len(MIGRATIONS),)]


def test_a_password_in_the_dsn_is_refused_and_never_shown(pg_dsn):
    with pytest.raises(StateError, match="PGPASSWORD") as e:
        PgStore(pg_dsn.replace("postgres@", "postgres:hunter2@"))
    assert "hunter2" not in str(e.value)
    assert display("postgresql://bot@db.example:5433/reconciler?passfile=/p") == "postgresql://bot@db.example:5433/reconciler"


def test_a_connection_cut_under_the_store_is_opened_again(pg_dsn):
    store = PgStore(pg_dsn)
    store.decide([run()])

    def cut() -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE "
                          "'reconciler%' AND datname = current_database()")

    cut()
    assert store.fired() == {("t", "rev1")}  # a read that meets the cut is made again on a new connection
    cut()
    with pytest.raises(StateError):  # a write that meets it says so: the caller decides
        store.decide([run(key="rev2")])
    assert store.decide([run(key="rev2")]) != []  # the next one reconnects
    assert store.fired() == {("t", "rev1"), ("t", "rev2")}


def test_writes_are_fenced_by_the_lease(pg_dsn):
    store = PgStore(pg_dsn)
    stop = threading.Event()
    leader = Leadership(store.connection, "a", lease=1.5)
    store.fence = leader.fence
    with pytest.raises(NotLeader):  # not elected yet
        store.decide([run()])
    thread = threading.Thread(target=leader.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(leader.elected.is_set, what="the lease")
        [first] = store.decide([run()])
        store.update_many([(first, {"status": "posting"})], durable=True)
        store.update_many([(first, {"status": "queued"})])  # one statement, the fence inside it
    finally:
        stop.set()
        thread.join()
    wait_for(lambda: not leader.may_act(), what="the lease to lapse without renewals")
    with pytest.raises(NotLeader, match="lease has lapsed"):
        store.decide([run(key="rev2")])
    with psycopg.connect(pg_dsn, autocommit=True) as db:  # the database expires it a margin after the leader
        wait_for(lambda: db.execute("SELECT expires_at < now() FROM leader").fetchone()[0], what="expiry")
    leader.may_act = lambda: True  # a stalled leader that still believes it leads: the database says no
    for durable in (True, False):
        with pytest.raises(NotLeader, match="lease has lapsed"):
            store.update_many([(first, {"status": "building"})], durable=durable)
    assert store.fired() == {("t", "rev1")} and store.runs()[0].status == "queued"
