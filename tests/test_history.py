"""History files: stable lines, crash-safe appends, and enough to rebuild state from."""

from __future__ import annotations

import json

from reconciler.core.runs import Run
from reconciler.repo.history import History


def run(trigger: str = "team/deploy") -> Run:
    return Run(run_id="r1", trigger=trigger, fire_key="rev", server="default", job="deploy",
               parameters=(("ENV", "prod"),), cause="c", tag_param=None, status="decided", decided_at=0.0)


def test_one_file_per_trigger_mirrors_the_spec_path_with_sorted_keys(tmp_path):
    history = History(tmp_path)
    history.decided(run(), 1.0)
    history.append(run(), "completed", 2.0, result="SUCCESS", number=4)
    lines = (tmp_path / "team" / "deploy.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["decided", "completed"]
    for line in lines:
        assert list(json.loads(line)) == sorted(json.loads(line))
    assert history.read("team/deploy")[1]["result"] == "SUCCESS"


def test_a_torn_last_line_is_skipped_and_closed_off_by_the_next_append(tmp_path):
    history = History(tmp_path)
    history.decided(run(), 1.0)
    path = tmp_path / "team" / "deploy.jsonl"
    with path.open("a") as f:
        f.write('{"at": "2026-01-01T00:00:00Z", "event": "comp')  # a crash mid-write
    assert [e["event"] for e in history.read("team/deploy")] == ["decided"]
    history.append(run(), "completed", 2.0, result="SUCCESS")
    assert [e["event"] for e in history.read("team/deploy")] == ["decided", "completed"]


def test_runs_are_rebuilt_with_their_last_known_state(tmp_path):
    history = History(tmp_path)
    history.decided(run(), 1.0)
    history.append(run(), "queued", 2.0, queue_url="http://j/queue/item/1/")
    history.append(run(), "started", 3.0, number=7, url="http://j/job/deploy/7/")
    [rebuilt] = list(history.runs())
    assert (rebuilt.status, rebuilt.build_number, rebuilt.queue_url, rebuilt.parameters) == \
        ("building", 7, "http://j/queue/item/1/", (("ENV", "prod"),))


def test_a_run_whose_history_stops_at_decided_is_treated_as_maybe_posted(tmp_path):
    history = History(tmp_path)
    history.decided(run(), 1.0)
    [rebuilt] = list(history.runs())
    assert rebuilt.status == "posting"


def test_every_line_of_a_tick_says_which_tick(tmp_path):
    from reconciler.core.runs import Run

    history = History(tmp_path)
    run = Run(run_id="r1", trigger="nightly", fire_key="@2026-12-01T02:00:00Z", server="default", job="j",
              parameters=None, cause=None, tag_param=None, status="decided", decided_at=0.0)
    history.decided(run, 1.0)
    history.append(run, "queued", 2.0, queue_url="q")
    history.append(run, "completed", 3.0, result="SUCCESS")
    assert {e["scheduled_for"] for e in history.read("nightly")} == {"2026-12-01T02:00:00Z"}


def test_a_file_replaced_or_removed_between_two_lines_gets_the_next_line_where_readers_look(tmp_path):
    """A thread keeps the file it wrote last open; git replaces files (a rebase), an operator may remove
    one: the next line must go to the file the path names now, never to the one no one can read."""
    history = History(tmp_path)
    history.decided(run(), 1.0)
    path = tmp_path / "team" / "deploy.jsonl"
    replaced = path.with_name("deploy.jsonl.new")
    replaced.write_text(path.read_text())
    replaced.replace(path)  # as git writes a file: a new one renamed over it
    history.append(run(), "queued", 2.0, queue_url="q")
    assert [e["event"] for e in history.read("team/deploy")] == ["decided", "queued"]
    path.unlink()
    history.append(run(), "completed", 3.0, result="SUCCESS")
    assert [e["event"] for e in history.read("team/deploy")] == ["completed"]
