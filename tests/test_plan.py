"""The plan: a pure function from specs, errors and what has fired to one verdict per trigger."""

from __future__ import annotations

from reconciler.core.errors import Problem, SpecError
from reconciler.core.plan import Action, plan
from reconciler.core.spec import parse


def spec(name: str, text: str = "job: j\n"):
    return parse(text, name=name, path=f"{name}.yaml")


def test_a_new_one_shot_fires_and_a_fired_one_is_up_to_date():
    a, b = spec("a"), spec("b")
    verdicts = plan({"a": a, "b": b}, {}, {("b", b.revision)}, {"default"})
    assert [(v.trigger, v.action) for v in verdicts] == [("a", Action.FIRE), ("b", Action.UP_TO_DATE)]


def test_a_changed_revision_fires_again():
    old, new = spec("a", "job: j\nrun: 1\n"), spec("a", "job: j\nrun: 2\n")
    [verdict] = plan({"a": new}, {}, {("a", old.revision)}, {"default"})
    assert verdict.action is Action.FIRE and verdict.key == new.revision


def test_suspended_and_invalid_triggers_do_not_fire():
    err = SpecError("c.yaml", [Problem(2, 1, "unknown key 'x'")])
    verdicts = plan({"a": spec("a", "job: j\nsuspend: true\n"), "b": spec("b", "job: j\nserver: nope\n")},
                    {"c": err}, set(), {"default"})
    assert [(v.trigger, v.action) for v in verdicts] == \
        [("a", Action.SUSPENDED), ("b", Action.INVALID), ("c", Action.INVALID)]
    assert "server 'nope' is not configured (known: default)" in verdicts[1].detail
    assert verdicts[2].detail == "c.yaml:2:1: unknown key 'x'"


def test_a_deleted_spec_has_no_verdict_and_fires_nothing():
    gone = spec("gone")
    assert plan({}, {}, {("gone", gone.revision)}, {"default"}) == []


def test_every_verdict_and_change_has_its_words_in_one_and_many():
    from reconciler.cli.specs import _ACTION_WORDS
    from reconciler.core.preview import _SAID, Kind

    assert set(_ACTION_WORDS) == set(Action) and set(_SAID) == set(Kind)
