"""pop-then-record (faulty): SPOP in one round trip, the record in a later one.

A claim key (SET NX EX) keeps concurrent copies of an item from popping twice.
The winner pops a slot, inserts the Postgres row, and only then records the
slot in the Redis hashes. Nothing puts the slot back if the process dies or
a store call fails between the SPOP and the record: that slot is lost for
good, and the batch can never complete.
"""

from __future__ import annotations

import asyncio
import time

from harness.coordinator.errors import BatchNotFound, Contention, NoSlot
from harness.coordinator.keys import BATCH_READY_STREAM, CONTENT, FAILURE, BatchKeys
from harness.coordinator.strategies import scripts
from harness.coordinator.strategies.base import RedisStrategy, SlotResult

# Seconds a claim lives; a crashed winner blocks its item this long.
CLAIM_TTL_S = 10
# Seconds a request that lost the claim polls for the winner's record.
CLAIM_WAIT_S = 2.0
CLAIM_POLL_S = 0.02


class PopThenRecordStrategy(RedisStrategy):
    """Claim the item, SPOP, insert the Postgres row, then record in Redis."""

    name = "pop-then-record"
    correct = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._record_script = self.redis.register_script(scripts.RECORD_POPPED_SLOT)

    async def assign_content(
        self, batch_id: str, text_storage_id: str, file_name: str
    ) -> SlotResult:
        return await self._take_slot(
            BatchKeys(batch_id), CONTENT, text_storage_id, file_name
        )

    async def take_slot(self, keys: BatchKeys, kind: str, item_id: str) -> SlotResult:
        return await self._take_slot(keys, kind, item_id, file_name=None)

    async def _take_slot(
        self, keys: BatchKeys, kind: str, item_id: str, file_name: str | None
    ) -> SlotResult:
        by_slot, by_item = keys.item_hashes(kind)
        claim = keys.claim(kind, item_id)
        found = await self._claim_or_find(keys, kind, item_id, file_name)
        if found is not None:
            return found

        # Round trip 1: the slot leaves the available set here.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.spop(keys.available)
            pipe.scard(keys.available)
            slot, remaining = await pipe.execute()
        if slot is None:
            await self.redis.delete(claim)
            raise NoSlot()

        # The bug: until the script below runs, the slot is in no hash, and an
        # error or a kill here loses it.
        await self._insert_row_if_content(keys, kind, slot, item_id, file_name)
        emitted = await self._record_script(
            keys=[
                by_slot,
                by_item,
                keys.assignments,
                keys.failures,
                BATCH_READY_STREAM,
                claim,
            ],
            args=[
                item_id,
                slot,
                self.settings.key_ttl_s,
                keys.batch_id,
                "1" if remaining == 0 else "0",
            ],
        )
        if emitted:
            self.metrics.count_completion()
        return SlotResult(slot, created=True)

    async def _claim_or_find(
        self, keys: BatchKeys, kind: str, item_id: str, file_name: str | None
    ) -> SlotResult | None:
        """Return the item's recorded slot, or None once this request has the claim.

        A request that finds the claim taken polls for the winner's record and
        raises Contention after CLAIM_WAIT_S.
        """
        _, by_item = keys.item_hashes(kind)
        claim = keys.claim(kind, item_id)
        deadline = time.monotonic() + CLAIM_WAIT_S
        while True:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.exists(keys.metadata)
                pipe.hget(by_item, item_id)
                pipe.set(claim, self.settings.instance_id, nx=True, ex=CLAIM_TTL_S)
                exists, existing, claimed = await pipe.execute()
            if not exists or existing is not None:
                if claimed:
                    await self.redis.delete(claim)
                if not exists:
                    raise BatchNotFound()
                await self._insert_row_if_content(
                    keys, kind, existing, item_id, file_name
                )
                return SlotResult(existing, created=False)
            if claimed:
                return None
            if time.monotonic() >= deadline:
                raise Contention()
            self.metrics.count_retry("claim_wait")
            await asyncio.sleep(CLAIM_POLL_S)

    async def _insert_row_if_content(
        self,
        keys: BatchKeys,
        kind: str,
        slot: str,
        item_id: str,
        file_name: str | None,
    ) -> None:
        if kind == FAILURE:
            return
        assert file_name is not None, "a content assignment needs its file name"
        await self.insert_assignment_row(keys.batch_id, slot, item_id, file_name)
