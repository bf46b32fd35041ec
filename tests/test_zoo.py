"""The zoo's plan and its judgement of runs, on literal verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from harness.coordinator.strategies import CORRECT_STRATEGIES, FAULTY_STRATEGIES
from harness.errors import ScenarioError
from harness.replay import matches
from harness.scenario import load_scenario
from harness.zoo import Zoo, ZooEntry, ZooRun, plan_zoo, strategy_table

ROOT = Path(__file__).resolve().parents[1]


def test_plan_covers_every_strategy_and_fault_scenario():
    entries = plan_zoo(ROOT / "scenarios/zoo")

    faulty = [e for e in entries if not e.correct]
    correct = [e for e in entries if e.correct]
    fault_files = sorted(p.stem for p in (ROOT / "scenarios/zoo/faults").glob("*.yaml"))
    assert sorted(e.strategy for e in faulty) == sorted(FAULTY_STRATEGIES)
    assert all(e.expected_invalid for e in faulty)
    assert sorted((e.name, e.strategy) for e in correct) == sorted(
        (name, strategy) for name in fault_files for strategy in CORRECT_STRATEGIES
    )
    # A correct strategy is expected to break nothing.
    assert all(e.scenario.expect.invalid == [] for e in correct)


def test_fault_scenarios_cover_every_fault_kind():
    from harness.faults import FAULT_KINDS

    kinds = {
        fault.kind
        for path in (ROOT / "scenarios/zoo/faults").glob("*.yaml")
        for fault in load_scenario(path).faults
    }

    assert kinds == set(FAULT_KINDS)


def test_plan_rejects_missing_strategy_scenario(tmp_path):
    (tmp_path / "strategies").mkdir()

    with pytest.raises(ScenarioError, match="strategies/immediate-spop.yaml"):
        plan_zoo(tmp_path)


def entry(strategy: str, correct: bool, invalid: tuple[str, ...] = ()) -> ZooEntry:
    scenario = load_scenario(ROOT / "scenarios/smoke.yaml").with_overrides(
        strategy=strategy
    )
    if invalid:
        scenario = scenario.model_copy(
            update={"expect": scenario.expect.model_copy(update={"invalid": invalid})}
        )
    return ZooEntry(strategy, "smoke", scenario, correct)


def run(e: ZooEntry, **statuses: str) -> ZooRun:
    verdicts = {
        name.replace("_", "-"): {
            "invariant": name.replace("_", "-"),
            "status": status.split(":")[0],
            "cause": (status.split(":") + ["coordinator"])[1]
            if status.startswith("invalid")
            else None,
        }
        for name, status in statuses.items()
    }
    return ZooRun(e, seed=1, status="completed", exit_code=0, verdicts=verdicts)


def test_faulty_run_caught_only_when_every_expected_invariant_invalid():
    faulty = entry("pop-then-record", False, ("no-lost-slot", "liveness"))

    both = run(faulty, no_lost_slot="invalid", liveness="invalid")
    one = run(faulty, no_lost_slot="invalid", liveness="valid")

    assert both.outcome == "caught"
    assert one.outcome == "missed"
    assert one.missed == ["liveness"]


def test_correct_run_flagged_by_coordinator_cause_only():
    correct = entry("lua", True)

    blamed = run(correct, no_lost_slot="invalid", liveness="valid")
    environment = run(correct, no_lost_slot="invalid:environment", liveness="valid")
    unsure = run(correct, no_lost_slot="valid", liveness="unknown")

    assert blamed.outcome == "flagged"
    assert environment.outcome == "valid"
    assert unsure.outcome == "unknown"


def test_zoo_exit_code_from_outcomes(tmp_path):
    correct = entry("lua", True)
    faulty = entry("check-then-act", False, ("one-slot-per-content",))
    zoo = Zoo([correct, faulty], (1,), tmp_path, Console(), "image")

    zoo.runs = [
        run(correct, liveness="valid"),
        run(faulty, one_slot_per_content="invalid"),
    ]
    assert zoo.exit_code() == 0
    zoo.runs[0] = run(correct, liveness="unknown")
    assert zoo.exit_code() == 3
    zoo.runs[1] = run(faulty, one_slot_per_content="valid")
    assert zoo.exit_code() == 1
    zoo.runs = zoo.runs[:1]
    # Fewer runs than planned (interrupted or failed): not a pass.
    zoo.runs[0] = run(correct, liveness="valid")
    assert zoo.exit_code() == 2


def test_strategy_table_cells():
    faulty = entry("check-then-act", False, ("one-slot-per-content",))
    runs = [
        run(faulty, one_slot_per_content="invalid", stores_agree="invalid"),
        run(faulty, one_slot_per_content="valid", stores_agree="valid"),
    ]

    row = strategy_table(runs)["check-then-act"]

    assert row["one-slot-per-content"]["label"] == "missed"
    assert row["one-slot-per-content"]["invalid"] == 1
    assert row["stores-agree"]["label"] == "invalid"
    assert row["runs"] == 2


def test_replay_matches_when_saved_invalid_invariants_recur():
    saved = {"no-lost-slot": "invalid", "liveness": "invalid", "no-hang": "valid"}

    assert matches(saved, {"no-lost-slot": "invalid", "liveness": "invalid"})
    assert matches(
        saved, {"no-lost-slot": "invalid", "liveness": "invalid", "no-hang": "invalid"}
    )
    assert not matches(saved, {"no-lost-slot": "invalid", "liveness": "valid"})


def test_replay_of_valid_run_needs_nothing_invalid():
    saved = {"no-lost-slot": "valid", "liveness": "unknown"}

    assert matches(saved, {"no-lost-slot": "valid", "liveness": "valid"})
    assert not matches(saved, {"no-lost-slot": "invalid", "liveness": "valid"})


def test_correct_run_with_data_lost_by_design_is_environment(tmp_path):
    correct = entry("lua", True)
    lost = run(correct, no_lost_slot="unknown", liveness="invalid:environment")
    lost.data_lost = True
    kept = run(correct, no_lost_slot="unknown", liveness="valid")

    zoo = Zoo([correct], (1, 2), tmp_path, Console(), "image")
    zoo.runs = [lost, run(correct, liveness="valid")]

    assert lost.outcome == "environment"
    assert kept.outcome == "unknown"
    assert zoo.exit_code() == 0
