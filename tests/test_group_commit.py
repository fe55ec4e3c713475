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


def test_steps_from_32_threads_share_commits_and_each_thread_goes_on_with_what_was_written(tmp_path):
    store = Store(tmp_path / "state.db")
    runs = decided(store, 320)
    commits = _GroupCommit(store)
    returned: dict[str, Run] = {}

    def fire(i: int) -> None:
        for run in runs[i::32]:
            run = commits.write(run, {"status": RunStatus.POSTING, "attempts": 1}, True)
            assert run.status is RunStatus.POSTING  # written before the thread goes on (it would POST now)
            returned[run.run_id] = commits.write(run, {"status": RunStatus.QUEUED, "queue_url": f"q/{run.trigger}"},
                                                 False)

    on_threads(32, fire)
    stored = {r.run_id: r for r in store.runs(limit=1000)}
    assert {r.status for r in stored.values()} == {RunStatus.QUEUED}
    assert all(stored[i].queue_url == f"q/{stored[i].trigger}" for i in stored)
    assert all(returned[i] == stored[i] for i in stored)  # what the thread went on with is what was written
    assert commits.batches < commits.steps == 640  # steps shared commits


def test_a_batch_that_cannot_be_written_fails_each_of_its_steps_and_the_next_writer_leads_again(tmp_path):
    store = Store(tmp_path / "state.db")
    runs = decided(store, 2)
    commits = _GroupCommit(store)
    posting = [commits.write(r, {"status": RunStatus.POSTING, "attempts": 1}, True) for r in runs]
    store.close()  # the database is gone from under the daemon: every write fails
    for run in posting:
        try:
            commits.write(run, {"status": RunStatus.QUEUED, "queue_url": "q/1"}, False)
        except Exception as e:  # each step's thread is told, and the commit does not stay taken
            assert type(e).__name__ == "ProgrammingError"
        else:
            raise AssertionError("a step whose write failed was reported written")


def test_a_run_s_steps_are_written_in_the_order_they_were_taken(tmp_path):
    store = Store(tmp_path / "state.db")
    [run] = decided(store, 1)
    commits = _GroupCommit(store)
    run = commits.write(run, {"status": RunStatus.POSTING, "attempts": 1}, True)
    run = commits.write(run, {"status": RunStatus.QUEUED, "queue_url": "q/1"}, False)
    run = commits.write(run, {"status": RunStatus.BUILDING, "build_number": 7}, False)
    [stored] = store.runs()
    assert (stored.status, stored.queue_url, stored.build_number) == (RunStatus.BUILDING, "q/1", 7)
