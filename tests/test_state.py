"""The state store, on a real SQLite file."""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import replace

import pytest

from reconciler.core.errors import StateError
from reconciler.core.runs import Run
from reconciler.store.base import MIGRATIONS
from reconciler.store.sqlite import Store


def run(trigger: str = "t", key: str = "rev1", **kw) -> Run:
    """A run with an id of its own, so that only the store's (trigger, fire_key) rule can refuse it."""
    return Run(run_id=uuid.uuid4().hex[:16], trigger=trigger, fire_key=key, server="default", job="j",
               parameters=(("A", "1"),), cause="c", tag_param=None, status="decided", decided_at=1.0, **kw)


def test_a_second_decision_for_the_same_revision_is_refused(tmp_path):
    store = Store(tmp_path / "state.db")
    first = store.decide([run()])
    second = store.decide([run()])
    assert len(first) == 1 and second == []
    assert store.fired() == {("t", "rev1")}


def test_the_store_answers_whether_a_revision_or_a_tick_has_fired(tmp_path):
    store = Store(tmp_path / "state.db")
    store.decide([run(key="rev1"), run(key="@2026-01-01T00:00:00Z"), run(key="@2026-01-01T00:01:00Z")])
    asked = [("t", "rev1"), ("t", "@2026-01-01T00:01:00Z"), ("t", "rev2"), ("other", "rev1")]
    assert store.fired_among(asked) == {("t", "rev1"), ("t", "@2026-01-01T00:01:00Z")}
    assert store.fired_among([]) == set()
    # Ticks are counted by the schedule's cursor; only revisions are listed, however old the schedule.
    assert store.fired() == {("t", "rev1")}
    assert store.last_ticks() == {"t": "@2026-01-01T00:01:00Z"}
    store.decide([run(trigger='team/dé"ploy', key="rev1")])  # names travel to SQLite as JSON
    assert store.fired_among([('team/dé"ploy', "rev1"), ("team/deploy", "rev1")]) == {('team/dé"ploy', "rev1")}


def test_a_write_that_fails_leaves_the_store_writable(tmp_path):
    store = Store(tmp_path / "state.db")
    with pytest.raises(UnicodeEncodeError):  # a value SQLite cannot take, found mid-transaction
        store.decide([run(trigger="a"), run(trigger="b\udcff")])
    assert store.fired() == set()  # nothing of it was kept
    assert store.decide([run()]) and store.fired() == {("t", "rev1")}
    assert store.writable() is None


def test_decisions_and_outcomes_survive_reopening(tmp_path):
    path = tmp_path / "state.db"
    store = Store(path)
    [r] = store.decide([run()])
    store.update_many([(r, {"status": "completed", "result": "SUCCESS", "build_number": 3})])
    store.close()
    reopened = Store(path)
    [again] = reopened.runs("t")
    assert (again.status, again.result, again.build_number, again.parameters) == \
        ("completed", "SUCCESS", 3, (("A", "1"),))
    assert not reopened.created


def test_steps_of_several_runs_are_recorded_together_or_not_at_all(tmp_path):
    path = tmp_path / "state.db"
    store = Store(path)
    a, b = store.decide([run(key="a"), run(key="b")])
    marked = store.update_many([(a, {"status": "posting", "attempts": 1}), (b, {"status": "posting", "attempts": 1})],
                               durable=True)
    assert [(r.status, r.attempts) for r in marked] == [("posting", 1)] * 2
    with pytest.raises(StateError, match="no such column"):
        store.update_many([(a, {"status": "queued"}), (b, {"no_such_field": 1})])
    store.close()
    assert sorted((r.fire_key, r.status) for r in Store(path).runs("t")) == [("a", "posting"), ("b", "posting")]


def test_open_runs_are_those_with_work_left(tmp_path):
    store = Store(tmp_path / "state.db")
    _, b, c = store.decide([run(key="a"), run(key="b"), run(key="c")])
    store.update_many([(b, {"status": "queued"}), (c, {"status": "completed"})])
    assert {r.fire_key for r in store.open_runs()} == {"a", "b"}
    carried = [r.run_id for r in store.open_runs() if r.fire_key == "a"]
    assert [r.fire_key for r in store.open_runs(excluding=carried)] == ["b"]


def test_the_store_uses_wal_and_records_its_schema_version(tmp_path):
    Store(tmp_path / "state.db").close()
    db = sqlite3.connect(tmp_path / "state.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_an_older_store_is_migrated_and_keeps_its_runs(tmp_path):
    db = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    db.executescript(f"BEGIN; {MIGRATIONS[0]}; PRAGMA user_version = 1; COMMIT;")
    db.execute("INSERT INTO runs (run_id, trigger, fire_key, server, job, status, decided_at) "
               "VALUES ('r', 't', 'k', 'default', 'j', 'completed', 1.0)")
    db.close()
    store = Store(tmp_path / "state.db")
    assert store.fired() == {("t", "k")}
    assert store.cursors() == {}


def test_schedule_cursors_only_move_forward(tmp_path):
    store = Store(tmp_path / "state.db")
    store.decide([], cursors={"nightly": 100.0})
    store.decide([], cursors={"nightly": 50.0})
    assert store.cursors() == {"nightly": 100.0}


def test_a_store_from_a_newer_reconciler_is_refused_with_advice(tmp_path):
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StateError, match="upgrade the reconciler"):
        Store(tmp_path / "state.db")
    assert sqlite3.connect(tmp_path / "state.db").execute("PRAGMA user_version").fetchone() == (99,)


def test_a_store_one_additive_version_ahead_is_shared_as_in_a_rolling_update(tmp_path):
    """The next release's migration only adds; this release keeps working beside it until replaced."""
    Store(tmp_path / "state.db").close()
    db = sqlite3.connect(tmp_path / "state.db")
    db.executescript(f"ALTER TABLE runs ADD COLUMN next_release TEXT; PRAGMA user_version = {len(MIGRATIONS) + 1};")
    db.close()
    store = Store(tmp_path / "state.db")
    [decided] = store.decide([run(key="a")])
    store.update_many([(decided, {"status": "posting"})])
    assert [r.status for r in store.runs("t")] == ["posting"]
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 2}")
    db.close()
    with pytest.raises(StateError, match="newer than this reconciler knows"):
        Store(tmp_path / "state.db")


def test_latest_gives_the_newest_run_per_trigger(tmp_path):
    store = Store(tmp_path / "state.db")
    older = run(trigger="x", key="1")
    newer = replace(run(trigger="x", key="2"), decided_at=5.0)
    store.decide([older, newer, run(trigger="y")])
    latest = store.latest()
    assert latest["x"].fire_key == "2" and set(latest) == {"x", "y"}
