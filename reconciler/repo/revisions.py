"""The triggers repository at a git revision, through the git command line, as the catalog reads it.

A revision's tree is extracted (`git archive`) into a scratch folder and scanned there, so that a
spec at a revision is judged by exactly the rules the daemon applies to a checkout (links, names,
the config file, sizes); tar members that would land outside the folder are not extracted, as the
walk would not follow them anyway.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from reconciler.core.errors import ReconcilerError
from reconciler.repo.catalog import Catalog
from reconciler.repo.history import History


class RevisionError(ReconcilerError):
    """A revision or repository git cannot read; the message has git's own words."""


@dataclass(frozen=True)
class Repository:
    """The git work tree the triggers directory is in, and where that directory and the history lie in it."""

    top: Path
    triggers: str
    """The triggers directory, relative to `top` (`""` when it is the top)."""
    history: str | None
    """The history directory relative to `top`, if it lies inside the repository."""

    @classmethod
    def of(cls, triggers: Path, history: Path | None) -> Repository:
        top = Path(_git(triggers, "rev-parse", "--show-toplevel").decode().strip())
        real_top = os.path.realpath(top)
        history_rel = None
        if history is not None:
            real = os.path.realpath(history)
            if real == real_top or real.startswith(real_top + os.sep):
                history_rel = os.path.relpath(real, real_top)
        rel = os.path.relpath(os.path.realpath(triggers), real_top)
        return cls(top, "" if rel == "." else rel, history_rel)

    def commit(self, rev: str) -> str:
        try:
            return _git(self.top, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").decode().strip()
        except RevisionError:
            raise RevisionError(f"no git revision {rev!r} in {self.top} (a branch, tag or commit; "
                                "fetch it first if it is remote)") from None

    @contextlib.contextmanager
    def checkout(self, rev: str) -> Iterator[tuple[Catalog, History]]:
        """The revision's specs, scanned, and its history (empty where the history is not in git)."""
        sha = self.commit(rev)
        with tempfile.TemporaryDirectory(prefix="reconciler-rev-") as scratch:
            for path in {self.triggers or ".", *([self.history] if self.history else [])}:
                _extract(_git(self.top, "archive", "--format=tar", sha, "--", path, missing_ok=True), Path(scratch))
            catalog = Catalog(Path(scratch) / self.triggers)
            catalog.scan()
            history = History(Path(scratch) / self.history if self.history else None)
            yield catalog, history


def _git(cwd: Path, *args: str, missing_ok: bool = False) -> bytes:
    """Run git; its error, in its words, if it fails. `missing_ok`: a pathspec absent at that revision
    (a triggers folder not yet created) reads as nothing, not as an error."""
    result = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, timeout=120)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        if missing_ok and any("did not match any files" in line for line in message):
            return _empty_tar()
        raise RevisionError(f"git {' '.join(args[:2])}: {message[-1] if message else 'failed'}")
    return result.stdout


def _empty_tar() -> bytes:
    buffer = io.BytesIO()
    tarfile.open(fileobj=buffer, mode="w").close()
    return buffer.getvalue()


def _extract(archive: bytes, into: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar:
            with contextlib.suppress(tarfile.FilterError):  # a link out of the tree: refused, like the walk does
                tar.extract(member, into, filter="data")
