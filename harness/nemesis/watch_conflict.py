"""WATCH conflicts injected by the RESP proxy for the length of the storm.

The proxy makes a neutral write to one watched key just before it forwards
EXEC, so the transaction aborts although no data changed. It needs nothing
from the coordinator, so it works on a user's image too.
"""

from __future__ import annotations

import asyncio

from harness.nemesis.base import FaultContext
from harness.scenario import WatchConflictFault


async def run_watch_conflicts(fault: WatchConflictFault, ctx: FaultContext) -> int:
    """Turns injection on for the storm and off at its end; returns the count."""
    before = (await asyncio.to_thread(ctx.cluster.proxy_stats))["conflicts_injected"]
    await asyncio.to_thread(ctx.cluster.set_watch_conflict_fraction, fault.fraction)
    ctx.window(
        "watch-conflict", "start", targets=["redis-proxy"], fraction=fault.fraction
    )
    try:
        await asyncio.sleep(max(0.0, ctx.storm_left_s()))
    finally:
        await asyncio.shield(
            asyncio.to_thread(ctx.cluster.set_watch_conflict_fraction, 0.0)
        )
        stats = await asyncio.to_thread(ctx.cluster.proxy_stats)
        injected = stats["conflicts_injected"] - before
        ctx.window("watch-conflict", "end", targets=["redis-proxy"], injected=injected)
    return injected
