"""Invariants dashboard: online violations and fault windows."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.common import (
    OPS_PER_SECOND,
    SHORT,
    build_dashboard,
    query,
    timeseries_panel,
)

UID = "slot-invariants"


def _violation_panels():
    rate = timeseries_panel(
        "Online violations/s by invariant",
        "Replies that broke an invariant as the harness received them: two slots "
        "for one content, or two contents for one slot.",
        OPS_PER_SECOND,
        [
            query(
                "sum by (invariant) "
                "(rate(harness_online_violations_total[$__rate_interval]))",
                "{{invariant}}",
            )
        ],
    )
    # The harness sets each counter to 0 at start, so a flat 0 here means
    # checked and clean, and a missing series means no harness is scraped.
    total = timeseries_panel(
        "Online violations so far by invariant",
        "Violations counted since the run started.",
        SHORT,
        [
            query(
                "sum by (invariant) (harness_online_violations_total)",
                "{{invariant}}",
            )
        ],
    )
    return [rate, total]


def _fault_panels():
    active = timeseries_panel(
        "Fault windows active",
        "Fault windows open now, by kind.",
        SHORT,
        [query("sum by (kind) (harness_fault_active)", "{{kind}}")],
    )
    opened = timeseries_panel(
        "Fault windows opened so far",
        "Fault windows opened since the run started, by kind.",
        SHORT,
        [query("sum by (kind) (harness_faults_total)", "{{kind}}")],
    )
    return [active, opened]


def build() -> Dashboard:
    """Build the invariants dashboard."""
    return build_dashboard(
        UID,
        "Slot harness: invariants",
        "Invariant violations the harness saw online, beside the faults it injected.",
        [*_violation_panels(), *_fault_panels()],
    )
