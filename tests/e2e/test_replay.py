"""Replaying a saved run reproduces its verdict, on the shared cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from harness.replay import load_replay, replay_run
from tests.e2e.test_run import run_on

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]


async def test_replay_reproduces_invalid_verdict(cluster, runtime_image, tmp_path):
    saved = await run_on(
        cluster, runtime_image, tmp_path / "saved", strategy="check-then-act", faults=[]
    )
    assert saved.exit_code == 1
    plan = load_replay(saved.run_dir)
    console = Console(width=140, record=True)

    code = await replay_run(
        plan, 2, tmp_path / "replays", console, runtime_image, cluster=cluster
    )

    output = console.export_text()
    assert "one-slot-per-content" in plan.invalid
    assert code == 0
    assert "reproduced on try 1 of 2" in output
    assert len(list((tmp_path / "replays").iterdir())) == 1


async def test_replay_of_valid_run_fails_when_replay_breaks(
    cluster, runtime_image, tmp_path
):
    # A valid run replayed must stay valid: swapping in a faulty strategy
    # under the saved folder makes every try differ.
    saved = await run_on(
        cluster, runtime_image, tmp_path / "saved", strategy="lua", faults=[]
    )
    assert saved.exit_code == 0
    plan = load_replay(saved.run_dir)
    broken = plan.__class__(
        plan.run_dir,
        plan.scenario.with_overrides(strategy="check-then-act"),
        plan.original,
        plan.coordinator_image,
        plan.runtime_image,
    )
    console = Console(width=140, record=True)

    code = await replay_run(
        broken, 2, tmp_path / "replays", console, runtime_image, cluster=cluster
    )

    assert code == 1
    assert "not reproduced in 2 tries" in console.export_text()
    assert len(list((tmp_path / "replays").iterdir())) == 2


def test_replay_of_missing_folder_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "harness", "replay", str(tmp_path / "nope")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "run folder" in result.stderr
    assert "not found" in result.stderr
