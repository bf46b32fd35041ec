"""The `harness` command as a user runs it: exit codes, interrupts, cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from harness.topology.labels import LABEL_OWNER, LABEL_PROJECT, LABEL_RUN, PROJECT

ROOT = Path(__file__).resolve().parents[2]
HARNESS = [sys.executable, "-m", "harness"]


def harness(*args: str, env: dict | None = None, timeout: float = 120):
    return subprocess.run(
        [*HARNESS, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def project_containers(client) -> list:
    return client.containers.list(
        all=True, filters={"label": f"{LABEL_PROJECT}={PROJECT}"}
    )


def test_bad_scenario_exits_2_naming_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (ROOT / "scenarios/smoke.yaml").read_text().replace("rate: 400", "rate: -5")
    )

    result = harness("run", str(bad), env={"DOCKER_HOST": "unix:///nonexistent.sock"})

    assert result.returncode == 2
    # Validation comes first: the message names the field, not Docker.
    assert "field 'rate'" in result.stderr
    assert "-5" in result.stderr
    assert "Docker" not in result.stderr


def test_unknown_strategy_exits_2(tmp_path):
    result = harness("run", "scenarios/smoke.yaml", "--strategy", "nope")

    assert result.returncode == 2
    assert "field 'strategy'" in result.stderr
    assert "'nope'" in result.stderr


def test_docker_unreachable_exits_2():
    result = harness(
        "run", "scenarios/smoke.yaml", env={"DOCKER_HOST": "unix:///nonexistent.sock"}
    )

    assert result.returncode == 2
    assert "Docker is unreachable" in result.stderr


def test_scenario_schema_lists_fields():
    result = harness("scenario", "schema")

    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert "duplicates" in schema["properties"]
    assert "strategy" in schema["required"]


@pytest.mark.docker
def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_removes_containers_and_keeps_history(tmp_path):
    client = docker.from_env()
    scenario = tmp_path / "long.yaml"
    scenario.write_text(
        (ROOT / "scenarios/smoke.yaml")
        .read_text()
        .replace("duration_s: 30", "duration_s: 120")
    )
    process = subprocess.Popen(
        [*HARNESS, "run", str(scenario), "--reports", str(tmp_path / "reports")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A suite started in the background by a non-interactive shell inherits
        # SIGINT ignored, and Python then installs no handler for it.
        preexec_fn=_default_sigint,
    )
    try:
        # Interrupt once the storm is under way: the history has content operations.
        deadline = time.monotonic() + 120
        history = None
        while time.monotonic() < deadline and history is None:
            found = list((tmp_path / "reports").glob("*/history.jsonl"))
            if found and '"f":"content"' in found[0].read_text():
                history = found[0]
            time.sleep(0.5)
        assert history is not None, "the storm never started"
        run_id = history.parent.name
        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        output, _ = process.communicate(timeout=120)
        exit_s = time.monotonic() - interrupted
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()

    assert process.returncode == 130, output
    # Teardown of six containers takes seconds; a restart still polling a
    # removed container would hold the exit for its whole 60 s deadline.
    assert exit_s < 30, output
    left = client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})
    assert left == []
    networks = client.networks.list(filters={"label": f"{LABEL_RUN}={run_id}"})
    assert networks == []
    results = json.loads((history.parent / "results.json").read_text())
    assert results["status"] == "interrupted"

    # The interrupted run is still checkable: no final state, so unknown verdicts.
    check = harness("check", str(history.parent))
    assert check.returncode == 3, check.stdout + check.stderr
    assert "final state" in check.stdout


@pytest.mark.docker
def test_down_removes_orphans_only():
    client = docker.from_env()
    dead_pid = "999999999"
    live_pid = str(os.getpid())
    orphan = client.networks.create(
        "slot-harness-test-orphan",
        labels={LABEL_PROJECT: PROJECT, LABEL_RUN: "orphan-run", LABEL_OWNER: dead_pid},
    )
    live = client.networks.create(
        "slot-harness-test-live",
        labels={LABEL_PROJECT: PROJECT, LABEL_RUN: "live-run", LABEL_OWNER: live_pid},
    )
    try:
        result = harness("down")
        names = {network.name for network in client.networks.list()}
        assert result.returncode == 0
        assert "slot-harness-test-orphan" not in names
        assert "slot-harness-test-live" in names
    finally:
        for network in (orphan, live):
            try:
                network.remove()
            except docker.errors.NotFound:
                pass


@pytest.mark.docker
def test_doctor_reports_docker_ok():
    result = harness("doctor")

    assert result.returncode == 0, result.stdout
    docker_line = next(line for line in result.stdout.splitlines() if "docker" in line)
    assert "ok" in docker_line
    assert "disk" in result.stdout


def test_doctor_docker_unreachable_exits_2():
    result = harness("doctor", env={"DOCKER_HOST": "unix:///nonexistent.sock"})

    assert result.returncode == 2
    assert "start the Docker daemon" in result.stdout


@pytest.mark.docker
def test_images_list_shows_runtime_up_to_date():
    result = harness("images", "list")

    assert result.returncode == 0, result.stderr
    runtime_lines = [line for line in result.stdout.splitlines() if "runtime" in line]
    assert any("yes" in line for line in runtime_lines)


@pytest.mark.docker
def test_missing_coordinator_image_exits_2_early():
    result = harness(
        "run", "scenarios/smoke.yaml", "--coordinator-image", "does-not-exist:1.0"
    )

    assert result.returncode == 2
    assert "'does-not-exist:1.0' is not in this Docker Engine" in result.stderr
    # Nothing started: the check runs before the cluster comes up.
    assert "starting Redis" not in result.stdout


def test_check_accepts_history_file(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    header = {"format": "slot-harness-history", "format_version": 1, "scenario": {}}
    (run_dir / "history.jsonl").write_text(json.dumps(header) + "\n")

    result = harness("check", str(run_dir / "history.jsonl"))

    # No operations: nothing was tested, so every verdict is unknown.
    assert result.returncode == 3, result.stdout + result.stderr
    assert "nothing was tested" in result.stdout


def test_check_corrupt_final_state_exits_2(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    header = {"format": "slot-harness-history", "format_version": 1, "scenario": {}}
    (run_dir / "history.jsonl").write_text(json.dumps(header) + "\n")
    (run_dir / "final_state.json").write_text('{"batches": {')

    result = harness("check", str(run_dir))

    assert result.returncode == 2
    assert "final_state.json is not valid JSON" in result.stderr
    assert "delete it to check the history alone" in result.stderr


def test_unwritable_reports_exits_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")

    result = harness("run", "scenarios/smoke.yaml", "--reports", str(blocker))

    assert result.returncode == 2
    assert "cannot create the run folder" in result.stderr


@pytest.mark.docker
def test_malformed_image_reference_exits_2(tmp_path):
    result = harness(
        "run",
        "scenarios/smoke.yaml",
        "--coordinator-image",
        "UPPER::bad",
        "--reports",
        str(tmp_path),
    )

    assert result.returncode == 2, result.stderr
    assert "'UPPER::bad' is not a valid image reference" in result.stderr
    assert "Traceback" not in result.stderr


def test_yaml_error_keeps_bracketed_text(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")

    result = harness("scenario", "validate", str(broken))

    assert result.returncode == 2
    assert "name: [unclosed" in result.stderr
    assert "expected ',' or ']'" in result.stderr
