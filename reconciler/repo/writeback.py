"""History write-back: the daemon's own clone of the history repository, committed and pushed in batches.

The history files live in the clone's worktree; `History` appends to them under `lock`, and every git
step that reads or rewrites the worktree (add, commit, rebase) holds the same lock, so no line is
written while git moves files under it. The slow steps, fetch and push, run without it: firing never
waits on the network. One thread runs the loop: the first line after a push opens a batch, and
`interval` seconds later everything written by then becomes one commit, pushed at once. A push the
remote rejects because the branch moved (a person, another process) is fetched, rebased and pushed
again (after a random pause, to fall out of step with whoever keeps pushing); the history files
merge with git's `union` driver, set in the clone's own `info/attributes`, so two sides' appended
lines both stay. A remote that is down leaves commits waiting locally: nothing
else waits, `reconciler_history_unpushed_age_seconds` and /readyz say for how long, and the next push
carries them all.

Killed at any point, the next start finds the lines in the worktree or in local commits, ends what a
kill interrupted (a stale index lock, a rebase half done), and commits and pushes them: each line is
written once by the daemon, and git only carries it.

Credentials come from the operator: an SSH key with known hosts, or an HTTPS token passed to git as a
header through the environment (never in a URL, a command line or `.git/config`). git runs with no
global or system config, never prompts, and each call is bounded by `timeout`.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shlex
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from reconciler import logs
from reconciler.config import HistoryRemote
from reconciler.core.errors import HistoryGitError

SUMMARY_LINES = 30
"""Outcomes listed one per line in a commit message; the rest are counted."""
BACKOFF_MAX = 300.0
"""The longest wait between attempts to reach a remote that is down."""
PUSH_ATTEMPTS = 10
"""Pushes in one round before a branch that keeps moving waits for the next batch."""


class BranchMoving(HistoryGitError):
    """Every push of a round lost the race to someone else's."""


class Writeback:
    def __init__(self, remote: HistoryRemote, *, clock: Callable[[], float] = time.time):
        self.remote = remote
        self.clone = Path(remote.clone)
        self.clock = clock
        self.lock = threading.Lock()
        """Held while a history line is appended, and while git reads or rewrites the worktree."""
        self.log = logs.get(repository=remote.repository, branch=remote.branch)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._oldest: float | None = None
        """When the oldest line not yet in a commit was written (None: every line is committed)."""
        self._unpushed_since: float | None = None
        """When the oldest line in a commit not yet pushed was written."""
        self.last_error: str | None = None
        self._env = self._environment()
        self._thread: threading.Thread | None = None
        logs.add_secrets(remote.secrets)

    @property
    def history_dir(self) -> Path:
        return self.remote.history_dir

    # -- what History and the daemon call ---------------------------------------------------
    def written(self, at: float) -> None:
        """A line was appended (called under `lock`): a batch opens if none is open."""
        if self._oldest is None:
            self._oldest = at
            self._wake.set()

    def unpushed_age(self) -> float:
        """Seconds since the oldest line that is not yet on the remote was written; 0 when none is."""
        oldest = [t for t in (self._oldest, self._unpushed_since) if t is not None]
        return max(0.0, self.clock() - min(oldest)) if oldest else 0.0

    def notes(self) -> list[str]:
        """What /readyz says beside `ok`: git being down never makes the daemon unready."""
        age = self.unpushed_age()
        if not age:
            return []
        why = f" (last error: {self.last_error})" if self.last_error else ""
        return [f"history: the oldest line not yet pushed to {self.remote.repository} "
                f"({self.remote.branch}) was written {age:.0f}s ago{why}"]

    def start(self, spawn: Callable[[str, Callable[[], None]], threading.Thread]) -> None:
        """Run the commit-and-push loop on a thread `spawn` starts (the daemon's supervisor)."""
        self._thread = spawn("history-git", self._run)

    def close(self, timeout: float = 15.0) -> None:
        """Stop after one last push of whatever is written (bounded: a remote that is down keeps it)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        elif (self.clone / ".git").is_dir():  # `run --once`: no loop ran, push here
            try:
                self.sync()
            except HistoryGitError as e:
                self.log.error("history_push_failed", error=str(e), unpushed_for=round(self.unpushed_age(), 1))

    # -- the clone --------------------------------------------------------------------------
    def prepare(self) -> None:
        """Make the clone ready: create it if new, finish what a kill interrupted, take in the remote
        branch. Raises HistoryGitError when the remote cannot be read: a caller with no other record
        (an empty state store) must not fire before it has the history."""
        fresh = not (self.clone / ".git").is_dir()
        if fresh:
            self.clone.mkdir(parents=True, exist_ok=True)
            self._git("init", "-q", "-b", self.remote.branch)
            self._git("remote", "add", "origin", self.remote.repository)
        else:
            self._recover()
        (self.clone / ".git" / "info").mkdir(exist_ok=True)
        (self.clone / ".git" / "info" / "attributes").write_text("*.jsonl merge=union\n")
        self._git("config", "remote.origin.url", self.remote.repository)  # the operator may have moved it
        with self.lock:
            self._commit()
            if self._ahead():
                self._unpushed_since = self.clock()  # written by an earlier process: at least this old
        self._fetch()
        with self.lock:
            self._integrate()

    def _recover(self) -> None:
        """A process killed mid-commit leaves `index.lock`; mid-rebase, a rebase in progress. No other
        process uses this clone, so both are ours to clear."""
        git_dir = self.clone / ".git"
        (git_dir / "index.lock").unlink(missing_ok=True)
        if (git_dir / "rebase-merge").exists() or (git_dir / "rebase-apply").exists():
            self._git("rebase", "--abort", check=False)
            self.log.warning("history_rebase_abandoned", note="a rebase interrupted by a stop was undone")

    # -- the loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        delay = self.remote.interval
        while True:
            self._wake.wait()
            if not self._stopping.is_set():
                self._stopping.wait(delay)  # lines written meanwhile join this batch
            self._wake.clear()
            try:
                self.sync()
            except HistoryGitError as e:
                self.last_error = str(e)
                # A busy branch is tried again at the next batch; a remote that fails, less and less often.
                delay = self.remote.interval if isinstance(e, BranchMoving) else \
                    min(max(delay, self.remote.interval) * 2, BACKOFF_MAX)
                self.log.error("history_push_failed", error=str(e), retry_in=round(delay, 1),
                               unpushed_for=round(self.unpushed_age(), 1))
                self._wake.set()
            else:
                self.last_error = None
                delay = self.remote.interval
            if self._stopping.is_set():
                return

    def sync(self) -> None:
        """Commit what is written, and push it; a branch that moved is fetched and rebased onto first."""
        with self.lock:
            committed = self._commit()
        for attempt in range(1, PUSH_ATTEMPTS + 1):
            if not committed and not self._ahead():
                return
            rejected = self._push()
            if not rejected:
                self._unpushed_since = None
                self.log.info("history_pushed", attempts=attempt)
                return
            self.log.info("history_push_rejected", reason="the branch moved; fetching and rebasing",
                          attempts=attempt)
            self._stopping.wait(random.uniform(0, 0.1 * attempt))  # out of step with whoever keeps pushing
            self._fetch()
            with self.lock:
                self._commit()
                self._integrate()
        raise BranchMoving(f"the branch kept moving: {PUSH_ATTEMPTS} pushes in a row were rejected")

    def _commit(self) -> bool:
        """Everything written under the history path as one commit (under `lock`)."""
        oldest, self._oldest = self._oldest, None
        self.history_dir.mkdir(parents=True, exist_ok=True)  # git refuses to add a path that is not there
        self._git("add", "-A", "--", self.remote.path)
        if self._git("diff", "--cached", "--quiet", check=False).returncode == 0:
            return False
        added = self._git("diff", "--cached", "--no-color", "--unified=0", "--", self.remote.path).stdout
        self._git("commit", "-q", "--no-verify", "-F", "-", stdin=summary(added))
        if self._unpushed_since is None:
            self._unpushed_since = oldest if oldest is not None else self.clock()
        return True

    def _ahead(self) -> bool:
        """Whether HEAD has commits the remote branch (as last fetched) does not."""
        if not self._has("HEAD"):
            return False
        if not self._has(f"refs/remotes/origin/{self.remote.branch}"):
            return True
        out = self._git("rev-list", "--count", f"refs/remotes/origin/{self.remote.branch}..HEAD").stdout
        return int(out.strip() or 0) > 0

    def _fetch(self) -> None:
        ref = f"refs/heads/{self.remote.branch}"
        result = self._git("fetch", "-q", "--no-tags", "origin", f"+{ref}:refs/remotes/origin/{self.remote.branch}",
                           check=False, network=True)
        if result.returncode != 0 and "couldn't find remote ref" not in result.stderr:  # a new branch is fine
            raise HistoryGitError(f"cannot fetch {ref} from {self.remote.repository}: "
                                  f"{_git_said(result.stderr)}")

    def _integrate(self) -> None:
        """Put the local commits on top of the remote branch (under `lock`, after `_commit`)."""
        upstream = f"refs/remotes/origin/{self.remote.branch}"
        if not self._has(upstream):
            return
        if not self._has("HEAD"):  # a new clone with nothing of its own: take the branch as it is
            self._git("reset", "-q", "--hard", upstream)
            return
        if self._git("merge-base", "--is-ancestor", upstream, "HEAD", check=False).returncode == 0:
            return
        result = self._git("rebase", "-q", upstream, check=False)
        if result.returncode != 0:
            self._git("rebase", "--abort", check=False)
            raise HistoryGitError(f"cannot rebase the history onto {self.remote.branch}: "
                                  f"{_git_said(result.stderr or result.stdout)}")

    def _push(self) -> bool:
        """Push HEAD; True if the remote rejected it because the branch moved."""
        result = self._git("push", "-q", "--porcelain", "origin", f"HEAD:refs/heads/{self.remote.branch}",
                           check=False, network=True)
        if result.returncode == 0:
            return False
        if "[rejected]" in result.stdout or "non-fast-forward" in result.stderr or "fetch first" in result.stderr:
            return True
        raise HistoryGitError(f"cannot push to {self.remote.repository}: "
                              f"{_git_said(result.stderr or result.stdout)}")

    def _has(self, ref: str) -> bool:
        return self._git("rev-parse", "-q", "--verify", f"{ref}^{{commit}}", check=False).returncode == 0

    # -- running git ------------------------------------------------------------------------
    def _environment(self) -> dict[str, str]:
        """git's environment, the same for every call: built once."""
        remote = self.remote
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.clone), "LC_ALL": "C",
               "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0",
               "GIT_AUTHOR_NAME": remote.author_name, "GIT_AUTHOR_EMAIL": remote.author_email,
               "GIT_COMMITTER_NAME": remote.author_name, "GIT_COMMITTER_EMAIL": remote.author_email}
        config = [("core.hooksPath", os.devnull), ("gc.auto", "0"), ("maintenance.auto", "false")]
        if remote.token:
            basic = base64.b64encode(f"{remote.token_user}:{remote.token}".encode()).decode()
            config.append(("http.extraHeader", f"Authorization: Basic {basic}"))
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for i, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
        ssh = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(remote.timeout)}"]
        if remote.ssh_key:
            ssh += ["-i", remote.ssh_key, "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
                    "-o", f"UserKnownHostsFile={remote.known_hosts}"]
        env["GIT_SSH_COMMAND"] = shlex.join(ssh)
        return env

    def _git(self, *args: str, check: bool = True, stdin: str | None = None,
             network: bool = False) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(["git", "-C", str(self.clone), *args], input=stdin, capture_output=True,
                                    text=True, encoding="utf-8", errors="replace", env=self._env,
                                    timeout=self.remote.timeout, stdin=None if stdin is not None else
                                    subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise HistoryGitError(f"git {args[0]} took longer than {self.remote.timeout:.0f}s"
                                  + (f" (is {self.remote.repository} reachable?)" if network else "")
                                  ) from None
        except OSError as e:
            raise HistoryGitError(f"cannot run git: {e.strerror}") from None
        result.stdout, result.stderr = logs.redact(result.stdout), logs.redact(result.stderr)
        if check and result.returncode != 0:
            raise HistoryGitError(f"git {args[0]} failed in {self.clone}: {_git_said(result.stderr)}")
        return result


def summary(diff: str) -> str:
    """A commit message from the lines a commit adds: counts of outcomes first, then one line each."""
    events = []
    for line in diff.splitlines():
        if not line.startswith("+") or line.startswith("+++"):
            continue
        try:
            record = json.loads(line[1:])
        except ValueError:
            continue
        if isinstance(record, dict):
            events.append(record)
    outcomes = Counter(_outcome(e) for e in events)
    head = ", ".join(f"{n} {what}" for what, n in sorted(outcomes.items(), key=lambda kv: (-kv[1], kv[0])))
    triggers = len({e.get("trigger") for e in events})
    lines = [f"history: {head or 'no events'} ({triggers} trigger{'s' if triggers != 1 else ''})", ""]
    listed = [e for e in events if e.get("event") != "queued"]
    for e in listed[:SUMMARY_LINES]:
        number = f" #{e['number']}" if e.get("number") is not None else ""
        lines.append(f"{e.get('trigger')}: {_outcome(e)}{number} ({e.get('fire_key')}, run {e.get('run_id')})")
    if len(listed) > SUMMARY_LINES:
        lines.append(f"... and {len(listed) - SUMMARY_LINES} more")
    return logs.redact("\n".join(lines) + "\n")


def _outcome(event: dict[str, object]) -> str:
    kind = str(event.get("event"))
    return f"{kind} {event['result']}" if kind == "completed" and event.get("result") else kind


_GIT_BOILERPLATE = ("Please make sure you have the correct access rights", "and the repository exists.")


def _git_said(text: str) -> str:
    """What git (and ssh under it) said, without the hint git adds to every failed connection: the
    cause is in the lines before it ("Host key verification failed.", "Permission denied")."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip() and
             not line.strip().startswith(_GIT_BOILERPLATE)]
    return "; ".join(lines[-3:]) if lines else "no message"
