"""SCRIPT FLUSH on Redis: every loaded Lua script is forgotten.

A coordinator that calls EVALSHA must load its script again after the
NOSCRIPT reply, as it must after a Redis restart. One that caches the SHA
and never reloads fails every request from then on.
"""

from __future__ import annotations

import random

from harness.faults import RedisScriptFlushFault
from harness.nemesis.base import FaultContext
from harness.nemesis.shielded import run_shielded


async def inject(
    fault: RedisScriptFlushFault, ctx: FaultContext, rng: random.Random
) -> None:
    ctx.window("redis-script-flush", "start", targets=["redis"], method="script-flush")
    try:
        await run_shielded(ctx.cluster.flush_redis_scripts)
    finally:
        ctx.window(
            "redis-script-flush", "end", targets=["redis"], method="script-flush"
        )
