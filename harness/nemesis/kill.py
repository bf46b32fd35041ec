"""SIGKILL of a coordinator instance, and its restart after a pause.

A kill lands wherever the instance is, requests in flight included: the
fault that exposes a slot popped in one step and recorded in the next.
"""

from __future__ import annotations

import asyncio

from harness.nemesis.base import FaultContext
from harness.scenario import KillFault


def pick_target(fault: KillFault, ctx: FaultContext) -> str:
    names = ctx.cluster.instance_names
    if fault.target == "random-instance":
        return ctx.rng.choice(names)
    return fault.target


async def run_kills(fault: KillFault, ctx: FaultContext) -> int:
    """Kills and restarts instances on the schedule while the storm lasts."""
    kills = 0
    offset = fault.start_s + fault.every_s
    while offset < ctx.storm_duration_s:
        await ctx.sleep_until(offset)
        if ctx.storm_left_s() <= 0:
            # Restarts took longer than the period; a kill after the storm
            # meets no traffic and only delays the run.
            break
        target = pick_target(fault, ctx)
        pids = {
            name: await asyncio.to_thread(ctx.cluster.instance_pid, name)
            for name in ctx.cluster.instance_names
        }
        aligned = None
        delay_ms = 0.0
        if fault.align == "new-event":
            aligned = await ctx.deliveries.next(max(0.1, ctx.storm_left_s()))
            if aligned is not None and fault.target == "random-instance":
                target = aligned[1]
            delay_ms = ctx.rng.uniform(0, fault.align_max_ms)
            await asyncio.sleep(delay_ms / 1000)
        ctx.window(
            "kill",
            "start",
            targets=[target],
            after_new_event=aligned[0] if aligned else None,
            delay_ms=round(delay_ms, 2) if aligned else None,
        )
        pid = pids.get(target)
        method = "not-sent"
        try:
            method = await asyncio.to_thread(ctx.cluster.kill_instance, target, pid)
            kills += 1
            await asyncio.sleep(fault.down_s)
        except asyncio.CancelledError:
            # The run is stopping and its teardown removes every container,
            # so a restart here would only delay the exit.
            ctx.window("kill", "end", targets=[target], method=method, restarted=False)
            raise
        # Restart before the next kill, so the cluster is whole again for the
        # redelivery pass and the final read.
        await asyncio.to_thread(ctx.cluster.start_instance, target)
        ctx.window("kill", "end", targets=[target], method=method)
        offset += fault.every_s
    return kills
