"""Observed runs: a real Prometheus scrapes the run, and every panel has data.

Each test runs a short scenario with Prometheus, then starts Prometheus again
on the data the run saved (as `harness observe` does) and sends its HTTP API a query
for every target of every generated dashboard panel.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from rich.console import Console

from dashboards import JSON_DIR
from harness.images import ensure_prometheus_image
from harness.observe import ObserveOptions, observed_range, serve_saved
from harness.run import execute_run
from harness.scenario import Scenario

pytestmark = pytest.mark.docker

OBSERVED = {
    "name": "observed",
    "seed": 5,
    "instances": 3,
    "batches": 4,
    "slots_per_batch": 20,
    "contents_per_batch": 24,
    "failures_per_batch": 1,
    "duplicates": 8,
    "rate": 300,
    "duration_s": 10,
    # Conflicts give the EXEC and retry panels something to show, and their
    # windows give the annotation and fault panels theirs.
    "faults": [{"kind": "watch-conflict", "fraction": 0.3}],
    "settle_s": 5,
}
# What Grafana puts in place of its variables: the "All" value of the
# instance variable, and a rate window of a few 1 s scrapes.
GRAFANA_VARIABLES = {"instance": ".*", "__rate_interval": "10s", "__interval": "2s"}
VIOLATION_METRIC = "harness_online_violations_total"


def substitute(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def panel_queries() -> list[tuple[str, str, str]]:
    """Return (dashboard, panel title, PromQL) for every target and annotation."""
    queries = []
    for path in sorted(JSON_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                queries.append((path.stem, panel["title"], substitute(target["expr"])))
        for annotation in dashboard["annotations"]["list"]:
            queries.append(
                (path.stem, annotation["name"], substitute(annotation["expr"]))
            )
    return queries


async def observed_run(cluster, runtime_image, tmp_path: Path, strategy: str):
    image = ensure_prometheus_image()
    return await execute_run(
        Scenario.model_validate({**OBSERVED, "strategy": strategy}),
        tmp_path,
        Console(width=140, record=True),
        runtime_image=runtime_image,
        cluster=cluster,
        observe=ObserveOptions(prometheus_image=image),
    )


def finite_values(series: list[dict]) -> list[float]:
    return [
        float(value)
        for entry in series
        for _, value in entry["values"]
        if math.isfinite(float(value))
    ]


def saved_alert_names(run_dir: Path) -> set[str]:
    saved = json.loads((run_dir / "alerts.json").read_text())
    return {alert["alertname"] for alert in saved["alerts"]}


def test_every_dashboard_has_panels_and_the_fault_annotation():
    queries = panel_queries()

    assert {dashboard for dashboard, _, _ in queries} == {
        "slot-coordination",
        "slot-invariants",
        "slot-overview",
    }
    assert sum(1 for _, name, _ in queries if name == "Fault windows") == 3
    assert all("$" not in expr for _, _, expr in queries)


async def test_panel_queries_have_data_on_watch(cluster, runtime_image, tmp_path):
    outcome = await observed_run(cluster, runtime_image, tmp_path, "watch")
    assert outcome.exit_code == 0, outcome.results["verdicts"]
    start, end = observed_range(outcome.run_dir)

    server = serve_saved(outcome.run_dir, ensure_prometheus_image())
    try:
        empty = [
            f"{dashboard} / {title}: {expr}"
            for dashboard, title, expr in panel_queries()
            if not finite_values(server.query_range(expr, start, end))
        ]
        up = server.query_range("up", start, end)
    finally:
        server.stop()

    assert empty == []
    assert saved_alert_names(outcome.run_dir) == set()
    jobs = {(entry["metric"]["job"], entry["metric"]["instance"]) for entry in up}
    assert jobs == {
        ("harness", "harness"),
        ("coordinator", "coordinator-1"),
        ("coordinator", "coordinator-2"),
        ("coordinator", "coordinator-3"),
    }


async def test_violations_and_alert_on_check_then_act(cluster, runtime_image, tmp_path):
    outcome = await observed_run(cluster, runtime_image, tmp_path, "check-then-act")
    assert outcome.results["online_violations"]["one-slot-per-content"] > 0
    start, end = observed_range(outcome.run_dir)

    server = serve_saved(outcome.run_dir, ensure_prometheus_image())
    try:
        peaks = {
            title: max(finite_values(server.query_range(expr, start, end)))
            for _, title, expr in panel_queries()
            if VIOLATION_METRIC in expr
        }
    finally:
        server.stop()

    assert len(peaks) == 2 and all(peak > 0 for peak in peaks.values()), peaks
    assert "DuplicateAssignment" in saved_alert_names(outcome.run_dir)
    assert "DuplicateAssignment" in {
        alert["alertname"] for alert in outcome.results["alerts"]
    }


async def test_duplicate_assignment_alert_stays_silent_on_lua(
    cluster, runtime_image, tmp_path
):
    outcome = await observed_run(cluster, runtime_image, tmp_path, "lua")
    assert outcome.exit_code == 0, outcome.results["verdicts"]
    start, end = observed_range(outcome.run_dir)

    server = serve_saved(outcome.run_dir, ensure_prometheus_image())
    try:
        operations = server.query_range("sum(harness_operations_total)", start, end)
    finally:
        server.stop()

    # Prometheus saw the run's operations, so its silence is a verdict.
    assert max(finite_values(operations)) > 100
    assert saved_alert_names(outcome.run_dir) == set()


async def test_batch_stuck_alert_fires_on_immediate_spop(
    cluster, runtime_image, tmp_path
):
    # Every EXEC aborts after its SPOP ran, so slots vanish unrecorded and no
    # batch can fill: once the settle time runs out, each batch is stuck.
    outcome = await observed_run(cluster, runtime_image, tmp_path, "immediate-spop")

    stuck = {
        alert["labels"]["batch"]
        for alert in outcome.results["alerts"]
        if alert["alertname"] == "BatchStuck"
    }
    run_id = outcome.results["run_id"]
    assert stuck == {f"{run_id}-b{n:03d}" for n in range(OBSERVED["batches"])}
