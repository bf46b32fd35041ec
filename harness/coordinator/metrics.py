"""Prometheus metrics of one coordinator app, in a registry of its own.

A registry per app, rather than the global one, lets several apps run in one
process (the tests start three) without duplicate-metric errors.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Upper bounds in seconds; a Lua assignment takes well under a millisecond on
# loopback, and a WATCH retry storm can take seconds.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class CoordinatorMetrics:
    """Counters and histograms of one app, labelled by strategy where it matters."""

    def __init__(self, strategy: str, instance_id: str) -> None:
        self.strategy = strategy
        self.registry = CollectorRegistry(auto_describe=True)
        self.info = Gauge(
            "coordinator_info",
            "Always 1; the labels name the instance and its strategy.",
            ["instance", "strategy"],
            registry=self.registry,
        )
        self.info.labels(instance_id, strategy).set(1)
        self.requests = Counter(
            "coordinator_requests",
            "HTTP requests by route and outcome.",
            ["route", "outcome"],
            registry=self.registry,
        )
        self.assignment_seconds = Histogram(
            "coordinator_assignment_seconds",
            "Time to assign a content or record a failure, by outcome.",
            ["strategy", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.watch_conflicts = Counter(
            "coordinator_watch_conflicts",
            "Transactions aborted at EXEC because a watched key changed (WatchError).",
            ["strategy"],
            registry=self.registry,
        )
        self.retries = Counter(
            "coordinator_retries",
            "Attempts repeated, by reason: watch_conflict, claim_wait or store_error.",
            ["strategy", "reason"],
            registry=self.registry,
        )
        self.completions = Counter(
            "coordinator_completions_emitted",
            "batch_ready entries this instance appended to the Redis stream.",
            ["strategy"],
            registry=self.registry,
        )

    def count_retry(self, reason: str) -> None:
        self.retries.labels(self.strategy, reason).inc()

    def count_watch_conflict(self) -> None:
        self.watch_conflicts.labels(self.strategy).inc()

    def count_completion(self) -> None:
        self.completions.labels(self.strategy).inc()
