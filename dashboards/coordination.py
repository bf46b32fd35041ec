"""Coordination dashboard: WATCH conflicts, EXEC aborts, retries and slots."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.common import (
    INSTANCE_MATCHER,
    OPS_PER_SECOND,
    PERCENT_UNIT,
    SHORT,
    build_dashboard,
    instance_variable,
    query,
    timeseries_panel,
)

UID = "slot-coordination"


def _rate_by(metric: str, label: str) -> str:
    return f"sum by ({label}) (rate({metric}{{{INSTANCE_MATCHER}}}[$__rate_interval]))"


def _transaction_panels():
    conflicts = timeseries_panel(
        "WATCH conflicts/s",
        "WATCH conflicts (WatchError) the strategy counted, per instance.",
        OPS_PER_SECOND,
        [
            query(
                _rate_by("coordinator_watch_conflicts_total", "instance"),
                "{{instance}}",
            )
        ],
    )
    aborts = timeseries_panel(
        "EXEC aborts/s",
        "MULTI/EXEC transactions that Redis aborted (WatchError), per instance.",
        OPS_PER_SECOND,
        [query(_rate_by("coordinator_exec_aborts_total", "instance"), "{{instance}}")],
    )
    # A strategy that pops before EXEC aborts every transaction, so this ratio
    # near 1 is the signature of that bug, where the count alone is not.
    abort_ratio = (
        timeseries_panel(
            "EXEC abort ratio",
            "Aborted MULTI/EXEC transactions over all sent. Empty when no "
            "strategy sends MULTI/EXEC.",
            PERCENT_UNIT,
            [
                query(
                    "sum(rate(coordinator_exec_aborts_total"
                    f"{{{INSTANCE_MATCHER}}}[$__rate_interval])) / "
                    "sum(rate(coordinator_exec_total"
                    f"{{{INSTANCE_MATCHER}}}[$__rate_interval]))",
                    "aborted",
                )
            ],
        )
        .min(0)
        .max(1)
    )
    retries = timeseries_panel(
        "Retries/s by reason",
        "Attempts the strategy repeated, by reason (watch_conflict, claim_wait, "
        "store_error).",
        OPS_PER_SECOND,
        [query(_rate_by("coordinator_retries_total", "reason"), "{{reason}}")],
    )
    return [conflicts, aborts, abort_ratio, retries]


def _batch_panels():
    # Every instance reads the same batch from the shared store, so the
    # instances' series are merged with max, not summed.
    slots = timeseries_panel(
        "Slots per batch",
        "Slots of each recent batch by state (available, assigned, failed), "
        "read from the store at scrape time, beside the batch's capacity.",
        SHORT,
        [
            query(
                "max by (batch, state) "
                f"(coordinator_batch_slots{{{INSTANCE_MATCHER}}})",
                "{{batch}} {{state}}",
            ),
            query(
                f"max by (batch) (coordinator_batch_capacity{{{INSTANCE_MATCHER}}})",
                "{{batch}} capacity",
                ref_id="B",
            ),
        ],
    )
    completions = timeseries_panel(
        "Completions emitted/s",
        "batch_ready events emitted per second, per instance.",
        OPS_PER_SECOND,
        [
            query(
                _rate_by("coordinator_completions_emitted_total", "instance"),
                "{{instance}}",
            )
        ],
    )
    # batch_ready must be emitted once per batch, so the completions emitted
    # over a run should match this count.
    completed = timeseries_panel(
        "Batches completed",
        "Recent batches that the store shows complete.",
        SHORT,
        [
            query(
                "sum(max by (batch) "
                f"(coordinator_batch_completed{{{INSTANCE_MATCHER}}}))",
                "batches completed",
            )
        ],
    )
    return [slots, completions, completed]


def build() -> Dashboard:
    """Build the coordination dashboard."""
    return build_dashboard(
        UID,
        "Slot harness: coordination",
        "How the strategy coordinates: WATCH conflicts, EXEC aborts, retries, "
        "slots per batch and completions.",
        [*_transaction_panels(), *_batch_panels()],
        variables=[instance_variable()],
    )
