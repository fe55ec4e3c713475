"""The catalog: spec files on disk, re-read only when they change."""

from __future__ import annotations

import os

from reconciler.repo.catalog import Catalog


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


def test_a_tree_swapped_in_with_the_same_bytes_is_no_change_but_what_differs_in_it_is(tmp_path):
    """What git-sync does on every commit: a new worktree, every file created anew, and a symlink
    renamed over the old one."""
    def worktree(name: str, deploy_version: str) -> None:
        (tmp_path / name / "team").mkdir(parents=True)
        (tmp_path / name / "team" / "deploy.yaml").write_text(f"job: deploy\nparameters: {{V: '{deploy_version}'}}\n")
        (tmp_path / name / "cleanup.yaml").write_text("job: cleanup\n")
        (tmp_path / name / "broken.yaml").write_text("job: [\n")

    worktree("rev1", "1")
    (tmp_path / "current").symlink_to(tmp_path / "rev1")
    catalog = Catalog(tmp_path / "current")
    assert sorted(e.name for e in catalog.scan().changed) == ["broken", "cleanup", "team/deploy"]
    cleanup = catalog.specs["cleanup"]

    worktree("rev2", "2")
    (tmp_path / "next").symlink_to(tmp_path / "rev2")
    (tmp_path / "next").rename(tmp_path / "current")
    changes = catalog.scan()
    assert [(e.name, e.spec.parameters) for e in changes.changed] == [("team/deploy", (("V", "2"),))]
    assert catalog.specs["cleanup"] is cleanup and "broken" in catalog.errors
    assert not catalog.scan()  # the new files' stamps were taken: they are not read again either


def test_a_watcher_event_through_a_linked_folder_is_not_a_trigger(tmp_path):
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "a.yaml").write_text("job: a\n")
    (tmp_path / "alias").symlink_to("team")
    catalog = Catalog(tmp_path)
    catalog.scan()
    assert set(catalog.specs) == {"team/a"}
    assert not catalog.refresh([str(tmp_path / "alias" / "a.yaml")])
    assert set(catalog.specs) == {"team/a"} and "alias" in catalog.errors


def test_an_unreadable_folder_is_refused_on_its_own(tmp_path):
    (tmp_path / "ok.yaml").write_text("job: a\n")
    (tmp_path / "sealed").mkdir()
    (tmp_path / "sealed" / "b.yaml").write_text("job: b\n")
    (tmp_path / "sealed").chmod(0)
    try:
        catalog = Catalog(tmp_path)
        catalog.scan()
        if os.access(tmp_path / "sealed", os.R_OK):  # root reads anything: nothing to refuse
            assert set(catalog.specs) == {"ok", "sealed/b"}
        else:
            assert set(catalog.specs) == {"ok"}
            assert str(catalog.errors["sealed"]) == "sealed:1:1: cannot read this folder: Permission denied"
    finally:
        (tmp_path / "sealed").chmod(0o755)
