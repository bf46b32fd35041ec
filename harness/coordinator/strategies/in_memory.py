"""in-memory (faulty): each instance assigns from its own copy of the batch.

An instance loads a batch from Redis at its first request for that batch, and
from then on trusts its local copy. It writes every assignment to Redis but never reads
the other instances' writes back, so two instances hand out the same slot to
different contents, and give one content a different slot each.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass

from harness.coordinator.errors import BatchNotFound, NoSlot
from harness.coordinator.keys import BATCH_READY_STREAM, CONTENT, FAILURE, BatchKeys
from harness.coordinator.strategies.base import RedisStrategy, SlotResult, mapping_json


@dataclass
class LocalBatch:
    """One instance's view of a batch: free slots in slot-id order, and the items."""

    available: deque[str]
    items: dict[str, dict[str, str]]


class InMemoryStrategy(RedisStrategy):
    """Assign from a per-instance tracker and write the result through to Redis."""

    name = "in-memory"
    correct = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # TODO: the tracker is never evicted, so memory grows with every batch
        # an instance has seen.
        self._batches: dict[str, LocalBatch] = {}
        self._load_locks: dict[str, asyncio.Lock] = {}

    async def take_slot(self, keys: BatchKeys, kind: str, item_id: str) -> SlotResult:
        local = await self._local_batch(keys)
        items = local.items[kind]
        existing = items.get(item_id)
        if existing is not None:
            return SlotResult(existing, created=False)
        if not local.available:
            raise NoSlot()

        # The bug: this slot is free only in this instance's copy.
        slot = local.available.popleft()
        items[item_id] = slot
        try:
            await self._write_through(keys, kind, item_id, slot, local)
        except BaseException:
            items.pop(item_id, None)
            local.available.appendleft(slot)
            raise
        return SlotResult(slot, created=True)

    async def _write_through(
        self, keys: BatchKeys, kind: str, item_id: str, slot: str, local: LocalBatch
    ) -> None:
        by_slot, by_item = keys.item_hashes(kind)
        ttl = self.settings.key_ttl_s
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(keys.available, slot)
            pipe.hset(by_slot, slot, item_id)
            pipe.hset(by_item, item_id, slot)
            pipe.expire(by_slot, ttl)
            pipe.expire(by_item, ttl)
            full = not local.available
            if full:
                # The entry contains this instance's view of the batch.
                pipe.xadd(BATCH_READY_STREAM, self._local_completion(keys, local))
            await pipe.execute()
        if full:
            self.metrics.count_completion()

    def _local_completion(self, keys: BatchKeys, local: LocalBatch) -> dict[str, str]:
        assignments = {slot: item for item, slot in local.items[CONTENT].items()}
        failures = {slot: item for item, slot in local.items[FAILURE].items()}
        return {
            "batch_id": keys.batch_id,
            "assignments": mapping_json(assignments),
            "failures": mapping_json(failures),
        }

    async def _local_batch(self, keys: BatchKeys) -> LocalBatch:
        local = self._batches.get(keys.batch_id)
        if local is not None:
            return local
        lock = self._load_locks.setdefault(keys.batch_id, asyncio.Lock())
        async with lock:
            local = self._batches.get(keys.batch_id)
            if local is None:
                local = await self._load(keys)
                self._batches[keys.batch_id] = local
        return local

    async def _load(self, keys: BatchKeys) -> LocalBatch:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(keys.metadata, "slot_ids")
            pipe.smembers(keys.available)
            pipe.hgetall(keys.content)
            pipe.hgetall(keys.failure_ids)
            slot_ids, available, content, failure_ids = await pipe.execute()
        if slot_ids is None:
            # Not cached, so a batch registered later is found on the next request.
            raise BatchNotFound()
        free = deque(slot for slot in json.loads(slot_ids) if slot in available)
        return LocalBatch(free, {CONTENT: content, FAILURE: failure_ids})
