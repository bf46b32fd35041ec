"""A scenario with a fault this machine cannot make, through the command line."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from harness.topology.labels import LABEL_OWNER
from harness.topology.network import netem_available

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]


def test_netem_scenario_exits_2_before_any_container(runtime_image, tmp_path):
    if netem_available():
        pytest.skip("this kernel has sch_netem, so method netem passes preflight")
    scenario = tmp_path / "netem.yaml"
    scenario.write_text(
        (ROOT / "scenarios/zoo/faults/latency.yaml")
        .read_text()
        .replace("method: proxy", "method: netem")
    )
    assert "method: netem" in scenario.read_text()
    reports = tmp_path / "reports"
    client = docker.from_env()
    since = int(time.time()) - 1

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness",
            "run",
            str(scenario),
            "--reports",
            str(reports),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = process.communicate(timeout=120)
    until = int(time.time()) + 1
    created = list(
        client.events(
            since=since,
            until=until,
            decode=True,
            filters={
                "type": "container",
                "event": "create",
                "label": f"{LABEL_OWNER}={process.pid}",
            },
        )
    )

    assert process.returncode == 2, stdout + stderr
    assert (
        "latency method 'netem' needs the kernel's sch_netem qdisc, which this "
        "kernel lacks (tc: qdisc kind is unknown); use method: proxy (the TCP "
        "proxy) or method: auto"
    ) in " ".join(stderr.split())
    assert created == []
    assert not reports.exists() or list(reports.iterdir()) == []
