"""Prometheus metrics of the harness itself, on a registry of its own per run.

The dashboards in dashboards/ and the alert rules in harness/observe/alerts.yml
query these names, so renaming one breaks them. Their tests then fail and
name the query.
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from harness.history import Operation

# Upper bounds in seconds, from a reply on loopback to a client timeout.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)
# The reply-level checks that run online. Their counters start at zero, so a
# query over a clean run finds a series with value 0 rather than nothing.
ONLINE_INVARIANTS = ("one-slot-per-content", "one-content-per-slot")


class HarnessMetrics:
    """Operations, client-side latency, online violations, faults and batches."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.run_info = Gauge(
            "harness_run_info",
            "Always 1; the labels name the run, its scenario, strategy and seed.",
            ["run_id", "scenario", "strategy", "seed"],
            registry=self.registry,
        )
        self.operations = Counter(
            "harness_operations",
            "Operations completed, by kind (the history's f) and outcome "
            "(ok, fail or info)",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "harness_operation_latency_seconds",
            "Latency of an operation as the harness saw it",
            ["kind", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.violations = Counter(
            "harness_online_violations",
            "Reply-level invariant violations seen during the run",
            ["invariant"],
            registry=self.registry,
        )
        for invariant in ONLINE_INVARIANTS:
            self.violations.labels(invariant)
        self.faults = Counter(
            "harness_faults",
            "Fault windows opened, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.fault_active = Gauge(
            "harness_fault_active",
            "Fault windows of this kind open now",
            ["kind"],
            registry=self.registry,
        )
        self.fault_last_start = Gauge(
            "harness_fault_last_start_timestamp_seconds",
            "Unix time the last window of this kind opened",
            ["kind"],
            registry=self.registry,
        )
        self.fault_last_end = Gauge(
            "harness_fault_last_end_timestamp_seconds",
            "Unix time the last window of this kind closed",
            ["kind"],
            registry=self.registry,
        )
        self.batch_sent = Gauge(
            "harness_batch_sent_timestamp_seconds",
            "Unix time the storm had fired every event of the batch at least once",
            ["batch"],
            registry=self.registry,
        )
        self.batch_events = Gauge(
            "harness_batch_events",
            "Distinct events (contents and failures) the storm fired for the "
            "batch; a batch with at least as many as its slots must fill",
            ["batch"],
            registry=self.registry,
        )
        self.settle = Gauge(
            "harness_settle_seconds",
            "The scenario's settle time: how long after the storm and its "
            "redelivery every batch may take to complete",
            registry=self.registry,
        )
        self.settle_deadline = Gauge(
            "harness_settle_deadline_timestamp_seconds",
            "Unix time by which every batch must be complete: set when the "
            "settle phase starts",
            registry=self.registry,
        )

    def describe_run(
        self, run_id: str, scenario: str, strategy: str, seed: int, settle_s: float
    ) -> None:
        self.run_info.labels(run_id, scenario, strategy, str(seed)).set(1)
        self.settle.set(settle_s)

    def observe(self, op: Operation, latency_ms: float) -> None:
        self.operations.labels(op.f, op.type).inc()
        self.latency.labels(op.f, op.type).observe(latency_ms / 1000)

    def fault_window(self, kind: str, phase: str) -> None:
        """Count a fault window opening (phase "start") or closing."""
        if phase == "start":
            self.faults.labels(kind).inc()
            self.fault_active.labels(kind).inc()
            self.fault_last_start.labels(kind).set(time.time())
        else:
            self.fault_active.labels(kind).dec()
            self.fault_last_end.labels(kind).set(time.time())

    def batch_fired(self, batch_id: str, events: int) -> None:
        self.batch_sent.labels(batch_id).set(time.time())
        self.batch_events.labels(batch_id).set(events)

    def settle_started(self, settle_s: float) -> None:
        self.settle_deadline.set(time.time() + settle_s)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def save(self, path: Path) -> None:
        path.write_bytes(self.exposition())
