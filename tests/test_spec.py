"""Trigger specs: what parses, what a revision is, and how errors point at the line to fix."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest

from reconciler.core.errors import SpecError
from reconciler.core.spec import json_schema, parse, trigger_name

FIXTURES = Path(__file__).parent / "fixtures" / "specs"


def load(name: str):
    return parse((FIXTURES / name).read_text(), name=name.removesuffix(".yaml"), path=name)


def errors_of(name: str) -> list[str]:
    with pytest.raises(SpecError) as e:
        load(name)
    return str(e.value).splitlines()


def test_a_valid_spec_is_normalized_to_what_jenkins_receives():
    spec = load("valid.yaml")
    assert spec.job == "deploy"
    assert spec.parameters == (("ENV", "staging"), ("VERSION", "1.4"), ("DRY_RUN", "false"))
    assert spec.endpoint == "buildWithParameters"
    assert (spec.server, spec.run, spec.suspend, spec.cause) == ("default", 1, False, "deploy to staging")


def test_without_parameters_the_build_endpoint_is_used():
    assert parse("job: a/b c/d\n", name="t", path="t.yaml").endpoint == "build"


def test_formatting_comments_and_key_order_never_change_the_revision():
    a = parse("job: deploy\nparameters: {A: 1, B: x}\n", name="t", path="t.yaml")
    b = parse("# a comment\nparameters:\n  B: 'x'   # quoted\n  A: 1\njob:   deploy\ncause: only a note\n",
              name="t", path="t.yaml")
    assert a.revision == b.revision


@pytest.mark.parametrize("changed", [
    "job: other\nparameters: {A: 1}\n",
    "job: deploy\nparameters: {A: 2}\n",
    "job: deploy\nparameters: {A: 1, B: 1}\n",
    "job: deploy\nparameters: {A: 1}\nrun: 2\n",
    "job: deploy\nparameters: {A: 1}\nserver: other\n",
    "job: deploy\n",
])
def test_any_change_to_what_jenkins_is_asked_changes_the_revision(changed):
    base = parse("job: deploy\nparameters: {A: 1}\n", name="t", path="t.yaml")
    assert parse(changed, name="t", path="t.yaml").revision != base.revision


def test_unknown_key_is_reported_at_its_line_with_a_hint():
    assert errors_of("unknown-key.yaml") == [
        "unknown-key.yaml:2:1: unknown key 'paramters' (did you mean 'parameters'?)"]


def test_duplicate_keys_are_an_error():
    assert errors_of("duplicate-key.yaml") == ['duplicate-key.yaml:3:1: duplicate key "job"']


def test_wrong_types_are_each_reported_at_their_value():
    assert errors_of("wrong-types.yaml") == [
        "wrong-types.yaml:2:6: run: expected an integer ≥ 1, got a string",
        "wrong-types.yaml:3:10: suspend: expected true or false, got a string",
        "wrong-types.yaml:5:9: parameters.LIST: a parameter value is a string, number or boolean, not a list",
    ]


def test_an_empty_file_is_an_error():
    assert errors_of("empty.yaml") == ["empty.yaml:1:1: empty file: a trigger spec needs at least `job: NAME`"]


def test_broken_yaml_syntax_is_reported_with_its_position():
    [line] = errors_of("broken-syntax.yaml")
    assert line == "broken-syntax.yaml:3:8: this [ is never closed (did not find expected ',' or ']')"


def test_a_spec_nested_deeper_than_any_needs_is_refused_where_it_gets_too_deep():
    def nested(depth: int) -> str:
        return "job: plain\nparameters:\n  A: " + "[" * depth + "]" * depth + "\n"

    with pytest.raises(SpecError) as e:
        parse(nested(40), name="t", path="t.yaml")
    assert str(e.value) == "t.yaml:3:36: nested more than 32 levels deep; a trigger spec needs two"
    with pytest.raises(SpecError) as e:  # shallower, it is an ordinary error, found where it is
        parse(nested(30), name="t", path="t.yaml")
    assert str(e.value) == "t.yaml:3:6: parameters.A: a parameter value is a string, number or boolean, not a list"


def test_yaml_1_2_keeps_yes_a_string():
    with pytest.raises(SpecError, match="suspend: expected true or false, got a string"):
        parse("job: a\nsuspend: yes\n", name="t", path="t.yaml")


def test_parameter_values_reach_jenkins_as_written():
    spec = parse("job: a\nparameters: {VERSION: 1.10, BUILD: 010, MASK: 0x1f, BIG: 1_000, SCALE: 1e3, RATIO: -0.50,"
                 " N: 42, ANSWER: yes, FLAG: TRUE, OFF: False, AT: '12:30'}\n", name="t", path="t.yaml")
    assert dict(spec.parameters or ()) == {"VERSION": "1.10", "BUILD": "010", "MASK": "0x1f", "BIG": "1_000",
                                           "SCALE": "1e3", "RATIO": "-0.50", "N": "42", "ANSWER": "yes",
                                           "FLAG": "true", "OFF": "false", "AT": "12:30"}


def test_a_number_written_differently_is_a_different_revision():
    def revision(version: str) -> str:
        return parse(f"job: a\nparameters: {{VERSION: {version}}}\n", name="t", path="t.yaml").revision
    assert revision("1.10") != revision("1.1")
    assert revision("1.10") == revision("'1.10'")  # what Jenkins is sent is the same


def test_numbers_outside_parameters_are_still_numbers():
    assert parse("job: a\nrun: 0x2\n", name="t", path="t.yaml").run == 2


def test_missing_job_and_bad_job_paths():
    with pytest.raises(SpecError, match=r"t\.yaml:1:1: missing required key 'job'"):
        parse("cause: x\n", name="t", path="t.yaml")
    with pytest.raises(SpecError, match="empty segment"):
        parse("job: a//b\n", name="t", path="t.yaml")


@pytest.mark.parametrize(("path", "name"), [
    ("deploy.yaml", "deploy"),
    ("team/deploy.yml", "team/deploy"),
    (".hidden.yaml", None),
    ("team/.git/x.yaml", None),
    ("reconciler.yaml", None),
    ("team/reconciler.yaml", "team/reconciler"),
    ("notes.txt", None),
])
def test_trigger_names_come_from_paths(path, name):
    assert trigger_name(path) == name


def test_the_json_schema_forbids_unknown_keys_and_requires_job():
    schema = json_schema()
    assert schema["required"] == ["job"]
    assert schema["additionalProperties"] is False
    assert {"job", "parameters", "server", "cause", "run", "suspend"} <= set(schema["properties"])


def test_parsing_keeps_nothing_behind():
    """A daemon re-parses specs for months: a parse must leave no memory behind once its Spec is dropped."""
    def parse_many(n: int) -> None:
        for i in range(n):
            parse(f"job: deploy\nparameters: {{N: '{i}'}}\n", name=f"t{i}", path=f"t{i}.yaml")

    def held() -> int:  # by the parsing code only: a thread left over from another test may allocate too
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, pattern) for pattern in ("*ruamel*", "*pydantic*", "*reconciler/spec.py")])
        return sum(stat.size for stat in snapshot.statistics("filename"))

    parse_many(100)  # warm caches
    tracemalloc.start()
    before = held()
    parse_many(5000)
    grown = held() - before
    tracemalloc.stop()
    assert grown < 50_000, f"{grown} bytes retained by 5000 parses"


@pytest.mark.parametrize("job", ["..", "team/../other", "./deploy", "team/."])
def test_a_job_path_reaches_only_the_job_it_names(job):
    with pytest.raises(SpecError, match=r"`\.` or `\.\.` segment"):
        parse(f"job: '{job}'\n", name="t", path="t.yaml")


@pytest.mark.parametrize("text", ["job: a\nparameters: {delay: 0sec}\n", "job: a\nparameters: {json: x}\n",
                                  "job: a\nrun_id_parameter: token\n",
                                  "job: a\nschedule: '@daily'\nscheduled_time_parameter: cause\n",
                                  "job: a\nprovenance_parameters: {sha: token}\n"])
def test_parameters_named_like_jenkins_own_fields_are_refused(text):
    with pytest.raises(SpecError, match="Jenkins reads these fields itself"):
        parse(text, name="t", path="t.yaml")


def test_provenance_parameters_name_commit_fields_and_parameters_nothing_else_sets():
    spec = parse("job: a\nparameters: {ENV: prod}\nprovenance_parameters: {sha: GIT_COMMIT, author: BY}\n",
                 name="t", path="t.yaml")
    assert spec.provenance_parameters == (("sha", "GIT_COMMIT"), ("author", "BY"))
    with pytest.raises(SpecError) as unknown:
        parse("job: a\nprovenance_parameters:\n  sha: A\n  who: B\n", name="t", path="t.yaml")
    assert str(unknown.value) == ("t.yaml:4:3: provenance_parameters: 'who' is not a commit field; fields: sha, "
                                  "author, email, date, subject")
    with pytest.raises(SpecError, match=r"t.yaml:3:24: .*'ENV' would be given two values"):
        parse("job: a\nparameters: {ENV: x}\nprovenance_parameters: {author: ENV}\n", name="t", path="t.yaml")


def test_a_date_is_sent_as_written_and_yaml_that_costs_more_than_its_size_is_refused():
    assert parse("job: a\nparameters: {DAY: 2026-12-01}\n", name="t", path="t.yaml").parameters == \
        (("DAY", "2026-12-01"),)
    for text, message in [("job: &j a\n", "anchors and aliases"), ("job: !!str a\n", r"explicit YAML tags \(!!str\)"),
                          ("job: a\n<<: {run: 2}\n", "merge keys")]:
        with pytest.raises(SpecError, match=message):
            parse(text, name="t", path="t.yaml")
    assert parse("job: a\ncause: '<< & * !'\n", name="t", path="t.yaml").cause == "<< & * !"  # in text, harmless


def test_an_unclosed_bracket_is_reported_where_it_opened():
    with pytest.raises(SpecError) as e:
        parse("job: plain\nparameters: {A: '1'\ncause: x\n", name="t", path="t.yaml")
    assert str(e.value) == "t.yaml:2:13: this { is never closed (did not find expected ',' or '}')"
