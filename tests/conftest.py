"""Fixtures for real parts: a simulated Jenkins on loopback, real directories, real SQLite files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reconciler.simulator import Simulator, from_mapping

USER, TOKEN = "alice", "alice-api-token"

DEFAULT_JOBS: list[Any] = [
    {"name": "plain", "duration": 0},
    {"name": "manual", "duration": None},
    {"name": "deploy", "duration": None, "token": "deploy-job-token",
     "parameters": [{"name": "ENV", "type": "choice", "choices": ["staging", "prod"]},
                    {"name": "VERSION", "default": "1.0"},
                    {"name": "DRY_RUN", "type": "boolean", "default": True},
                    {"name": "SECRET", "type": "password"}]},
    {"name": "team a/dëploy ü", "duration": 0, "parameters": ["TARGET"]},
    {"name": "off", "disabled": True},
]


def sim_config(**overrides: Any) -> Any:
    raw: dict[str, Any] = {
        "quiet_period": 0,
        "executors": 8,
        "users": {USER: {"token": TOKEN, "full_name": "Alice Example"},
                  "reader": {"token": "reader-token", "permissions": ["read"]}},
        "jobs": DEFAULT_JOBS,
    }
    raw.update(overrides)
    return from_mapping(raw)


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., Simulator]]:
    """Start simulators with settings overridden per test; all are stopped at the end."""
    started: list[Simulator] = []

    def make(**overrides: Any) -> Simulator:
        sim = Simulator(sim_config(**overrides)).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def simulator(make_simulator: Callable[..., Simulator]) -> Simulator:
    return make_simulator()
