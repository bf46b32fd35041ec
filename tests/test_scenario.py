"""Scenario files: validation errors name the file, the field and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.coordinator.strategies import CORRECT_STRATEGIES
from harness.errors import ScenarioError
from harness.faults import KillFault
from harness.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def smoke_text() -> str:
    return (ROOT / "scenarios/smoke.yaml").read_text()


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.yaml")))
def test_shipped_scenarios_validate(path):
    scenario = load_scenario(path)

    assert scenario.name == path.stem


def test_faulty_scenarios_expect_invalid():
    for path in (ROOT / "scenarios").glob("*.yaml"):
        scenario = load_scenario(path)
        if scenario.strategy in CORRECT_STRATEGIES:
            assert scenario.expect.invalid == [], path
        else:
            assert scenario.expect.invalid != [], path


def test_smoke_fields():
    scenario = load_scenario(ROOT / "scenarios/smoke.yaml")

    assert scenario.strategy == "watch"
    assert scenario.instances == 3
    assert [fault.kind for fault in scenario.faults] == [
        "kill",
        "watch-conflict",
        "redis-restart",
    ]
    assert isinstance(scenario.faults[0], KillFault)
    assert scenario.faults[0].align == "new-event"


def test_negative_rate_names_field(tmp_path):
    path = write(tmp_path, smoke_text().replace("rate: 400", "rate: -5"))

    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)

    message = str(caught.value)
    assert str(path) in message
    assert "field 'rate'" in message
    assert "(got -5)" in message


def test_unknown_field_rejected(tmp_path):
    path = write(tmp_path, smoke_text() + "colour: blue\n")

    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)

    assert "field 'colour'" in str(caught.value)


def test_unknown_fault_kind_lists_allowed(tmp_path):
    text = smoke_text().replace("kind: watch-conflict", "kind: meteor")
    path = write(tmp_path, text)

    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)

    message = str(caught.value)
    assert "faults.1" in message
    assert "'kill', 'stop', 'restart', 'pause'" in message


def test_restart_after_storm_rejected(tmp_path):
    path = write(tmp_path, smoke_text().replace("start_s: 16", "start_s: 99"))

    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)

    assert "faults[2] (redis-restart) starts at start_s=99.0, after the storm" in str(
        caught.value
    )


def test_missing_file_names_path(tmp_path):
    with pytest.raises(ScenarioError) as caught:
        load_scenario(tmp_path / "nope.yaml")

    assert "nope.yaml" in str(caught.value)
    assert "not found" in str(caught.value)


def test_top_level_list_rejected(tmp_path):
    with pytest.raises(ScenarioError) as caught:
        load_scenario(write(tmp_path, "- 1\n- 2\n"))

    assert "expected a mapping" in str(caught.value)


def test_strategy_override_drops_expect():
    faulty = load_scenario(ROOT / "scenarios/check-then-act.yaml")

    same = faulty.with_overrides(strategy="check-then-act")
    other = faulty.with_overrides(strategy="lua", seed=3, instances=2)

    assert same.expect.invalid == ["one-slot-per-content"]
    assert other.expect.invalid == []
    assert (other.strategy, other.seed, other.instances) == ("lua", 3, 2)


def test_bad_override_names_option():
    scenario = load_scenario(ROOT / "scenarios/smoke.yaml")

    with pytest.raises(ScenarioError) as caught:
        scenario.with_overrides(instances=0)

    assert "command-line options" in str(caught.value)
    assert "field 'instances'" in str(caught.value)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(write(tmp_path, text))
    return str(caught.value)


def test_kill_target_must_be_instance(tmp_path):
    text = smoke_text().replace(
        "targets: random-instance", "targets: [coordinator-1, coordinator-9]"
    )

    message = error_of(tmp_path, text)

    assert "faults[0] (kill) target 'coordinator-9' is not an instance" in message
    assert "coordinator-1 to coordinator-3" in message


def test_duplicate_key_rejected(tmp_path):
    message = error_of(tmp_path, smoke_text() + "seed: 8\n")

    assert "key 'seed' is given twice" in message


def test_non_utf8_file_rejected(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")

    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)

    assert "not UTF-8 text" in str(caught.value)


def test_boolean_instances_rejected(tmp_path):
    message = error_of(
        tmp_path, smoke_text().replace("instances: 3", "instances: true")
    )

    assert "field 'instances'" in message


def test_infinite_start_rejected(tmp_path):
    text = smoke_text().replace("every_s: 2.5,", "every_s: 2.5, start_s: .inf,")

    message = error_of(tmp_path, text)

    assert "start_s" in message


def test_empty_storm_rejected(tmp_path):
    text = (
        smoke_text()
        .replace("contents_per_batch: 45", "contents_per_batch: 0")
        .replace("failures_per_batch: 2", "failures_per_batch: 0")
    )

    assert "would send nothing" in error_of(tmp_path, text)


def test_expect_overlap_rejected(tmp_path):
    text = smoke_text().replace(
        "expect: {}", "expect: {invalid: [liveness], valid: [liveness]}"
    )

    assert "liveness as both invalid and valid" in error_of(tmp_path, text)


def test_long_value_shortened(tmp_path):
    text = smoke_text().replace("name: smoke", "name: " + "x" * 500)

    message = error_of(tmp_path, text)

    assert "field 'name'" in message
    assert len(message) < 600


def test_single_target_name_means_that_instance():
    fault = KillFault(kind="kill", targets="coordinator-2")

    assert fault.targets == ["coordinator-2"]
    assert KillFault(kind="kill", targets="all-instances").targets == "all-instances"


def test_single_unknown_target_name_rejected(tmp_path):
    text = smoke_text().replace("targets: random-instance", "targets: coordinator-9")

    message = error_of(tmp_path, text)

    assert "faults[0] (kill) target 'coordinator-9' is not an instance" in message


def test_repeated_target_rejected(tmp_path):
    text = smoke_text().replace(
        "targets: random-instance", "targets: [coordinator-1, coordinator-1]"
    )

    message = error_of(tmp_path, text)

    assert "faults[0] (kill) names coordinator-1 more than once in targets" in message
