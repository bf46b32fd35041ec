"""Every process of the instances stopped by SIGSTOP from the host, then SIGCONT.

The signals go to host PIDs (from ``docker top``), which reaches the
container's init process too: inside its own PID namespace, init ignores
SIGSTOP from its children, but not from an ancestor namespace.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

from harness.errors import PreflightError
from harness.faults import SigstopFault
from harness.nemesis.base import FaultContext

CAP_KILL = 5


def can_signal_any_process() -> bool:
    """Tells whether this process may signal processes of other users (CAP_KILL)."""
    if os.geteuid() == 0:
        return True
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_KILL & 1)
    return False


def preflight(fault: SigstopFault) -> None:
    if not can_signal_any_process():
        raise PreflightError(
            "fault 'sigstop' signals container processes by host PID, which needs "
            "root or CAP_KILL, and this process has neither; run the harness as "
            "root, or use kind: pause (the cgroup freezer through the Docker API)"
        )


async def inject(fault: SigstopFault, ctx: FaultContext, rng: random.Random) -> None:
    targets = ctx.resolve_targets(fault.targets, rng)
    cluster = ctx.cluster
    pids: list[int] = []
    for name in targets:
        pids.extend(await asyncio.to_thread(cluster.instance_process_pids, name))
    ctx.window("sigstop", "start", targets=targets, method="host-pid", pids=pids)
    stopped: list[int] = []
    try:
        stopped = cluster.signal_processes(pids, signal.SIGSTOP)
        await asyncio.sleep(ctx.hold_s(fault.duration_s))
    finally:
        # os.kill does not block, so no cancellation can cut this short.
        cluster.signal_processes(pids, signal.SIGCONT)
        ctx.window("sigstop", "end", targets=targets, method="host-pid", pids=stopped)
