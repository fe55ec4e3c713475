"""Who asked for a fire: the commit behind a spec, from the triggers checkout's own git metadata.

One `git log` walk answers a whole pass (not one git call per fire), newest commits first, and
stops as soon as every spec asked about has its commit. The commit named is the last one that
touched the spec's file, which is the one that introduced its current revision unless a later
commit changed only comments or layout. The checkout often belongs to another user (git-sync's
worktree), which git refuses to read unless told it is safe: we tell it, on these read-only calls
only, and keep git from running anything the repository's config names (fsmonitor). That config is
git-sync's, the operator's: a commit cannot change it.
Without git (a plain folder, no git binary), nothing is found and nothing else changes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Collection
from pathlib import Path

from reconciler.core.runs import Provenance

_FIELDS = "%x1e%H%x1f%an%x1f%ae%x1f%aI%x1f%s"
"""One record per commit: a record separator, then sha, author, email, date and subject by unit separators."""


def lookup(triggers: Path, paths: Collection[str]) -> dict[str, Provenance]:
    """The newest commit that touched each of `paths` (relative to `triggers`), where git knows one."""
    wanted = set(paths)
    if not wanted:
        return {}
    found: dict[str, Provenance] = {}
    try:
        command = ["git", "-C", str(triggers), "-c", "safe.directory=*", "-c", "core.fsmonitor=false", "log",
                   f"--format={_FIELDS}", "--name-only", "--relative", "--no-renames", "--", "."]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              encoding="utf-8", errors="replace") as proc:
            assert proc.stdout is not None
            current: Provenance | None = None
            for line in proc.stdout:
                line = line.rstrip("\n")
                if line.startswith("\x1e"):
                    sha, author, email, date, subject = (line[1:].split("\x1f") + [""] * 5)[:5]
                    current = Provenance(sha, author, email, date, subject)
                elif line and current is not None and line in wanted and line not in found:
                    found[line] = current
                    if len(found) == len(wanted):
                        proc.kill()  # the rest of the history is not needed
                        break
    except (OSError, subprocess.SubprocessError):
        return found
    return found
