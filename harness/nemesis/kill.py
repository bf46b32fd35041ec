"""SIGKILL of coordinator instances, and their restart after ``duration_s``.

A kill lands wherever the instance is, requests in flight included: the
fault that exposes a slot popped in one step and recorded in the next.
"""

from __future__ import annotations

import asyncio
import random

from harness.faults import KillFault
from harness.nemesis.base import FaultContext


async def inject(fault: KillFault, ctx: FaultContext, rng: random.Random) -> None:
    targets = ctx.resolve_targets(fault.targets, rng)
    pids = {
        name: await asyncio.to_thread(ctx.cluster.instance_pid, name)
        for name in ctx.cluster.instance_names
    }
    aligned = None
    delay_ms = 0.0
    if fault.align == "new-event":
        aligned = await ctx.deliveries.next(max(0.1, ctx.storm_left_s()))
        if aligned is not None and fault.targets == "random-instance":
            targets = [aligned[1]]
        delay_ms = rng.uniform(0, fault.align_max_ms)
        await asyncio.sleep(delay_ms / 1000)
    ctx.window(
        "kill",
        "start",
        targets=targets,
        after_new_event=aligned[0] if aligned else None,
        delay_ms=round(delay_ms, 2) if aligned else None,
    )
    methods: list[str] = []
    try:
        for target in targets:
            methods.append(
                await asyncio.to_thread(
                    ctx.cluster.kill_instance, target, pids.get(target)
                )
            )
        await asyncio.sleep(ctx.hold_s(fault.duration_s))
    except asyncio.CancelledError:
        # The run is stopping and its teardown removes every container,
        # so a restart here would only delay the exit.
        ctx.window("kill", "end", targets=targets, method=methods, restarted=False)
        raise
    # Restart before the next occurrence, so the cluster is whole again for
    # the redelivery pass and the final read.
    for target in targets:
        await asyncio.to_thread(ctx.cluster.start_instance, target)
    ctx.window("kill", "end", targets=targets, method=methods)
