"""The run lifecycle, as plain data: which step may follow which."""

from __future__ import annotations

import pytest

from reconciler.core.runs import (
    ACCEPTED,
    FINISHED,
    OPEN,
    TRANSITIONS,
    IllegalTransition,
    Run,
    RunStatus,
    advance,
    run_id_of,
)


def run(status: RunStatus) -> Run:
    return Run(run_id="r1", trigger="deploy", fire_key="abc", server="default", job="deploy", parameters=None,
               cause=None, tag_param=None, status=status, decided_at=0.0)


def test_every_status_has_a_row_and_open_runs_can_always_end():
    assert set(TRANSITIONS) == set(RunStatus)
    for status in OPEN:
        assert TRANSITIONS[status] & FINISHED, f"{status} has no way to end"


def test_a_finished_run_never_changes_status_again():
    for status in FINISHED:
        for after in RunStatus:
            with pytest.raises(IllegalTransition, match=f"{status} cannot become {after}"):
                advance(run(status), {"status": after})


def test_a_refused_run_is_posted_again_only_through_decided():
    assert advance(run(RunStatus.REFUSED), {"status": "decided", "retry_at": None}).status is RunStatus.DECIDED
    with pytest.raises(IllegalTransition):
        advance(run(RunStatus.REFUSED), {"status": RunStatus.QUEUED})


def test_a_step_without_a_status_only_adds_to_what_is_known():
    after = advance(run(RunStatus.BUILDING), {"build_number": 7})
    assert (after.status, after.build_number) == (RunStatus.BUILDING, 7)


def test_statuses_read_back_as_text_become_members():
    assert run("queued").status is RunStatus.QUEUED  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        run("exploded")  # type: ignore[arg-type]


def test_what_counts_as_fired_is_what_jenkins_accepted():
    assert RunStatus.REFUSED not in ACCEPTED and RunStatus.DECIDED not in ACCEPTED
    assert RunStatus.BUILDING in ACCEPTED


def test_a_run_id_follows_from_what_it_fires():
    assert run_id_of("deploy", "abc") == run_id_of("deploy", "abc") != run_id_of("deploy", "abd")
