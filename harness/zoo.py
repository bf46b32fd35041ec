"""The zoo: proof that every faulty strategy is caught and no correct one is blamed.

Each faulty strategy runs under the scenario written to expose it
(scenarios/zoo/strategies/<strategy>.yaml, whose ``expect.invalid`` names the
invariants it breaks). Each correct strategy runs under every fault scenario
(scenarios/zoo/faults/*.yaml). Every pairing runs over several seeds. All
runs share one cluster, reset between runs, whose coordinators are recreated
when the strategy changes.
"""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.checkers import INVARIANTS
from harness.checkers.findings import volatile_restart_index
from harness.coordinator.strategies import CORRECT_STRATEGIES, FAULTY_STRATEGIES
from harness.errors import HarnessError, ScenarioError
from harness.history import load_history
from harness.report.results import (
    EXIT_BAD_INPUT,
    EXIT_INVALID,
    EXIT_UNKNOWN,
    EXIT_VALID,
    write_results,
)
from harness.scenario import Scenario, load_scenario
from harness.topology import ClusterSpec, DockerCluster

FULL_SEEDS = (1, 2, 3, 4, 5)
QUICK_SEEDS = (1,)


@dataclass(frozen=True)
class ZooEntry:
    """One strategy under one scenario, run once per seed."""

    strategy: str
    name: str
    scenario: Scenario
    correct: bool

    @property
    def expected_invalid(self) -> tuple[str, ...]:
        return tuple(self.scenario.expect.invalid)


@dataclass
class ZooRun:
    entry: ZooEntry
    seed: int
    status: str  # completed, error
    exit_code: int
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    duration_s: float = 0.0
    detection_s: float | None = None
    run_dir: str | None = None
    error: str | None = None
    # Set when a fault destroyed data by design (Redis restarted without its
    # files): what cannot be judged then is the environment's doing.
    data_lost: bool = False

    def status_of(self, invariant: str) -> str:
        return self.verdicts.get(invariant, {}).get("status", "unknown")

    @property
    def missed(self) -> list[str]:
        """Invariants a faulty strategy should have broken but did not here."""
        return [
            i for i in self.entry.expected_invalid if self.status_of(i) != "invalid"
        ]

    @property
    def flagged(self) -> list[str]:
        """Invariants a correct strategy was blamed for (cause coordinator)."""
        return [
            invariant
            for invariant, verdict in self.verdicts.items()
            if verdict["status"] == "invalid" and verdict.get("cause") == "coordinator"
        ]

    @property
    def outcome(self) -> str:
        if self.status != "completed":
            return "error"
        if self.entry.correct:
            if self.flagged:
                return "flagged"
            statuses = {v["status"] for v in self.verdicts.values()}
            if self.data_lost and statuses - {"valid"}:
                return "environment"
            return "unknown" if "unknown" in statuses else "valid"
        return "missed" if self.missed else "caught"

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.entry.strategy,
            "scenario": self.entry.name,
            "correct": self.entry.correct,
            "seed": self.seed,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "expected_invalid": list(self.entry.expected_invalid),
            "missed": self.missed if not self.entry.correct else [],
            "flagged": self.flagged if self.entry.correct else [],
            "statuses": {i: self.status_of(i) for i in self.verdicts},
            "data_lost": self.data_lost,
            "duration_s": self.duration_s,
            "detection_s": self.detection_s,
            "run_dir": self.run_dir,
            "error": self.error,
        }


def plan_zoo(scenarios_dir: Path) -> list[ZooEntry]:
    """Reads the zoo's scenarios and raises ScenarioError for a missing or wrong one."""
    entries: list[ZooEntry] = []
    for strategy in FAULTY_STRATEGIES:
        path = scenarios_dir / "strategies" / f"{strategy}.yaml"
        scenario = load_scenario(path)
        if scenario.strategy != strategy or not scenario.expect.invalid:
            raise ScenarioError(
                f"{path}: a zoo scenario for {strategy} must set strategy: "
                f"{strategy} and list the invariants it breaks in expect.invalid"
            )
        entries.append(ZooEntry(strategy, path.stem, scenario, correct=False))
    fault_paths = sorted((scenarios_dir / "faults").glob("*.yaml"))
    if not fault_paths:
        raise ScenarioError(
            f"no fault scenarios in {scenarios_dir / 'faults'}; the zoo runs each "
            "correct strategy under every one of them"
        )
    for path in fault_paths:
        base = load_scenario(path)
        for strategy in CORRECT_STRATEGIES:
            scenario = base.with_overrides(strategy=strategy)
            entries.append(ZooEntry(strategy, path.stem, scenario, correct=True))
    return entries


class Zoo:
    """Runs the entries strategy by strategy and keeps every result."""

    def __init__(
        self,
        entries: list[ZooEntry],
        seeds: tuple[int, ...],
        folder: Path,
        console: Console,
        runtime_image: str,
    ) -> None:
        self.entries = entries
        self.seeds = seeds
        self.folder = folder
        self.console = console
        self.runtime_image = runtime_image
        self.runs: list[ZooRun] = []
        self.started = time.monotonic()
        self.total = len(entries) * len(seeds)
        self.clusters_started = 0

    async def execute(self) -> None:
        """Runs every entry and seed on one cluster, a strategy's runs together.

        Only the coordinators are recreated when the strategy changes (the
        run does that), and state is reset between runs, so Redis, Postgres
        and the proxies start once. A run that fails to run leaves the
        cluster in doubt, so a new one replaces it.
        """
        from harness.run import start_cluster

        by_strategy: dict[str, list[ZooEntry]] = defaultdict(list)
        for entry in self.entries:
            by_strategy[entry.strategy].append(entry)
        cluster: DockerCluster | None = None
        try:
            for strategy, entries in by_strategy.items():
                for entry in entries:
                    for seed in self.seeds:
                        if cluster is not None and not _fits(cluster, entry):
                            await asyncio.to_thread(cluster.teardown)
                            cluster = None
                        if cluster is None:
                            cluster = self._new_cluster(strategy, entry.scenario)
                            await start_cluster(cluster, _quiet())
                        run = await self._run_one(cluster, entry, seed)
                        if run.status == "error":
                            await asyncio.to_thread(cluster.teardown)
                            cluster = None
        finally:
            if cluster is not None:
                await asyncio.shield(asyncio.to_thread(cluster.teardown))

    def _new_cluster(self, strategy: str, scenario: Scenario) -> DockerCluster:
        self.clusters_started += 1
        return DockerCluster(
            ClusterSpec(
                run_id=f"{self.folder.name}-{self.clusters_started}",
                runtime_image=self.runtime_image,
                instances=scenario.instances,
                strategy=strategy,
                redis_persistence=scenario.redis_persistence,
            )
        )

    async def _run_one(self, cluster: DockerCluster, entry: ZooEntry, seed: int):
        from harness.run import execute_run

        output = _quiet()
        started = time.monotonic()
        scenario = entry.scenario.with_overrides(seed=seed)
        run = ZooRun(entry, seed, status="error", exit_code=EXIT_BAD_INPUT)
        try:
            outcome = await execute_run(
                scenario,
                self.folder / "runs",
                output,
                runtime_image=self.runtime_image,
                cluster=cluster,
            )
        except HarnessError as err:
            run.error = str(err)
        else:
            results = outcome.results
            run.status = "completed"
            run.exit_code = outcome.exit_code
            run.run_dir = str(outcome.run_dir)
            run.verdicts = {v["invariant"]: v for v in results["verdicts"]}
            history = load_history(outcome.run_dir / "history.jsonl")
            run.data_lost = volatile_restart_index(history) is not None
            first = results.get("first_online_violation_s")
            run.detection_s = (
                first if first is not None else results["verdicts_known_s"]
            )
            (outcome.run_dir / "console.txt").write_text(output.export_text())
        run.duration_s = round(time.monotonic() - started, 2)
        self.runs.append(run)
        self._print_progress(run)
        return run

    def _print_progress(self, run: ZooRun) -> None:
        colour = {
            "caught": "green",
            "valid": "green",
            "missed": "red",
            "flagged": "red",
            "error": "red",
            "unknown": "yellow",
            "environment": "yellow",
        }[run.outcome]
        detail = ""
        if run.outcome == "missed":
            detail = f" (not invalid: {', '.join(run.missed)})"
        elif run.outcome == "flagged":
            detail = f" (invalid: {', '.join(run.flagged)})"
        elif run.outcome == "error":
            detail = f" ({run.error})"
        elif run.outcome == "environment":
            detail = " (Redis lost its data by design; not held against it)"
        elapsed = time.monotonic() - self.started
        self.console.print(
            f"[{len(self.runs):>3}/{self.total}] {run.entry.strategy:<18} "
            f"{run.entry.name:<28} seed {run.seed}  [{colour}]{run.outcome}[/{colour}]"
            f"  {run.duration_s:5.1f} s  ({elapsed / 60:.1f} min){detail}",
            highlight=False,
        )

    # --- results ---------------------------------------------------------------

    def exit_code(self) -> int:
        outcomes = {run.outcome for run in self.runs}
        if outcomes & {"missed", "flagged"}:
            return EXIT_INVALID
        if "error" in outcomes or len(self.runs) < self.total:
            return EXIT_BAD_INPUT
        if "unknown" in outcomes:
            return EXIT_UNKNOWN
        return EXIT_VALID

    def summary(self, status: str) -> dict[str, Any]:
        return {
            "status": status,
            "seeds": list(self.seeds),
            "planned_runs": self.total,
            "runs_done": len(self.runs),
            "clusters_started": self.clusters_started,
            "duration_s": round(time.monotonic() - self.started, 1),
            "exit_code": self.exit_code(),
            "escapes": [r.to_json() for r in self.runs if r.outcome == "missed"],
            "false_positives": [
                r.to_json() for r in self.runs if r.outcome == "flagged"
            ],
            "table": strategy_table(self.runs),
            "faults_table": fault_table(self.runs),
            "runs": [run.to_json() for run in self.runs],
        }


def strategy_table(runs: list[ZooRun]) -> dict[str, dict[str, Any]]:
    """Strategy x invariant: caught, missed, valid, unknown counts over all runs."""
    table: dict[str, dict[str, Any]] = {}
    by_strategy: dict[str, list[ZooRun]] = defaultdict(list)
    for run in runs:
        by_strategy[run.entry.strategy].append(run)
    for strategy, group in by_strategy.items():
        done = [r for r in group if r.status == "completed"]
        row: dict[str, Any] = {
            "correct": group[0].entry.correct,
            "runs": len(group),
            "errors": len(group) - len(done),
        }
        for invariant in INVARIANTS:
            row[invariant] = _cell(invariant, done)
        detections = [
            r.detection_s
            for r in done
            if r.outcome == "caught" and r.detection_s is not None
        ]
        if detections and not group[0].entry.correct:
            row["detection_s"] = {
                "median": round(statistics.median(detections), 1),
                "max": round(max(detections), 1),
            }
        table[strategy] = row
    return table


def _cell(invariant: str, runs: list[ZooRun]) -> dict[str, Any]:
    expected = bool(runs) and invariant in runs[0].entry.expected_invalid
    counts = {"valid": 0, "invalid": 0, "unknown": 0, "environment": 0}
    for run in runs:
        verdict = run.verdicts.get(invariant, {})
        status = verdict.get("status", "unknown")
        if status == "invalid" and verdict.get("cause") == "environment":
            counts["environment"] += 1
        else:
            counts[status] += 1
    if expected:
        label = "caught" if counts["invalid"] == len(runs) else "missed"
    elif counts["invalid"]:
        label = "flagged" if runs[0].entry.correct else "invalid"
    elif counts["unknown"]:
        label = "unknown"
    else:
        label = "valid"
    return {"label": label, "expected_invalid": expected, "of": len(runs), **counts}


def fault_table(runs: list[ZooRun]) -> dict[str, dict[str, str]]:
    """For correct strategies: fault scenario x strategy, valid runs of all runs."""
    table: dict[str, dict[str, str]] = defaultdict(dict)
    groups: dict[tuple[str, str], list[ZooRun]] = defaultdict(list)
    for run in runs:
        if run.entry.correct:
            groups[(run.entry.name, run.entry.strategy)].append(run)
    for (name, strategy), group in groups.items():
        good = sum(r.outcome == "valid" for r in group)
        cell = f"{good}/{len(group)}"
        environment = sum(r.outcome == "environment" for r in group)
        if environment:
            cell += f" (+{environment} data lost by design)"
        table[name][strategy] = cell
    return dict(table)


def render_strategy_table(table: dict[str, dict[str, Any]]) -> Table:
    """Builds the table: faulty strategies above the line, correct ones below."""
    view = Table(
        title="strategy x invariant (faulty strategies above the line)",
        caption="detect s: time to detection, median / max seconds",
    )
    view.add_column("strategy", no_wrap=True)
    for invariant in INVARIANTS:
        view.add_column(invariant, overflow="fold")
    view.add_column("detect s", no_wrap=True)
    rows = sorted(table.items(), key=lambda item: item[1]["correct"])
    for number, (strategy, row) in enumerate(rows):
        cells = [_cell_text(row[invariant]) for invariant in INVARIANTS]
        detection = row.get("detection_s")
        cells.append(f"{detection['median']}/{detection['max']}" if detection else "-")
        last_faulty = (
            not row["correct"]
            and number + 1 < len(rows)
            and rows[number + 1][1]["correct"]
        )
        view.add_row(strategy, *cells, end_section=last_faulty)
    return view


def _cell_text(cell: dict[str, Any]) -> str:
    label, of = cell["label"], cell["of"]
    if label == "caught":
        return f"[green]caught {cell['invalid']}/{of}[/green]"
    if label == "missed":
        return f"[red]MISSED {of - cell['invalid']}/{of}[/red]"
    if label == "flagged":
        return f"[red]FLAGGED {cell['invalid']}/{of}[/red]"
    if label == "invalid":
        return f"invalid {cell['invalid']}/{of}"
    text = f"valid {cell['valid']}/{of}"
    if cell["unknown"]:
        text += f" [yellow]unknown {cell['unknown']}[/yellow]"
    if cell["environment"]:
        text += f" env {cell['environment']}"
    return text


def render_fault_table(table: dict[str, dict[str, str]]) -> Table:
    view = Table(title="correct strategies under each fault scenario (valid runs)")
    view.add_column("fault scenario")
    strategies = list(CORRECT_STRATEGIES)
    for strategy in strategies:
        view.add_column(strategy)
    for name, row in sorted(table.items()):
        view.add_row(name, *(row.get(s, "-") for s in strategies))
    return view


def _fits(cluster: DockerCluster, entry: ZooEntry) -> bool:
    """Tells whether the entry can run on this cluster (persistence is set at start)."""
    return cluster.spec.redis_persistence == entry.scenario.redis_persistence


def new_zoo_folder(reports_dir: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    folder = reports_dir / "zoo" / f"zoo-{stamp}"
    try:
        folder.mkdir(parents=True, exist_ok=False)
    except OSError as err:
        raise HarnessError(
            f"cannot create the zoo folder {folder}: {err.strerror}; pass a "
            "writable folder with --reports"
        ) from err
    return folder


def save_zoo(folder: Path, summary: dict[str, Any]) -> Path:
    path = folder / "zoo.json"
    write_results(path, summary)
    return path


def _quiet() -> Console:
    """Returns a console that records a run's output for its folder, not the screen."""
    return Console(file=io.StringIO(), record=True, width=120)


def load_zoo(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))
