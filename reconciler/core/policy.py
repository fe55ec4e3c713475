"""The operator's policy: which triggers may ask for which servers, jobs, parameter values and
schedules. Pure: a spec and the rules in, the violations out, each with the key of the spec it is
about, so an error points at the line the committer wrote.

The triggers repository is untrusted; the policy is how an operator gives team A a folder without
also giving it every job the credentials can build. The first rule whose `triggers` globs match a
trigger's name applies; once there is a policy, a trigger no rule matches may fire nothing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.core.errors import Problem
from reconciler.core.spec import Spec, position_in


def glob_problem(pattern: str) -> str | None:
    """What is wrong with a glob, if anything: `**` stands for whole path segments only."""
    if not pattern:
        return "an empty glob matches nothing: give a name or `**`"
    bad = [seg for seg in pattern.split("/") if "**" in seg and seg != "**"]
    if bad:
        return f"glob {pattern!r}: `**` matches whole path segments, so it stands alone between slashes " \
               f"(as in `team-a/**`); `*` matches within one segment"
    return None


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    """`*` is any run of characters but `/`; a `**` segment is any number of whole segments (at
    least one at the end: `team-a/**` is what lies inside team-a, not `team-a` itself). Nothing
    else is special: `?` and `[` are themselves."""
    segments = pattern.split("/")
    out = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "**":
            out.append("[^/]+(?:/[^/]+)*" if last else "(?:[^/]+/)*")
            continue
        out.append("[^/]*".join(re.escape(part) for part in seg.split("*")) + ("" if last else "/"))
    return re.compile("".join(out))


def matches(pattern: str, name: str) -> bool:
    return _compiled(pattern).fullmatch(name) is not None


def matches_any(patterns: Sequence[str], name: str) -> bool:
    return any(matches(p, name) for p in patterns)


@dataclass(frozen=True)
class Rule:
    """One entry of `policy:`. None means "any" (the key was left out)."""

    triggers: tuple[str, ...]
    servers: tuple[str, ...] | None = None
    jobs: tuple[str, ...] | None = None
    parameters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Allowed value globs by parameter name; a parameter not listed may take any value."""
    schedule: bool = True
    number: int = 1
    """Its place in the list, from 1, to name it in errors."""

    @property
    def label(self) -> str:
        return f"policy rule {self.number} (triggers: {', '.join(self.triggers)})"


@dataclass(frozen=True)
class Violation:
    """What a spec asks that its rule does not allow. `loc` is the key in the spec (`("parameters",
    "ENV")`); empty when the trigger as a whole is refused."""

    loc: tuple[str, ...]
    message: str


def rule_for(name: str, rules: Sequence[Rule]) -> Rule | None:
    """The first rule whose `triggers` match the trigger's name."""
    found = _chooser(rules).fullmatch(name)
    return None if found is None or found.lastgroup is None else rules[int(found.lastgroup[1:])]


_last_chooser: tuple[Sequence[Rule], re.Pattern[str]] | None = None


def _chooser(rules: Sequence[Rule]) -> re.Pattern[str]:
    """All the rules' globs in one expression, a group per rule in their order: an alternation tries its
    branches in order, so the group that matches is the first rule's that does. One match per trigger
    however many rules; kept for the last rules asked about (the same object a whole pass long, so found
    by identity: hashing fifty rules per trigger would cost more than the match)."""
    global _last_chooser
    last = _last_chooser
    if last is not None and last[0] is rules:
        return last[1]
    chooser = re.compile("|".join(f"(?P<r{i}>{'|'.join(_compiled(g).pattern for g in rule.triggers)})"
                                  for i, rule in enumerate(rules)) or "(?!)")
    _last_chooser = (rules, chooser)
    return chooser


def _listing(globs: Sequence[str]) -> str:
    return ", ".join(globs) if globs else "nothing"


def violations(spec: Spec, rules: Sequence[Rule] | None) -> list[Violation]:
    """Everything `spec` asks that the policy does not allow; none without a policy (`rules` None)."""
    if rules is None:
        return []
    rule = rule_for(spec.name, rules)
    if rule is None:
        covered = "; ".join(_listing(r.triggers) for r in rules) or "no triggers"
        return [Violation((), f"no policy rule covers trigger {spec.name!r} (the rules cover {covered}), and "
                              "with a policy a trigger no rule names may fire nothing: ask the operator for a "
                              "rule, or move the file where one applies")]
    found = []
    if rule.servers is not None and not matches_any(rule.servers, spec.server):
        found.append(Violation(("server",), f"server {spec.server!r} is not allowed by {rule.label}: it allows "
                                            f"servers {_listing(rule.servers)}"))
    if rule.jobs is not None and not matches_any(rule.jobs, spec.job):
        found.append(Violation(("job",), f"job {spec.job!r} is not allowed by {rule.label}: it allows jobs "
                                         f"{_listing(rule.jobs)}"))
    if spec.schedule is not None and not rule.schedule:
        found.append(Violation(("schedule",), f"`schedule:` is not allowed by {rule.label}: its triggers are "
                                              "one-shots only (schedule: false)"))
    allowed = dict(rule.parameters)
    for name, value in spec.parameters or ():
        if name in allowed and not matches_any(allowed[name], value):
            found.append(Violation(("parameters", name), f"parameter {name}={value!r} is not allowed by "
                                                         f"{rule.label}: it allows {name} "
                                                         f"{_listing(allowed[name])}"))
    found += _unchecked_values(spec, allowed, rule)
    return found


def _unchecked_values(spec: Spec, allowed: dict[str, tuple[str, ...]], rule: Rule) -> list[Violation]:
    """A restricted parameter must not be filled by the daemon from the run, the tick or the commit:
    a commit's subject or author is whatever the committer typed, so `provenance_parameters: {subject:
    ENV}` would set ENV to any value past the policy."""
    filled = [(("run_id_parameter",), spec.run_id_parameter),
              (("scheduled_time_parameter",), spec.scheduled_time_parameter)]
    filled += [(("provenance_parameters", field), name) for field, name in spec.provenance_parameters or ()]
    return [Violation(loc, f"{loc[0]} sets parameter {name}, whose values {rule.label} restricts to "
                           f"{_listing(allowed[name])}: name a parameter the policy leaves open")
            for loc, name in filled if name is not None and name in allowed]


def problems(text: str, found: Sequence[Violation]) -> list[Problem]:
    """The violations at their place in the spec's text: the offending key's line and column (the
    top of the file for a key the spec leaves at its default, or for the trigger as a whole)."""
    return [Problem(*(position_in(text, *v.loc) if v.loc else (1, 1)), v.message) for v in found]
