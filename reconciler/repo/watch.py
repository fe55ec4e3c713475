"""Which paths under the triggers directory changed, said as soon as the kernel says so.

git-sync publishes each checkout by renaming a new symlink over the old one, so a watch on the old
target would go quiet. The watcher watches the folder each link on the way to the triggers lies in,
and looks twice a second at where the triggers resolve to as well; on a swap it rescans and watches
the new target.

Each real folder is watched on its own, never the tree recursively: a recursive watch follows
symlinks, and a committed `ln -s / loop` would have it walk the whole filesystem. When a folder
appears or goes, the watch starts again over the new set of folders. A file changed after a scan
but before its watch was in place would go unseen until the next resync, so each time the watches
are in place the directory is scanned again.

On Linux the watcher sleeps in poll() on an inotify descriptor (inotify_simple) and on a pipe that
`close` writes to: an idle daemon is woken by a change, by its half-second look, and by nothing
else, and a change is passed on the moment it is read. Where there is no inotify, watchfiles stands
in; it looks for changes every WATCH_STEP_MS, holding the GIL to do so, and answers a step or two
after a change.
"""

from __future__ import annotations

import errno
import os
import select
import sys
import threading
from collections.abc import Callable, Iterable, Iterator

from reconciler import logs
from reconciler.repo.catalog import folders

try:
    from inotify_simple import INotify
    from inotify_simple import flags as _in
except ImportError:  # not Linux: watchfiles
    INotify = None  # type: ignore[assignment,misc]

LOOK_MS = 500
"""How often the watcher looks where the triggers resolve to, whatever the kernel said."""
WATCH_STEP_MS = 20
"""watchfiles only: how often it looks for changes, the floor of its change → POST latency."""
RETRY_MAX = 30.0
"""The longest wait before watching again after the watch itself failed (the kernel's watch limit)."""

if INotify is not None:
    _FOLDER_EVENTS = (_in.CREATE | _in.CLOSE_WRITE | _in.MOVED_FROM | _in.MOVED_TO | _in.DELETE | _in.ATTRIB
                      | _in.DELETE_SELF | _in.MOVE_SELF | _in.ONLYDIR | _in.DONT_FOLLOW | _in.EXCL_UNLINK)
    """A file closed after writing, not each write: a spec is read once it is whole."""
    _LINK_EVENTS = _in.CREATE | _in.MOVED_TO | _in.DELETE | _in.MOVED_FROM | _in.ONLYDIR | _in.EXCL_UNLINK


class Watcher:
    """Tells `notify` the paths that changed; the triggers directory's own path means "rescan it all"."""

    def __init__(self, root: str, notify: Callable[[Iterable[str]], None], *, backend: str | None = None):
        self.root = root
        self.notify = notify
        self.backend = backend or ("inotify" if INotify is not None and sys.platform == "linux" else "watchfiles")
        self.log = logs.get()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._wake: int | None = None
        """The end of the pipe that wakes `run` from poll() that `close` writes to, open while `run` runs."""
        self.failure: str | None = None
        """Why the folders are not watched, while they are not: changes are then seen at each rescan."""

    def notes(self) -> list[str]:
        """What /readyz says beside `ok`: the daemon still fires, at each rescan, while it cannot watch."""
        return [] if self.failure is None else [f"not watching the triggers ({self.failure})"]

    def close(self) -> None:
        """Ends `run` at once, from any thread."""
        with self._lock:
            self._closed.set()
            if self._wake is not None:
                os.write(self._wake, b"x")

    def run(self) -> None:
        retry = 0.5
        with self._lock:
            if self._closed.is_set():
                return
            woken, self._wake = os.pipe()
        try:
            missing = False
            while not self._closed.is_set():
                if not os.path.isdir(self.root):  # said once, not every second, until it is back
                    if not missing:
                        self.log.warning("triggers_missing", path=self.root)
                    missing = True
                    self.failure = "the triggers directory is missing"
                    self._closed.wait(1.0)
                    continue
                missing = False
                try:
                    self._watch_once(os.path.realpath(self.root), woken)
                    retry = 0.5
                except (OSError, RuntimeError) as e:  # the directory vanished, or the kernel's watch limit
                    self.failure = _why(e)
                    self.log.warning("watch_restarted", error=self.failure, retry_in=retry)
                    self.notify([self.root])
                    self._closed.wait(retry)
                    retry = min(retry * 2, RETRY_MAX)
        finally:
            with self._lock:
                os.close(self._wake)
                self._wake = None
            os.close(woken)

    def _watch_once(self, target: str, woken: int) -> None:
        """Watch `target`'s folders until they or the target change."""
        watched = set(folders(target))
        batches = self._kernel(watched, woken) if self.backend == "inotify" else self._polled(watched)
        first = True
        for batch in batches:
            if first:  # the watches are in place
                first = False
                self.failure = None
                self.notify([self.root])
            if batch:
                self.notify(batch)
                if any(_folder_moved(path, watched) for path in batch):
                    return  # watch the new set of folders
            if os.path.realpath(self.root) != target:
                self.log.info("triggers_moved", path=self.root, target=os.path.realpath(self.root))
                self.notify([self.root])
                return

    def _kernel(self, watched: set[str], woken: int) -> Iterator[set[str]]:
        """inotify: one empty batch once the watches are in place, then each read's paths; an empty
        batch after LOOK_MS without a change. A link's swap wakes it with the triggers' own path."""
        with INotify() as inotify:
            folder_of: dict[int, str] = {}
            for folder in sorted(watched):
                try:
                    folder_of[inotify.add_watch(folder, _FOLDER_EVENTS)] = folder
                except (FileNotFoundError, NotADirectoryError):
                    yield {folder}  # gone since the walk: the set of folders changed
                    return
            links: dict[int, set[str]] = {}
            for link in _links_on_the_way(self.root):
                wd = inotify.add_watch(os.path.dirname(link), _LINK_EVENTS | _in.MASK_ADD)
                links.setdefault(wd, set()).add(os.path.basename(link))
            poller = select.poll()
            poller.register(inotify.fileno(), select.POLLIN)
            poller.register(woken, select.POLLIN)
            yield set()
            while not self._closed.is_set():
                if not poller.poll(LOOK_MS):
                    yield set()
                    continue
                batch: set[str] = set()
                for event in inotify.read(timeout=0):
                    if event.mask & _in.Q_OVERFLOW:
                        batch.add(self.root)  # events were lost: rescan
                        continue
                    if event.name in links.get(event.wd, ()):
                        batch.add(self.root)
                    if event.wd in folder_of:
                        folder = folder_of[event.wd]
                        batch.add(os.path.join(folder, event.name) if event.name else folder)
                if batch:
                    yield batch

    def _polled(self, watched: set[str]) -> Iterator[set[str]]:
        """watchfiles: its first answer comes once its watches are in place."""
        import watchfiles

        yield from ({path for _, path in batch} for batch in watchfiles.watch(
            *sorted(watched), watch_filter=None, debounce=500, step=WATCH_STEP_MS, stop_event=self._closed,
            rust_timeout=LOOK_MS, yield_on_timeout=True, raise_interrupt=False, recursive=False))


def _why(e: BaseException) -> str:
    """The kernel's limits, by the setting that raises them: its own words name neither."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return ("the kernel's limit on inotify watches is reached (one a folder): raise fs.inotify.max_user_watches, "
                "or give fewer folders; until then changes are seen at each rescan")
    if isinstance(e, OSError) and e.errno == errno.EMFILE:
        return ("the kernel's limit on inotify instances is reached: raise fs.inotify.max_user_instances; until then "
                "changes are seen at each rescan")
    return str(e)


def _links_on_the_way(path: str) -> list[str]:
    """The symlinks among `path` and the folders above it: git-sync's link is one of them."""
    out = []
    path = os.path.abspath(path)
    while True:
        if os.path.islink(path):
            out.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            return out
        path = parent


def _folder_moved(path: str, watched: set[str]) -> bool:
    """A watched folder that went, or a real folder that came: the set of folders to watch changed."""
    is_folder = os.path.isdir(path) and not os.path.islink(path)
    return (path in watched) != is_folder and not os.path.basename(path).startswith(".")

