"""Overview dashboard: throughput, definite answers and latency against targets."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.common import (
    INSTANCE_MATCHER,
    OPS_PER_SECOND,
    PERCENT_UNIT,
    SECONDS,
    build_dashboard,
    instance_variable,
    latency_queries,
    query,
    timeseries_panel,
    with_target_line,
)

UID = "slot-overview"

# Latency targets, in seconds, each drawn as a line on its p50/p95/p99 panel.
COORDINATION_TARGET_S = 1.0
REDIS_TARGET_S = 0.1
POSTGRES_TARGET_S = 0.2


def _throughput_panels():
    operations = timeseries_panel(
        "Harness operations/s by kind",
        "Operations the harness completed per second, by history operation kind.",
        OPS_PER_SECOND,
        [
            query(
                "sum by (kind) (rate(harness_operations_total[$__rate_interval]))",
                "{{kind}}",
            )
        ],
    )
    requests = timeseries_panel(
        "Coordinator requests/s by outcome",
        "HTTP requests the coordinators answered per second, by outcome.",
        OPS_PER_SECOND,
        [
            query(
                "sum by (outcome) (rate(coordinator_requests_total"
                f"{{{INSTANCE_MATCHER}}}[$__rate_interval]))",
                "{{outcome}}",
            )
        ],
    )
    return [operations, requests]


def _definite_answers_panel():
    return (
        timeseries_panel(
            "Definite answers",
            "Share of harness operations with a definite reply, ok or fail. ok: "
            "the coordinator replied 200 or 201. fail: a definite refusal (400, "
            "404, or 409 such as a full batch) or a connection refused before "
            "sending, which a valid run expects. info: an unknown outcome (a "
            "timeout, a reset after sending or a 5xx), which may or may not have "
            "taken effect.",
            PERCENT_UNIT,
            [
                query(
                    'sum(rate(harness_operations_total{outcome=~"ok|fail"}'
                    "[$__rate_interval])) / "
                    "sum(rate(harness_operations_total[$__rate_interval]))",
                    "ok or fail",
                )
            ],
        )
        .min(0)
        .max(1)
    )


def _latency_panels():
    coordination = timeseries_panel(
        "Coordination latency (target p99 < 1 s)",
        "Time a coordinator took to assign a slot or reply, all outcomes.",
        SECONDS,
        latency_queries("coordinator_assignment_seconds", INSTANCE_MATCHER),
    )
    with_target_line(coordination, COORDINATION_TARGET_S)
    redis = timeseries_panel(
        "Redis store operations (target p99 < 100 ms)",
        "Latency of each Redis command or transaction a coordinator sent.",
        SECONDS,
        latency_queries(
            "coordinator_store_operation_seconds", f'store="redis", {INSTANCE_MATCHER}'
        ),
    )
    with_target_line(redis, REDIS_TARGET_S)
    postgres = timeseries_panel(
        "Postgres store operations (target p99 < 200 ms)",
        "Latency of each SQL statement a coordinator sent.",
        SECONDS,
        latency_queries(
            "coordinator_store_operation_seconds",
            f'store="postgres", {INSTANCE_MATCHER}',
        ),
    )
    with_target_line(postgres, POSTGRES_TARGET_S)
    client = timeseries_panel(
        "Latency the harness saw (target p99 < 1 s)",
        "Time from a request's send to its reply at the harness, network and "
        "queueing included, all operation kinds and outcomes.",
        SECONDS,
        latency_queries("harness_operation_latency_seconds", 'job="harness"'),
    )
    with_target_line(client, COORDINATION_TARGET_S)
    return [coordination, redis, postgres, client]


def build() -> Dashboard:
    """Build the overview dashboard."""
    panels = [*_throughput_panels(), _definite_answers_panel(), *_latency_panels()]
    return build_dashboard(
        UID,
        "Slot harness: overview",
        "Throughput, share of definite answers and latency of a run against its "
        "targets.",
        panels,
        variables=[instance_variable()],
    )
