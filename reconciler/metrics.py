"""Prometheus metrics, one registry per daemon (so tests and embedders never share counters)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from reconciler.core.text import cut

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


OUTCOMES = frozenset({"success", "unstable", "failure", "not_built", "aborted", "failed", "cancelled", "lost",
                      "missed", "skipped", "refused", "abandoned", "unknown"})
"""Jenkins' five results in lower case and the reconciler's own outcomes: any other text a server sends
as a result is `unknown`, so a build cannot mint series."""
LABEL_LIMIT = 120
"""Server and job names come from the triggers repository: cut (with a hash) so /metrics stays small."""


class _BoundedCounter(Counter):
    """A counter by (server, job, outcome) whose label values are bounded whatever the repository or
    Jenkins say."""

    def labels(self, *values: Any, **named: Any) -> Any:
        server, job, outcome = (str(v) for v in values)
        return super().labels(cut(server, LABEL_LIMIT), cut(job, LABEL_LIMIT),
                              outcome if outcome in OUTCOMES else "unknown")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.fires = _BoundedCounter("reconciler_fires", "Runs that reached an outcome, by server, job and outcome "
                             "(the build's result in lower case, or failed, cancelled, lost, missed, skipped).",
                             ["server", "job", "outcome"], registry=self.registry)
        self.fire_latency = Histogram("reconciler_fire_latency_seconds",
                                      "From the decision to fire to Jenkins accepting the POST.",
                                      buckets=LATENCY_BUCKETS, registry=self.registry)
        self.sent_late = Counter("reconciler_fires_sent_late", "Trigger POSTs that may have been written after "
                                 "this replica's lease lapsed (a stall right after its last check): the next "
                                 "leader may have posted the run too; each is logged `fire_sent_late`.",
                                 registry=self.registry)
        self.reconcile_duration = Histogram("reconciler_reconcile_duration_seconds",
                                            "Duration of a full reconcile pass (scan, plan, decisions).",
                                            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.invalid_specs = Gauge("reconciler_invalid_specs", "Trigger specs that do not validate.",
                                   registry=self.registry)
        self.runs_in_flight = Gauge("reconciler_runs_in_flight", "Runs decided but not yet at an outcome.",
                                    registry=self.registry)
        self.last_pass = Gauge("reconciler_last_successful_pass_timestamp_seconds",
                               "When the last full pass completed (Unix time).", registry=self.registry)
        self.policy_violations = Gauge("reconciler_policy_violations", "Trigger specs that ask for what the "
                                       "operator's policy does not allow (counted among the invalid specs).",
                                       registry=self.registry)
        self.config_invalid = Gauge("reconciler_config_invalid", "1 while the operator's config on disk cannot be "
                                    "used (the daemon runs on the last good one), else 0.", registry=self.registry)
        self.config_reloads = Counter("reconciler_config_reloads", "Times a changed operator config was taken up "
                                      "without a restart.", registry=self.registry)
        self.state_errors = Counter("reconciler_state_store_errors", "Failed reads or writes of the state store.",
                                    registry=self.registry)

    def watch_history(self, age: Callable[[], float]) -> None:
        Gauge("reconciler_history_unpushed_age_seconds", "How long ago the oldest history line not yet pushed "
              "to git was written; 0 when every line is pushed.", registry=self.registry).set_function(age)

    def watch_leadership(self, leading: Callable[[], float], epoch: Callable[[], float]) -> Counter:
        """Replicas on PostgreSQL: whether this one leads, the lease's epoch, and takeovers by this one."""
        Gauge("reconciler_leader", "1 while this replica holds the lease and may fire, else 0.",
              registry=self.registry).set_function(leading)
        Gauge("reconciler_leader_epoch", "The lease's epoch this replica holds or last saw.",
              registry=self.registry).set_function(epoch)
        return Counter("reconciler_leader_takeovers", "Times this replica took the lease over from another.",
                       registry=self.registry)

    def watch_deliveries(self, oldest_age: Callable[[], float]) -> tuple[Counter, Counter]:
        """Commit statuses and messages (service/deliveries.py): attempts by outcome, and the outbox's age."""
        Gauge("reconciler_outbox_oldest_age_seconds", "How long ago the oldest commit status or message still "
              "waiting to be delivered was enqueued; 0 when none waits.",
              registry=self.registry).set_function(oldest_age)
        return (Counter("reconciler_status_deliveries", "Attempts to set a commit status, by provider and outcome "
                        "(delivered, retried, given_up).", ["provider", "outcome"], registry=self.registry),
                Counter("reconciler_notifications", "Attempts to send a message, by outcome (delivered, retried, "
                        "given_up).", ["outcome"], registry=self.registry))

    def count_in_flight(self, count: Callable[[], float]) -> None:
        self.runs_in_flight.set_function(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
