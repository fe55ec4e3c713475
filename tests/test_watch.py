"""The watcher tells which paths changed, through folders, links and swaps, on either backend."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import pytest

from reconciler import logs
from reconciler.repo.watch import INotify, Watcher
from tests.conftest import LogBuffer, wait_for

BACKENDS = [pytest.param("inotify", marks=pytest.mark.skipif(INotify is None, reason="inotify is Linux's")),
            "watchfiles"]


class Watching:
    """A watcher on its own thread, and everything it said."""

    def __init__(self, root: Path, backend: str):
        self.root = str(root)
        self.said: list[str] = []
        self._lock = threading.Lock()
        self.watcher = Watcher(self.root, self._notify, backend=backend)
        self.thread = threading.Thread(target=self.watcher.run, daemon=True)

    def _notify(self, paths) -> None:
        with self._lock:
            self.said.extend(paths)

    def rescans(self) -> int:
        with self._lock:
            return self.said.count(self.root)

    def heard(self, path: Path | str) -> bool:
        with self._lock:
            return os.path.realpath(path) in self.said

    def start(self) -> Watching:
        self.thread.start()
        wait_for(lambda: self.rescans() >= 1, what="the watches in place")
        return self

    def stop(self) -> None:
        self.watcher.close()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture(params=BACKENDS)
def watch(request, tmp_path):
    started: list[Watching] = []

    def start(root: Path) -> Watching:
        started.append(Watching(root, request.param).start())
        return started[-1]

    yield start
    for w in started:
        w.stop()


def write(path: Path, text: str = "job: plain\n") -> None:
    """As git does: a temporary file renamed over the target."""
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


def test_a_spec_written_or_removed_is_named_by_its_path(watch, tmp_path):
    write(tmp_path / "old.yaml")
    w = watch(tmp_path)
    write(tmp_path / "deploy.yaml")
    wait_for(lambda: w.heard(tmp_path / "deploy.yaml"), what="the new spec named")
    (tmp_path / "old.yaml").unlink()
    wait_for(lambda: w.heard(tmp_path / "old.yaml"), what="the removed spec named")


def test_a_spec_in_a_folder_that_appears_later_is_seen(watch, tmp_path):
    w = watch(tmp_path)
    (tmp_path / "team").mkdir()
    wait_for(lambda: w.rescans() >= 2, what="watching again over the new folder")
    write(tmp_path / "team" / "nightly.yaml")
    wait_for(lambda: w.heard(tmp_path / "team" / "nightly.yaml"), what="the spec in the new folder")


def test_a_folder_removed_and_made_again_is_watched_again(watch, tmp_path):
    (tmp_path / "team").mkdir()
    w = watch(tmp_path)
    (tmp_path / "team").rmdir()
    wait_for(lambda: w.rescans() >= 2, what="watching again without the folder")
    (tmp_path / "team").mkdir()
    wait_for(lambda: w.rescans() >= 3, what="watching again with it")
    write(tmp_path / "team" / "a.yaml")
    wait_for(lambda: w.heard(tmp_path / "team" / "a.yaml"), what="the spec in the folder made again")


def seen_after_a_while(w: Watching, folder: Path) -> bool:
    """Whether the watcher hears a change in `folder`, which it may not be watching yet: each look
    writes a spec there anew."""
    write(folder / "probe.yaml")
    return w.heard(folder / "probe.yaml")


def test_a_git_sync_swap_of_the_link_is_followed_to_the_new_checkout(watch, tmp_path):
    """git-sync renames a new link over the old one; what changes in the new checkout is then seen."""
    old, new = tmp_path / "wt-1", tmp_path / "wt-2"
    old.mkdir()
    new.mkdir()
    link = tmp_path / "triggers"
    link.symlink_to(old)
    w = watch(link)
    (tmp_path / "next").symlink_to(new)
    os.rename(tmp_path / "next", link)
    wait_for(lambda: seen_after_a_while(w, new), what="a change in the new checkout")
    assert w.rescans() >= 2  # the swap: the new checkout is scanned whole
    write(old / "stale.yaml")
    write(new / "later.yaml")
    wait_for(lambda: w.heard(new / "later.yaml"), what="the next spec in the new checkout")
    assert not w.heard(old / "stale.yaml")


def test_a_swap_of_a_link_above_the_triggers_folder_is_followed(watch, tmp_path):
    """The triggers may be a folder inside git-sync's checkout: the link is then above them."""
    for wt in ("wt-1", "wt-2"):
        (tmp_path / wt / "triggers").mkdir(parents=True)
    (tmp_path / "repo").symlink_to(tmp_path / "wt-1")
    w = watch(tmp_path / "repo" / "triggers")
    (tmp_path / "next").symlink_to(tmp_path / "wt-2")
    os.rename(tmp_path / "next", tmp_path / "repo")
    wait_for(lambda: seen_after_a_while(w, tmp_path / "wt-2" / "triggers"), what="a change in the new checkout")
    assert w.rescans() >= 2


def test_triggers_that_go_and_come_back_are_watched_again(watch, tmp_path):
    root = tmp_path / "triggers"
    root.mkdir()
    captured = LogBuffer()
    logs.configure("json", stream=captured)
    w = watch(root)
    root.rmdir()
    wait_for(lambda: w.watcher.notes() == ["not watching the triggers (the triggers directory is missing)"],
             what="/readyz's note")
    wait_for(lambda: w.rescans() >= 2, what="the watch given up")
    time.sleep(1.5)  # a look or two while they are gone
    assert len([e for e in captured.events() if e["event"] == "triggers_missing"]) == 1
    root.mkdir()
    wait_for(lambda: w.rescans() >= 3, what="watching the triggers again")
    write(root / "deploy.yaml")
    wait_for(lambda: w.heard(root / "deploy.yaml"), what="a spec in the triggers made again")
    assert w.watcher.notes() == []


@pytest.mark.skipif(INotify is None, reason="inotify is Linux's")
def test_a_closed_watcher_ends_and_leaves_no_descriptor_open(tmp_path):
    def watch_a_while() -> None:
        w = Watching(tmp_path, "inotify").start()
        (tmp_path / "team").mkdir()  # a second watch, after the first is closed
        wait_for(lambda: w.rescans() >= 2, what="watching again")
        (tmp_path / "team").rmdir()
        w.stop()

    watch_a_while()  # what the process opens once (its logging), opened
    before = sorted(os.listdir("/proc/self/fd"))
    watch_a_while()
    assert sorted(os.listdir("/proc/self/fd")) == before


def inotify_watches_in_use() -> int:
    used = 0
    for fdinfo in Path("/proc").glob("[0-9]*/fdinfo/*"):
        with contextlib.suppress(OSError):
            used += sum(line.startswith("inotify wd:") for line in fdinfo.read_text().splitlines())
    return used


@pytest.mark.serial  # the limit is the kernel's, for every process: a test running beside it would feel it
@pytest.mark.skipif(INotify is None or not os.access("/proc/sys/fs/inotify/max_user_watches", os.W_OK),
                    reason="needs inotify and root's right to lower the kernel's watch limit for a moment")
def test_the_kernels_watch_limit_is_named_by_the_setting_that_raises_it(tmp_path):
    for i in range(30):
        (tmp_path / f"team-{i}").mkdir()
    limit = Path("/proc/sys/fs/inotify/max_user_watches")
    before = limit.read_text()
    captured = LogBuffer()
    logs.configure("json", stream=captured)
    w = Watching(tmp_path, "inotify")
    try:
        limit.write_text(str(inotify_watches_in_use() + 10))
        w.thread.start()
        given_up = wait_for(lambda: [e for e in captured.events() if e["event"] == "watch_restarted"],
                            what="the watch given up")
        assert "fs.inotify.max_user_watches" in w.watcher.notes()[0]  # what /readyz says beside ok
    finally:
        limit.write_text(before)
    assert "raise fs.inotify.max_user_watches" in given_up[0]["error"]
    wait_for(lambda: seen_after_a_while(w, tmp_path / "team-29"), what="watching, once the limit is raised")
    assert w.watcher.notes() == []
    w.stop()


@pytest.mark.serial
@pytest.mark.skipif(INotify is None or not os.access("/proc/sys/fs/inotify/max_queued_events", os.W_OK),
                    reason="needs inotify and root's right to lower the kernel's queue length for a moment")
def test_events_the_kernel_could_not_queue_mean_a_rescan(tmp_path):
    queue = Path("/proc/sys/fs/inotify/max_queued_events")
    before = queue.read_text()
    w = Watching(tmp_path, "inotify")
    try:
        queue.write_text("16")  # read when the watcher makes its inotify instance
        w.start()
    finally:
        queue.write_text(before)
    with w._lock:  # the watcher stops at its next batch, and the kernel's queue fills
        for i in range(100):
            write(tmp_path / f"s{i}.yaml")
    wait_for(lambda: w.rescans() >= 2, what="a rescan for the events lost")
    w.stop()
