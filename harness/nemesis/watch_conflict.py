"""WATCH conflicts: writes that change no data but abort watching transactions.

``mode: proxy`` has the RESP proxy make a neutral write to one watched key
just before it forwards EXEC, for a fraction of the transactions. It needs
nothing from the coordinator, so it works on a user's image too. ``mode:
writer`` makes the same neutral writes from a background connection to the
batches' slot sets at random times, as a busy neighbour sharing the keys would.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time

import redis.asyncio as aioredis

from harness.faults import WatchConflictFault
from harness.nemesis.base import FaultContext

# The sentinel is added and removed in one MULTI, so no reader ever sees it.
SENTINEL_PREFIX = "harness-writer-sentinel:"


async def inject(
    fault: WatchConflictFault, ctx: FaultContext, rng: random.Random
) -> None:
    if fault.mode == "proxy":
        await _through_proxy(fault, ctx)
    else:
        await _from_writer(fault, ctx, rng)


async def _through_proxy(fault: WatchConflictFault, ctx: FaultContext) -> None:
    cluster = ctx.cluster
    before = (await asyncio.to_thread(cluster.proxy_stats))["conflicts_injected"]
    await asyncio.to_thread(cluster.set_watch_conflict_fraction, fault.fraction)
    ctx.window(
        "watch-conflict",
        "start",
        targets=["redis-proxy"],
        mode="proxy",
        fraction=fault.fraction,
    )
    try:
        await asyncio.sleep(ctx.hold_s(fault.duration_s))
    finally:
        await asyncio.shield(
            asyncio.to_thread(cluster.set_watch_conflict_fraction, 0.0)
        )
        stats = await asyncio.to_thread(cluster.proxy_stats)
        injected = stats["conflicts_injected"] - before
        ctx.window(
            "watch-conflict",
            "end",
            targets=["redis-proxy"],
            mode="proxy",
            injected=injected,
        )


async def _from_writer(
    fault: WatchConflictFault, ctx: FaultContext, rng: random.Random
) -> None:
    hold_s = ctx.hold_s(fault.duration_s)
    # Bounded in count as well as in time, whatever the clock does.
    budget = int(fault.writes_per_s * hold_s) + 1
    keys = [f"batch:{batch_id}:available_slots" for batch_id in ctx.batch_ids]
    client = aioredis.Redis.from_url(ctx.cluster.redis_url(), socket_timeout=2)
    written = 0
    ctx.window(
        "watch-conflict",
        "start",
        targets=["redis"],
        mode="writer",
        writes_per_s=fault.writes_per_s,
    )
    try:
        deadline = time.monotonic() + hold_s
        while keys and written < budget and time.monotonic() < deadline:
            await asyncio.sleep(rng.expovariate(fault.writes_per_s))
            sentinel = SENTINEL_PREFIX + secrets.token_hex(8)
            key = rng.choice(keys)
            try:
                async with client.pipeline(transaction=True) as pipe:
                    pipe.sadd(key, sentinel)
                    pipe.srem(key, sentinel)
                    await pipe.execute()
                written += 1
            except (aioredis.ConnectionError, aioredis.TimeoutError):
                # Redis may be restarting under another fault: go on to the next.
                await asyncio.sleep(0.1)
    finally:
        await asyncio.shield(client.aclose())
        ctx.window(
            "watch-conflict",
            "end",
            targets=["redis"],
            mode="writer",
            injected=written,
        )
