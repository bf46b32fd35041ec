"""A restart of instances: a graceful stop, then a start at once."""

from __future__ import annotations

import asyncio
import random

from harness.faults import RestartFault
from harness.nemesis.base import FaultContext
from harness.nemesis.shielded import run_shielded


async def inject(fault: RestartFault, ctx: FaultContext, rng: random.Random) -> None:
    targets = ctx.resolve_targets(fault.targets, rng)
    ctx.window("restart", "start", targets=targets, method="docker-stop-start")
    try:
        # Together, as a deployment that restarts several instances would.
        await asyncio.gather(
            *(
                run_shielded(ctx.cluster.restart_instance, name, fault.grace_s)
                for name in targets
            )
        )
    finally:
        ctx.window("restart", "end", targets=targets, method="docker-stop-start")
