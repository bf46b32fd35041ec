"""A graceful stop of instances (SIGTERM, SIGKILL after ``grace_s``), start after.

Unlike a kill, the instance gets the chance to finish the requests in flight
and close its store connections. Connections made while it is down are refused.
"""

from __future__ import annotations

import asyncio
import random

from harness.faults import StopFault
from harness.nemesis.base import FaultContext
from harness.nemesis.shielded import run_shielded


async def inject(fault: StopFault, ctx: FaultContext, rng: random.Random) -> None:
    targets = ctx.resolve_targets(fault.targets, rng)
    ctx.window("stop", "start", targets=targets, method="docker-stop")
    try:
        # Shielded, so a cancelled run never starts an instance that a stop
        # still running in its thread would then take down.
        await asyncio.gather(
            *(
                run_shielded(ctx.cluster.stop_instance, name, fault.grace_s)
                for name in targets
            )
        )
        await asyncio.sleep(ctx.hold_s(fault.duration_s))
    finally:
        await asyncio.gather(
            *(run_shielded(ctx.cluster.start_instance, name) for name in targets)
        )
        ctx.window("stop", "end", targets=targets, method="docker-stop")
