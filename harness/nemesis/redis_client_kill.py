"""CLIENT KILL of the coordinators' Redis connections.

The coordinators reach Redis through the RESP proxy, so Redis sees the
proxy's connections. The proxy closes a client's connection as soon as its
upstream one ends, so each killed connection reaches a coordinator, which
must reconnect and repeat or fail the command in flight.
"""

from __future__ import annotations

import random

from harness.faults import RedisClientKillFault
from harness.nemesis.base import FaultContext
from harness.nemesis.shielded import run_shielded


async def inject(
    fault: RedisClientKillFault, ctx: FaultContext, rng: random.Random
) -> None:
    ctx.window("redis-client-kill", "start", targets=["redis"], method="client-kill")
    killed = 0
    try:
        killed = await run_shielded(ctx.cluster.kill_redis_clients)
    finally:
        ctx.window(
            "redis-client-kill",
            "end",
            targets=["redis"],
            method="client-kill",
            killed=killed,
        )
