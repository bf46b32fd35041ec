"""Prometheus metrics of the harness itself, on a registry of its own per run."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from harness.history import Operation


class HarnessMetrics:
    """Operations by kind and outcome, client-side latency and online violations."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.operations = Counter(
            "harness_operations",
            "Operations completed, by kind (f) and completion type",
            ["f", "type"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "harness_operation_latency_seconds",
            "Latency of an operation as the harness saw it",
            ["f", "type"],
            buckets=(
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
            ),
            registry=self.registry,
        )
        self.violations = Counter(
            "harness_online_violations",
            "Reply-level invariant violations seen during the run",
            ["invariant"],
            registry=self.registry,
        )
        self.faults = Counter(
            "harness_faults",
            "Fault windows opened, by kind",
            ["kind"],
            registry=self.registry,
        )

    def observe(self, op: Operation, latency_ms: float) -> None:
        self.operations.labels(op.f, op.type).inc()
        self.latency.labels(op.f, op.type).observe(latency_ms / 1000)

    def save(self, path: Path) -> None:
        path.write_bytes(generate_latest(self.registry))
