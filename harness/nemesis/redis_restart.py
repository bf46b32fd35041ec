"""A restart of the Redis server, with the coordinators' connections cut.

Redis keeps its data across the restart when the scenario sets ``aof``
(append-only file, fsync on every write); with ``volatile`` the data is gone,
and checkers blame the environment, not the coordinator, for what is lost.
"""

from __future__ import annotations

import asyncio

from harness.nemesis.base import FaultContext
from harness.scenario import RedisRestartFault


async def run_redis_restart(fault: RedisRestartFault, ctx: FaultContext) -> int:
    await ctx.sleep_until(fault.at_s)
    ctx.window("redis-restart", "start", targets=["redis"])
    try:
        await asyncio.shield(asyncio.to_thread(ctx.cluster.restart_redis))
    finally:
        ctx.window("redis-restart", "end", targets=["redis"])
    return 1
