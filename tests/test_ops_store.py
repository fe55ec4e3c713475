"""Requests, pauses and their history entries in both engines of the state store (real SQLite, real PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from reconciler.core.operations import Pause, Request, requested_run
from reconciler.core.runs import RunStatus
from reconciler.core.spec import parse
from reconciler.service.operations import entry
from reconciler.store.open import open_store

SPEC = parse("job: deploy\nparameters: {ENV: prod}\n", name="team/deploy", path="d.yaml")
AT = datetime(2026, 5, 10, 10, 0, tzinfo=UTC).timestamp()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    location = tmp_path / "s.db" if request.param == "sqlite" else request.getfixturevalue("pg_dsn")
    opened = open_store(location)
    yield opened
    opened.close()


def asked(rid: str) -> tuple:
    request = Request(run_id="", request_id=rid, trigger=SPEC.name, kind="trigger", note="hotfix", by="alice",
                      os_user="bob", at=AT)
    run = requested_run(SPEC, request)
    return run, replace(request, run_id=run.run_id)


def test_a_request_is_recorded_once_with_who_asked_and_one_entry_for_its_history_line(store):
    run, request = asked("k1")
    assert store.request([(run, request)], [entry(run.trigger, "requested", AT, run_id=run.run_id)]) == [run]
    assert store.request([(run, request)], [entry(run.trigger, "requested", AT, run_id=run.run_id)]) == []
    [(found, who)] = store.requested()
    assert found.run_id == run.run_id and found.status is RunStatus.REQUESTED and who == request
    assert store.statuses(run.trigger, [run.fire_key, "@nothing"]) == {run.fire_key: "requested"}
    [op] = store.unrecorded()
    assert (op.event, op.fields) == ("requested", {"run_id": run.run_id})
    store.recorded([op.id])
    assert store.unrecorded() == []


def test_a_pause_holds_until_resumed_and_a_second_resume_changes_nothing(store):
    pause = Pause(trigger="t", by="alice", os_user="bob", note="incident", since=AT, until=AT + 60)
    store.pause(pause, entry("t", "paused", AT, by="alice"))
    assert store.pauses() == [pause]
    assert store.resume("t", AT + 5, entry("t", "resumed", AT + 5, by="carol"))
    assert not store.resume("t", AT + 6, entry("t", "resumed", AT + 6, by="carol"))
    assert store.pauses()[0].resumed_at == AT + 5
    assert [op.event for op in store.unrecorded()] == ["paused", "resumed"]
    store.pause(pause, entry("t", "paused", AT + 7, by="alice"))
    assert store.pauses()[0].holds(AT + 8)
