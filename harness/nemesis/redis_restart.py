"""A restart of the Redis server, with the coordinators' connections cut.

With ``data: keep`` Redis comes back with its append-only file (fsync on
every write), unless the scenario runs it ``volatile``. With ``data: lose`` its
files are deleted while it is stopped, so it comes back empty, as a server
without persistence would. Checkers blame what is lost that way on the
environment, not on the coordinator.
"""

from __future__ import annotations

import asyncio
import random

from harness.faults import RedisRestartFault
from harness.nemesis.base import FaultContext


async def inject(
    fault: RedisRestartFault, ctx: FaultContext, rng: random.Random
) -> None:
    lose = fault.data == "lose" or ctx.cluster.spec.redis_persistence == "volatile"
    ctx.window("redis-restart", "start", targets=["redis"], data_lost=lose)
    try:
        await asyncio.shield(
            asyncio.to_thread(ctx.cluster.restart_redis, lose_data=fault.data == "lose")
        )
    finally:
        ctx.window("redis-restart", "end", targets=["redis"], data_lost=lose)
