"""watch (correct): optimistic WATCH / MULTI / EXEC with bounded, jittered retries.

This is the original service's final design. Every write, the batch_ready
entry included, is queued inside MULTI, so EXEC applies all of them or none.
"""

from __future__ import annotations

import asyncio
import random

from redis.exceptions import WatchError

from harness.coordinator.errors import BatchNotFound, Contention, NoSlot
from harness.coordinator.keys import BATCH_READY_STREAM, CONTENT, BatchKeys
from harness.coordinator.strategies.base import RedisStrategy, SlotResult, mapping_json

# Backoff before retry n (from 0) is uniform in [0, min(CAP, BASE * 2**n)]
# seconds ("full jitter"), so that the losers of one EXEC do not collide again.
# With the cap, a request that uses all WATCH_MAX_RETRIES sleeps about
# WATCH_MAX_RETRIES * CAP / 2 seconds in total on average.
BACKOFF_BASE_S = 0.005
BACKOFF_CAP_S = 0.25

# Transactions one instance runs at once. Each EXEC aborts every other open
# transaction of its batch, so more of them mostly add conflicts. In the
# 900-request, 3-instance storm of test_correct_storms.py on a 2-core machine,
# a limit of 64 gave about 4,500 conflicts and a limit of 8 about 470.
MAX_TRANSACTIONS = 8


def backoff_s(attempt: int, rng: random.Random) -> float:
    return rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))


class WatchStrategy(RedisStrategy):
    """Take a slot in a WATCH transaction and retry it when a watched key changes."""

    name = "watch"
    correct = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._rng = random.Random()
        self._in_flight = asyncio.Semaphore(MAX_TRANSACTIONS)

    async def take_slot(self, keys: BatchKeys, kind: str, item_id: str) -> SlotResult:
        max_retries = self.settings.watch_max_retries
        for attempt in range(max_retries + 1):
            try:
                async with self._in_flight:
                    return await self._attempt(keys, kind, item_id)
            except WatchError:
                self.metrics.count_watch_conflict()
                if attempt == max_retries:
                    break
                self.metrics.count_retry("watch_conflict")
                await asyncio.sleep(backoff_s(attempt, self._rng))
        raise Contention()

    async def _attempt(self, keys: BatchKeys, kind: str, item_id: str) -> SlotResult:
        by_slot, by_item = keys.item_hashes(kind)
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(
                keys.available,
                keys.assignments,
                keys.content,
                keys.failures,
                keys.failure_ids,
            )
            # Few reads keep the window between WATCH and EXEC, and so the
            # chance of a conflict, small.
            existing = await pipe.hget(by_item, item_id)
            if existing is not None:
                return SlotResult(existing, created=False)
            # Two candidates tell whether this slot is the last one.
            candidates = await pipe.srandmember(keys.available, 2)
            if not candidates:
                await self._confirm_no_slot(pipe, keys)
            slot = candidates[0]
            completion = None
            if len(candidates) == 1:
                completion = await self._completion_fields(
                    pipe, keys, kind, item_id, slot
                )

            # Everything below is queued and applied by EXEC only if no watched
            # key changed since WATCH; otherwise EXEC raises WatchError.
            pipe.multi()
            pipe.srem(keys.available, slot)
            pipe.hset(by_slot, slot, item_id)
            pipe.hset(by_item, item_id, slot)
            pipe.expire(by_slot, self.settings.key_ttl_s)
            pipe.expire(by_item, self.settings.key_ttl_s)
            if completion is not None:
                pipe.xadd(BATCH_READY_STREAM, completion)
            await pipe.execute()
        if completion is not None:
            self.metrics.count_completion()
        return SlotResult(slot, created=True)

    async def _confirm_no_slot(self, pipe, keys: BatchKeys) -> None:
        """Raise BatchNotFound or NoSlot, or WatchError to retry."""
        # The metadata is written once at registration, so it needs no WATCH.
        if not await pipe.exists(keys.metadata):
            raise BatchNotFound()
        # The HGET and SRANDMEMBER are separate reads, so a copy of this item
        # may have taken the last slot between them. An empty EXEC raises
        # WatchError if any watched key changed since WATCH.
        pipe.multi()
        await pipe.execute()
        raise NoSlot()

    async def _completion_fields(
        self, pipe, keys: BatchKeys, kind: str, item_id: str, slot: str
    ) -> dict[str, str]:
        """Read the batch under WATCH and add the slot about to be taken."""
        assignments = await pipe.hgetall(keys.assignments)
        failures = await pipe.hgetall(keys.failures)
        (assignments if kind == CONTENT else failures)[slot] = item_id
        return {
            "batch_id": keys.batch_id,
            "assignments": mapping_json(assignments),
            "failures": mapping_json(failures),
        }
