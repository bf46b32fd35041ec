"""Helpers of the fault end-to-end tests: a fault context on the shared cluster,
short probes of an instance, and the fault windows of a history."""

from __future__ import annotations

import asyncio
import http.client
import time
import urllib.error
from pathlib import Path

from harness.history import HistoryWriter, load_history
from harness.nemesis import FaultContext
from harness.topology import DockerCluster
from harness.topology.docker_cluster import http_json

# Long enough for a healthy instance on a loaded 2-core machine, short enough
# that a frozen one shows within a fault window of a few seconds.
PROBE_TIMEOUT_S = 0.5


def fault_context(
    cluster: DockerCluster, tmp_path: Path, storm_s: float = 30.0
) -> FaultContext:
    """Builds a fault context on the shared cluster, with a history in tmp_path."""
    history = HistoryWriter(tmp_path / "history.jsonl", {"seed": 0})
    return FaultContext(
        cluster=cluster,
        history=history,
        storm_start=time.monotonic(),
        storm_duration_s=storm_s,
    )


def window_phases(tmp_path: Path, kind: str) -> list[dict]:
    """Returns the values of the fault's window lines, in history order."""
    history = load_history(tmp_path / "history.jsonl")
    return [
        op.value for op in history.operations if op.type == "nemesis" and op.f == kind
    ]


def probe_health(base_url: str, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """Requests /health once; returns 'ok', 'timeout', 'refused' or the error."""
    try:
        status, _ = http_json(base_url + "/health", timeout=timeout_s)
    except TimeoutError:
        return "timeout"
    except urllib.error.URLError as err:
        if isinstance(err.reason, TimeoutError):
            return "timeout"
        if isinstance(err.reason, ConnectionRefusedError):
            return "refused"
        return f"error {err.reason!r}"
    except (ConnectionError, http.client.HTTPException) as err:
        return f"error {err!r}"
    return "ok" if status == 200 else f"status {status}"


async def probe_during(
    task: asyncio.Task, ctx: FaultContext, kind: str, base_url: str
) -> list[str]:
    """Probes the instance until the fault task ends; returns the outcomes seen
    while the fault's window was open, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + 60
    while not task.done() and time.monotonic() < deadline:
        if ctx.active.get(kind, 0) > 0:
            outcome = await asyncio.to_thread(probe_health, base_url)
            # The window may have closed while the probe waited.
            if ctx.active.get(kind, 0) > 0:
                seen.append(outcome)
        else:
            await asyncio.sleep(0.05)
    await task
    return seen


def use_strategy(cluster: DockerCluster, strategy: str) -> None:
    """Recreates the coordinators with the strategy unless they run it, then empties
    the stores."""
    if cluster.spec.strategy != strategy:
        cluster.replace_instances(strategy)
    cluster.reset_state()


def register_batch(cluster: DockerCluster, batch_id: str, slots: int) -> None:
    """Registers a batch with slots s00, s01, ... through coordinator-1."""
    status, body = http_json(
        cluster.url("coordinator-1") + "/batches",
        method="POST",
        body={"batch_id": batch_id, "slot_ids": [f"s{i:02d}" for i in range(slots)]},
    )
    assert status == 201, body


def post_content(
    cluster: DockerCluster, name: str, batch_id: str, content_id: str
) -> tuple[int, dict]:
    """Sends one content event to an instance; returns the status and the body."""
    try:
        return http_json(
            cluster.url(name) + f"/batches/{batch_id}/content",
            method="POST",
            body={"text_storage_id": content_id, "file_name": f"{content_id}.txt"},
            timeout=5,
        )
    except urllib.error.HTTPError as err:
        with err:
            return err.code, {"error": err.read().decode(errors="replace")}
