"""What a pass would do: pure over the specs, the errors and what has already been fired."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum

from .errors import SpecError
from .spec import Spec


class Action(StrEnum):
    FIRE = "fire"
    UP_TO_DATE = "up to date"
    INVALID = "invalid"
    SUSPENDED = "suspended"


@dataclass(frozen=True)
class Verdict:
    trigger: str
    action: Action
    detail: str = ""
    spec: Spec | None = None

    @property
    def key(self) -> str:
        """The identity of one fire of this trigger: for a one-shot, its revision."""
        assert self.spec is not None
        return self.spec.revision


def decide(spec: Spec, fired: Collection[tuple[str, str]], servers: Collection[str]) -> Verdict:
    if spec.server not in servers:
        known = ", ".join(sorted(servers)) or "none"
        return Verdict(spec.name, Action.INVALID, f"server {spec.server!r} is not configured (known: {known})",
                       spec)
    if spec.suspend:
        return Verdict(spec.name, Action.SUSPENDED, "suspend: true", spec)
    if (spec.name, spec.revision) in fired:
        return Verdict(spec.name, Action.UP_TO_DATE, f"revision {spec.revision} already fired", spec)
    return Verdict(spec.name, Action.FIRE, f"revision {spec.revision} not fired yet", spec)


def plan(specs: Mapping[str, Spec], errors: Mapping[str, SpecError],
         fired: Collection[tuple[str, str]], servers: Collection[str]) -> list[Verdict]:
    """One verdict per trigger, sorted by name. A deleted spec has no verdict: it fires nothing."""
    verdicts = [decide(spec, fired, servers) for spec in specs.values()]
    verdicts += [Verdict(name, Action.INVALID, str(err)) for name, err in errors.items()]
    return sorted(verdicts, key=lambda v: v.trigger)
