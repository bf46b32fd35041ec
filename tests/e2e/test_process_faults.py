"""Coordinator process faults on the shared cluster: each takes effect, then heals."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import datetime
from pathlib import Path

import pytest

from harness.faults import (
    PauseFault,
    RestartFault,
    RollingRestartFault,
    SigstopFault,
    StopFault,
)
from harness.nemesis import pause, restart, rolling_restart, sigstop, stop
from tests.e2e.fault_probes import (
    fault_context,
    probe_during,
    probe_health,
    window_phases,
)

pytestmark = pytest.mark.docker

TARGET = "coordinator-2"


@pytest.fixture
def ctx(cluster, tmp_path):
    context = fault_context(cluster, tmp_path)
    yield context
    context.history.close()


def container_state(cluster, name: str) -> dict:
    container = cluster.members[name].docker
    container.reload()
    return container.attrs["State"]


def docker_time(text: str) -> datetime:
    """Parses Docker's RFC 3339 time, whose fraction has up to 9 digits."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{whole}.{(fraction + '000000')[:6]}+00:00")


def process_state(pid: int) -> str:
    """Returns the state letter of a host process (R, S, T for stopped, ...)."""
    # The field after the parenthesised command name; the name may hold spaces.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def answers_all(cluster) -> dict[str, str]:
    return {name: probe_health(cluster.url(name)) for name in cluster.instance_names}


async def test_pause_freezes_then_thaws(cluster, ctx, tmp_path):
    url = cluster.url(TARGET)
    fault = PauseFault(kind="pause", targets=[TARGET], duration_s=2.0)

    task = asyncio.create_task(pause.inject(fault, ctx, random.Random(1)))
    seen = await probe_during(task, ctx, "pause", url)

    assert "timeout" in seen, seen
    assert container_state(cluster, TARGET)["Status"] == "running"
    assert probe_health(url) == "ok"
    assert [w["phase"] for w in window_phases(tmp_path, "pause")] == ["start", "end"]


async def test_sigstop_stops_every_process(cluster, ctx, tmp_path):
    url = cluster.url(TARGET)
    pids = cluster.instance_process_pids(TARGET)
    fault = SigstopFault(kind="sigstop", targets=[TARGET], duration_s=2.0)
    states_during: list[set[str]] = []

    async def watch_states() -> None:
        while not task.done():
            if ctx.active.get("sigstop", 0) > 0:
                states_during.append({process_state(pid) for pid in pids})
            await asyncio.sleep(0.1)

    task = asyncio.create_task(sigstop.inject(fault, ctx, random.Random(1)))
    watcher = asyncio.create_task(watch_states())
    seen = await probe_during(task, ctx, "sigstop", url)
    await watcher

    assert pids
    assert "timeout" in seen, seen
    assert {"T"} in states_during, states_during
    assert "T" not in {process_state(pid) for pid in pids}
    assert probe_health(url) == "ok"
    windows = window_phases(tmp_path, "sigstop")
    assert [w["phase"] for w in windows] == ["start", "end"]
    assert windows[1]["pids"] == pids


async def test_stop_refuses_then_answers(cluster, ctx, tmp_path):
    url = cluster.url(TARGET)
    before = container_state(cluster, TARGET)
    fault = StopFault(kind="stop", targets=[TARGET], duration_s=2.0, grace_s=2.0)

    task = asyncio.create_task(stop.inject(fault, ctx, random.Random(1)))
    seen = await probe_during(task, ctx, "stop", url)

    assert "refused" in seen, seen
    after = container_state(cluster, TARGET)
    assert after["StartedAt"] != before["StartedAt"]
    # SIGTERM let the coordinator shut down by itself: exit code 0, not 137.
    assert after["ExitCode"] == 0
    assert probe_health(cluster.url(TARGET)) == "ok"
    assert [w["phase"] for w in window_phases(tmp_path, "stop")] == ["start", "end"]


async def test_restart_replaces_processes(cluster, ctx, tmp_path):
    names = cluster.instance_names
    before = {name: container_state(cluster, name) for name in names}
    fault = RestartFault(kind="restart", targets="all-instances", grace_s=2.0)

    await restart.inject(fault, ctx, random.Random(1))

    after = {name: container_state(cluster, name) for name in names}
    for name in names:
        assert after[name]["StartedAt"] != before[name]["StartedAt"], name
        assert after[name]["Pid"] != before[name]["Pid"], name
    assert answers_all(cluster) == dict.fromkeys(names, "ok")
    windows = window_phases(tmp_path, "restart")
    assert [w["phase"] for w in windows] == ["start", "end"]
    assert windows[0]["targets"] == names


async def test_rolling_restart_one_at_a_time(cluster, ctx, tmp_path):
    names = cluster.instance_names
    before = {name: container_state(cluster, name) for name in names}
    fault = RollingRestartFault(kind="rolling-restart", grace_s=2.0, gap_s=0.2)

    await rolling_restart.inject(fault, ctx, random.Random(1))

    after = {name: container_state(cluster, name) for name in names}
    for name in names:
        assert after[name]["StartedAt"] != before[name]["StartedAt"], name
    # Each instance stopped only after the one before it had started again.
    for previous, following in itertools.pairwise(names):
        stopped = docker_time(after[following]["FinishedAt"])
        assert stopped > docker_time(after[previous]["StartedAt"]), following
    assert answers_all(cluster) == dict.fromkeys(names, "ok")
    windows = window_phases(tmp_path, "rolling-restart")
    assert [w["phase"] for w in windows] == ["start", "end"]
    assert windows[1]["restarted"] == names
