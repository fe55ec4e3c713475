"""Hostile YAML, generated: whatever a committer writes, the answer is a spec or a positioned error.

The texts are stitched from YAML's sharp edges (anchors, aliases, tags, merge keys, directives, flow
brackets, tabs, block scalars, huge numbers, odd Unicode) and the keys a spec has, so that most of
them get deep into the parser and the schema instead of failing on the first byte.
"""

from __future__ import annotations

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
    "\x00", "\x07",
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
