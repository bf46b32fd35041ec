"""Every instance restarted in turn, each ready again before the next one stops.

This is how a deployment rolls out a new version: at most one instance is
down at a time, so a correct coordinator keeps serving through it.
"""

from __future__ import annotations

import asyncio
import random

from harness.faults import RollingRestartFault
from harness.nemesis.base import FaultContext
from harness.nemesis.shielded import run_shielded


async def inject(
    fault: RollingRestartFault, ctx: FaultContext, rng: random.Random
) -> None:
    names = ctx.cluster.instance_names
    restarted: list[str] = []
    ctx.window("rolling-restart", "start", targets=names, gap_s=fault.gap_s)
    try:
        for number, name in enumerate(names):
            if number:
                await asyncio.sleep(fault.gap_s)
            # run_shielded() lets a cancelled run wait until this instance is back.
            await run_shielded(ctx.cluster.restart_instance, name, fault.grace_s)
            restarted.append(name)
    finally:
        ctx.window("rolling-restart", "end", targets=names, restarted=restarted)
