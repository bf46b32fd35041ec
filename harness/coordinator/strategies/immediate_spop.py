"""immediate-spop (faulty): the original service's bug, reproduced as it was written.

The transaction WATCHes the batch, opens MULTI on a pipeline, and then calls
``await redis.spop(...)`` on the client instead of queueing it. The client runs
SPOP at once on another pooled connection, which changes a watched key, so
EXEC always aborts with WatchError. The code takes that WatchError for a full
batch and replies 409 no_slot. The popped slot is in neither hash: it is lost,
and batches never complete.
"""

from __future__ import annotations

import asyncio

from redis.exceptions import WatchError

from harness.coordinator.errors import BatchNotFound, NoSlot
from harness.coordinator.keys import BATCH_READY_STREAM, CONTENT, BatchKeys
from harness.coordinator.strategies.base import RedisStrategy, SlotResult, mapping_json


class ImmediateSpopStrategy(RedisStrategy):
    """WATCH / MULTI / EXEC with the SPOP run outside the transaction."""

    name = "immediate-spop"
    correct = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Each request keeps its WATCH connection while it takes a second one
        # for the SPOP. Half the pool per side keeps a storm from taking every
        # connection for WATCH and then waiting forever for a second one.
        self._in_flight = asyncio.Semaphore(
            max(1, self.settings.redis_max_connections // 2)
        )

    async def take_slot(self, keys: BatchKeys, kind: str, item_id: str) -> SlotResult:
        async with self._in_flight:
            return await self._take_slot(keys, kind, item_id)

    async def _take_slot(self, keys: BatchKeys, kind: str, item_id: str) -> SlotResult:
        by_slot, by_item = keys.item_hashes(kind)
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(keys.available, by_slot, by_item)
            if not await pipe.exists(keys.metadata):
                raise BatchNotFound()
            existing = await pipe.hget(by_item, item_id)
            if existing is not None:
                return SlotResult(existing, created=False)
            pipe.multi()

            # The bug: this SPOP is not queued on ``pipe``. It runs now, on
            # another connection, and modifies the watched set.
            slot = await self.redis.spop(keys.available)
            if slot is None:
                raise NoSlot()
            remaining = await self.redis.scard(keys.available)
            pipe.hset(by_slot, slot, item_id)
            pipe.hset(by_item, item_id, slot)
            pipe.expire(by_slot, self.settings.key_ttl_s)
            pipe.expire(by_item, self.settings.key_ttl_s)
            if remaining == 0:
                fields = await self._completion_fields(keys, kind, item_id, slot)
                pipe.xadd(BATCH_READY_STREAM, fields)
            try:
                await pipe.execute()
            except WatchError as err:
                # The original read an aborted EXEC as "no slot left".
                self.metrics.count_watch_conflict()
                raise NoSlot() from err
        if remaining == 0:
            self.metrics.count_completion()
        return SlotResult(slot, created=True)

    async def _completion_fields(
        self, keys: BatchKeys, kind: str, item_id: str, slot: str
    ) -> dict[str, str]:
        assignments = await self.redis.hgetall(keys.assignments)
        failures = await self.redis.hgetall(keys.failures)
        (assignments if kind == CONTENT else failures)[slot] = item_id
        return {
            "batch_id": keys.batch_id,
            "assignments": mapping_json(assignments),
            "failures": mapping_json(failures),
        }
