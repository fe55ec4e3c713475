"""The supervisor: threads that fail are run again, turns that fail are reported and the loop goes on."""

from __future__ import annotations

import threading

from reconciler import logs
from reconciler.core.errors import HistoryGitError
from reconciler.service.supervisor import Supervisor

from .conftest import LogBuffer, wait_for


def supervised() -> tuple[Supervisor, LogBuffer]:
    buffer = LogBuffer()
    logs.configure("json", buffer)
    return Supervisor(threading.Event()), buffer


def test_a_thread_whose_body_fails_runs_again_and_a_bug_is_logged_with_its_traceback():
    supervisor, buffer = supervised()
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("a bug")
        supervisor.stop.wait()

    supervisor.start("flaky", flaky)
    wait_for(lambda: len(calls) == 2, timeout=10, what="the body run again")
    [crash] = [e for e in buffer.events() if e["event"] == "flaky_crashed"]
    assert "KeyError: 'a bug'" in crash["exception"]
    assert [e["in_seconds"] for e in buffer.events() if e["event"] == "thread_restarting"] == [1.0]
    supervisor.shutdown()
    assert not supervisor.alive("flaky")


def test_an_error_of_the_world_is_one_line_with_its_reason_and_the_loop_goes_on():
    supervisor, buffer = supervised()
    turns = [supervisor.guard("pass", lambda: (_ for _ in ()).throw(HistoryGitError("git push: remote hung up"))),
             supervisor.guard("pass", lambda: None)]
    assert isinstance(turns[0], HistoryGitError) and turns[1] is None
    [failed] = [e for e in buffer.events() if e["event"] == "pass_failed"]
    assert failed["error"] == "git push: remote hung up" and "exception" not in failed


def test_shutdown_stops_everything_last_started_first_even_when_a_stopper_fails():
    supervisor, buffer = supervised()
    stopped: list[str] = []
    supervisor.on_stop(lambda: stopped.append("probes"))
    supervisor.on_stop(lambda: (_ for _ in ()).throw(OSError("socket already closed")))
    supervisor.on_stop(lambda: stopped.append("pools"))
    supervisor.start("waiter", supervisor.stop.wait)
    supervisor.shutdown()
    assert stopped == ["pools", "probes"]
    assert not supervisor.alive("waiter")
    assert any(e["event"] == "shutdown_failed" for e in buffer.events())
