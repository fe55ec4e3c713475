"""Hostile YAML, generated: whatever a committer writes, the answer is a spec or a positioned error.

The texts are stitched from YAML's sharp edges (anchors, aliases, tags, merge keys, directives, flow
brackets, tabs, block scalars, huge numbers, odd Unicode) and the keys a spec has, so that most of
them get deep into the parser and the schema instead of failing on the first byte.
"""

from __future__ import annotations

import json
import re
import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.core.errors import SpecError
from reconciler.core.spec import KNOWN_KEYS, Spec, parse
from reconciler.repo.catalog import check_file

FRAGMENTS = [
    *(f"{key}: " for key in KNOWN_KEYS), "job: plain\n", "parameters:\n  ", "\n", "  ", "\t", "- ", "? ", ": ",
    "{", "}", "[", "]", ",", "&a ", "*a", "&b [*a, *a, *a]", "<<: ", "<<: *a", "!!int ", "!!bool ", "!!float ",
    "!!timestamp ", "!!binary ", "!!python/object:os.system ", "!custom ", "! ", "%YAML 1.1\n", "%TAG ! x\n",
    "---\n", "...\n", "|\n  ", ">-\n  ", "# c\n", "'", '"', "\\", "\\ud800", "0x", "0o", "1e999", "-.inf",
    ".nan", "9" * 80, "2001-13-45", "2026-12-01T00:00:00Z", "99999999999999999999999h", "H(70-80) * * * *",
    "@daily", "Europe/Berlin", "../", "token", "cause", "~", "null", "yes", "\u2028", "\ufeff", "\x85", "é",
    "\x00", "\x07", "\x1b[2J", "\x1b]52;c;ZXZpbA==\x07", "\x9b", "\x85", "\x7f", "\u202e", "\r",
]

hostile = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=40).map("".join)


@settings(max_examples=600, deadline=None)
@given(hostile)
def test_any_text_parses_to_a_spec_or_an_error_with_a_position(text):
    try:
        assert isinstance(parse(text, name="x", path="x.yaml"), Spec)
    except SpecError as e:
        assert e.problems and str(e).startswith("x.yaml:")
        assert all(p.line >= 1 and p.column >= 1 and p.message.strip() for p in e.problems)
        assert all(re.match(r"x\.yaml:\d+:\d+: ", line) for line in str(e).split("\n"))  # every line positioned


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | hostile.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_validate_judges_any_bytes_as_a_spec_or_an_error(tmp_path, raw):
    path = tmp_path / "x.yaml"
    path.write_bytes(raw)
    judged = check_file(str(path), str(tmp_path))
    assert isinstance(judged, Spec) or all(p.line >= 1 and p.message for p in judged.problems)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(hostile, min_size=1, max_size=8))
def test_a_daemon_pass_over_hostile_files_never_fails_and_the_valid_sibling_fires_once(harness, texts):
    daemon = harness.__dict__.setdefault("fuzzed", None) or harness.build()
    harness.fuzzed = daemon
    shutil.rmtree(harness.triggers, ignore_errors=True)
    harness.triggers.mkdir()
    harness.write("sibling", "job: plain\n")
    for i, text in enumerate(texts):
        harness.write(f"hostile-{i}", text)
    daemon.pass_once()  # raises nothing: every file is a spec or an invalid one
    assert {"sibling", *(f"hostile-{i}" for i in range(len(texts)))} == \
        set(daemon.catalog.specs) | set(daemon.catalog.errors)
    assert daemon.executor.wait_idle(timeout=15, posted_only=True)
    [run] = harness.runs("sibling")  # one revision, one fire, however many passes saw it
    assert run.status in ("queued", "building", "completed")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                        max_size=4), max_leaves=12)
LINE_KEYS = ["at", "event", "trigger", "run_id", "fire_key", "server", "job", "parameters", "cause", "number",
             "result", "url", "provenance", "causes", "ran_with", "scheduled_for"]
history_line = st.one_of(
    st.dictionaries(st.sampled_from(LINE_KEYS), json_values | st.sampled_from(["decided", "queued", "x", "@2026"]),
                    max_size=10).map(json.dumps),
    json_values.map(json.dumps), st.text(max_size=40),
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(history_line, max_size=12))
def test_any_history_line_is_a_valid_event_or_a_reported_skip(tmp_path, lines):
    from reconciler.repo.history import History

    (tmp_path / "t.jsonl").write_text("".join(line.replace("\n", " ") + "\n" for line in lines))
    history = History(tmp_path)
    runs = list(history.runs())  # raises nothing
    assert all(run.trigger == "t" for run in runs)
    assert all(re.match(rf"{re.escape(str(tmp_path))}/t\.jsonl:\d+: ", p) for p in history.problems)
