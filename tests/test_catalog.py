"""The catalog: spec files on disk, re-read only when they change."""

from __future__ import annotations

from reconciler.catalog import Catalog


def test_only_changed_files_are_reported_again(tmp_path):
    (tmp_path / "a.yaml").write_text("job: a\n")
    catalog = Catalog(tmp_path)
    assert [e.name for e in catalog.scan().changed] == ["a"]
    assert not catalog.scan()
    (tmp_path / "a.yaml").write_text("job: changed\n")
    assert [e.spec.job for e in catalog.scan().changed] == ["changed"]


def test_a_second_file_for_the_same_trigger_is_reported_once_per_change(tmp_path):
    (tmp_path / "a.yaml").write_text("job: a\n")
    (tmp_path / "a.yml").write_text("job: b\n")
    catalog = Catalog(tmp_path)
    [first, dup] = sorted(catalog.scan().changed, key=lambda e: e.path)
    assert first.spec.job == "a"
    assert str(dup.error) == "a.yml:1:1: trigger 'a' is already defined by a.yaml"
    assert not catalog.scan()
    (tmp_path / "a.yml").write_text("job: c\n")
    assert [e.path for e in catalog.scan().changed] == ["a.yml"]
