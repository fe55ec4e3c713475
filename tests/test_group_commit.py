"""Runs' steps written together (the executor's group commit), on a real SQLite file, from real threads."""

from __future__ import annotations

import threading
import uuid

from reconciler.core.runs import Run, RunStatus
from reconciler.service.execute import _GroupCommit
from reconciler.store.sqlite import Store


def decided(store: Store, n: int) -> list[Run]:
    runs = [Run(run_id=uuid.uuid4().hex[:16], trigger=f"t{i}", fire_key="rev1", server="default", job="j",
                parameters=(("N", str(i)),), cause="c", tag_param=None, status=RunStatus.DECIDED, decided_at=1.0)
            for i in range(n)]
    return store.decide(runs)


def on_threads(n: int, work) -> None:
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread never got its step written"


def test_posting_marks_waited_for_and_queue_items_left_to_the_leader_all_reach_the_store_in_order(tmp_path):
    store = Store(tmp_path / "state.db")
    runs = decided(store, 320)
    lost: list[str] = []
    commits = _GroupCommit(store, lost=lambda run, changes, error: lost.append(run.run_id))
    returned: dict[str, Run] = {}

    def fire(i: int) -> None:
        for run in runs[i::32]:
            run = commits.write(run, {"status": RunStatus.POSTING, "attempts": 1}, True)
            assert run.status is RunStatus.POSTING  # written before the thread goes on (it would POST now)
            returned[run.run_id] = commits.write(run, {"status": RunStatus.QUEUED,
                                                       "queue_url": f"q/{run.trigger}"}, False, wait=False)

    on_threads(32, fire)
    stored = {r.run_id: r for r in store.runs(limit=1000)}
    assert lost == []
    assert {r.status for r in stored.values()} == {RunStatus.QUEUED}
    assert all(stored[i].queue_url == f"q/{stored[i].trigger}" for i in stored)
    assert all(returned[i] == stored[i] for i in stored)  # what the thread went on with is what was written
    assert commits.batches < commits.steps == 640  # steps shared commits


def test_a_later_step_waited_for_is_written_after_the_one_left_before_it(tmp_path):
    store = Store(tmp_path / "state.db")
    [run] = decided(store, 1)
    commits = _GroupCommit(store)
    run = commits.write(run, {"status": RunStatus.POSTING, "attempts": 1}, True)
    run = commits.write(run, {"status": RunStatus.QUEUED, "queue_url": "q/1"}, False, wait=False)
    run = commits.write(run, {"status": RunStatus.BUILDING, "build_number": 7}, False)
    [stored] = store.runs()
    assert (stored.status, stored.queue_url, stored.build_number) == (RunStatus.BUILDING, "q/1", 7)


def test_a_step_nobody_waits_for_that_cannot_be_written_is_reported_and_its_thread_goes_on(tmp_path):
    store = Store(tmp_path / "state.db")
    runs = decided(store, 2)
    lost: list[tuple[str, str, str]] = []
    commits = _GroupCommit(store, lost=lambda run, changes, error: lost.append(
        (run.run_id, changes["status"], type(error).__name__)))
    posting = [commits.write(r, {"status": RunStatus.POSTING, "attempts": 1}, True) for r in runs]
    store.close()  # the database is gone from under the daemon: every write fails
    went_on = commits.write(posting[0], {"status": RunStatus.QUEUED, "queue_url": "q/1"}, False, wait=False)
    assert went_on.status is RunStatus.QUEUED
    assert lost == [(posting[0].run_id, RunStatus.QUEUED, "ProgrammingError")]
    try:
        commits.write(posting[1], {"status": RunStatus.QUEUED, "queue_url": "q/2"}, False)
    except Exception as e:  # a step waited for gets the failure itself, and is not reported twice
        assert type(e).__name__ == "ProgrammingError"
    else:
        raise AssertionError("a step waited for was not told its write failed")
    assert len(lost) == 1
