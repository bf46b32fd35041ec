"""Instances frozen by the cgroup freezer (docker pause), thawed after ``duration_s``.

A frozen instance keeps its connections open but replies to nothing, as a
process stalled by a long garbage collection or a starved VM would.
"""

from __future__ import annotations

import asyncio
import random

from harness.errors import PreflightError
from harness.faults import PauseFault
from harness.nemesis.base import FaultContext
from harness.nemesis.shielded import run_shielded


def preflight(fault: PauseFault) -> None:
    # Imported here so that a run without pause faults never reads the doctor.
    from harness.doctor import check_freezer

    check = check_freezer()
    if check.status != "ok":
        raise PreflightError(
            f"fault 'pause' needs the cgroup freezer, which this machine lacks "
            f"({check.detail}); use kind: sigstop, which stops the processes "
            "by signal instead"
        )


async def inject(fault: PauseFault, ctx: FaultContext, rng: random.Random) -> None:
    targets = ctx.resolve_targets(fault.targets, rng)
    ctx.window("pause", "start", targets=targets, method="docker-pause")
    try:
        for name in targets:
            await run_shielded(ctx.cluster.pause_instance, name)
        await asyncio.sleep(ctx.hold_s(fault.duration_s))
    finally:
        for name in targets:
            await run_shielded(ctx.cluster.unpause_instance, name)
        ctx.window("pause", "end", targets=targets, method="docker-pause")
