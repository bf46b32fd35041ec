"""Overview dashboard: throughput, success rate and latency against targets."""

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


def _success_rate_panel():
    return (
        timeseries_panel(
            "Success rate",
            "Share of harness operations that ended ok. Operations with an unknown "
            "outcome (info) count as not ok.",
            PERCENT_UNIT,
            [
                query(
                    'sum(rate(harness_operations_total{outcome="ok"}'
                    "[$__rate_interval])) / "
                    "sum(rate(harness_operations_total[$__rate_interval]))",
                    "ok",
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
    panels = [*_throughput_panels(), _success_rate_panel(), *_latency_panels()]
    return build_dashboard(
        UID,
        "Slot harness: overview",
        "Throughput, success rate and latency of a run against its targets.",
        panels,
        variables=[instance_variable()],
    )
