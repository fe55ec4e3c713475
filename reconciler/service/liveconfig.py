"""The operator's config, picked up live: read again every POLL seconds and on SIGHUP, secrets included.

A ConfigMap or a Secret changes by a symlink swap (`..data` renamed over), which a watch on the file
itself never sees, and a token may rotate in a file the config only names. Reading the config and its
secret files every few seconds sees all of it, for a few small reads. A config that cannot be used is
reported (once per problem: log, metric, /readyz) and the last good one stays in use.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

from reconciler import logs
from reconciler.config import Deliveries, Policy, Server
from reconciler.core.errors import ConfigError
from reconciler.metrics import Metrics

POLL = 2.0
"""Seconds between two readings of the config: a change is in use within this and a turn of the loop."""

Settings = tuple[dict[str, Server], Policy, Deliveries]
"""What the daemon takes from the config while it runs: the servers, the policy, and who hears of
each fire (`commit_status`, `notify`: their tokens rotate too)."""


class LiveConfig:
    def __init__(self, read: Callable[[], Settings], file: str | None, current: Settings, metrics: Metrics,
                 on_change: Callable[[], None], usable: Callable[[Settings], None] | None = None):
        self.read = read
        """Reads the config as it is now, or raises a ConfigError with positions."""
        self.usable = usable
        """Raises a ConfigError for a config that reads well but cannot be used (asked of a changed one)."""
        self.file = file
        self.current = current
        """The last config read that could be used."""
        self.problem: str | None = None
        """Why the config on disk is not used, while it is not."""
        self.metrics = metrics
        self.on_change = on_change
        self.log = logs.get()
        self._pending: Settings | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()

    def reload_soon(self, *_: object) -> None:
        """SIGHUP, or the daemon stopping: read (or stop) now. Safe from a signal handler."""
        self._wake.set()

    def wait(self, stop: threading.Event) -> bool:
        """Until the next reading is due; False once the daemon stops."""
        self._wake.wait(POLL)
        self._wake.clear()
        return not stop.is_set()

    def check(self) -> None:
        """Read the config once; a changed one waits for `take`, an unusable one is reported."""
        try:
            new = self.read()
            if new != self.current and self.usable is not None:
                self.usable(new)
        except ConfigError as e:
            problem = logs.redact(str(e))
            if problem != self.problem:
                self.log.error("config_invalid", file=self.file, errors=problem.splitlines(),
                               note="the last good config stays in use")
            self.problem = problem
            self.metrics.config_invalid.set(1)
            return
        if self.problem is not None:
            self.log.info("config_valid", file=self.file, note="the config on disk is in use again")
        self.problem = None
        self.metrics.config_invalid.set(0)
        if new != self.current:
            with self._lock:
                self._pending, self.current = new, new
            self.on_change()

    def take(self) -> Settings | None:
        """The changed config not yet taken up, if any (the loop's thread takes it)."""
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def notes(self) -> list[str]:
        """What /readyz says beside `ok` while the config on disk cannot be used."""
        return [] if self.problem is None else \
            [f"the operator's config is invalid, the last good one is in use: {self.problem}"]


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """What a reload changed, by key (`servers.ci.token`, `policy`, `commit_status.token`, `notify`): never
    a value, secrets being among them."""
    (servers, policy, deliveries), (new_servers, new_policy, new_deliveries) = old, new
    out = []
    for name in sorted(set(servers) | set(new_servers)):
        was, now = servers.get(name), new_servers.get(name)
        if was is None or now is None:
            out.append(f"servers.{name}")
        elif was != now:
            out += [f"servers.{name}.{f.name}" for f in dataclasses.fields(Server)
                    if getattr(was, f.name) != getattr(now, f.name)]
    out += [key for key, a, b in (("policy", policy.rules, new_policy.rules),
                                  ("freeze", policy.windows, new_policy.windows)) if a != b]
    was, now = deliveries.commit_status, new_deliveries.commit_status
    if was is None or now is None:
        out += ["commit_status"] if was != now else []
    else:
        out += [f"commit_status.{f.name}" for f in dataclasses.fields(now)
                if getattr(was, f.name) != getattr(now, f.name)]
    return out + (["notify"] if deliveries.notify != new_deliveries.notify else [])

