"""double-completion (faulty): completion is decided by a read after the assignment.

The assignment itself is atomic and correct. But every reply path that finds
the batch full appends batch_ready: the request that took the last slot, a
concurrent request on another instance, and every later replay.
"""

from __future__ import annotations

from harness.coordinator.keys import BATCH_READY_STREAM, BatchKeys
from harness.coordinator.strategies import scripts
from harness.coordinator.strategies.base import RedisStrategy, SlotResult, mapping_json


class DoubleCompletionStrategy(RedisStrategy):
    """Take a slot atomically, then read SCARD and emit batch_ready if it is 0."""

    name = "double-completion"
    correct = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._take_slot_script = self.redis.register_script(
            scripts.TAKE_SLOT_WITHOUT_COMPLETION
        )

    async def take_slot(self, keys: BatchKeys, kind: str, item_id: str) -> SlotResult:
        reply = await self._take_slot_script(
            keys=self.take_slot_keys(keys, kind),
            args=self.take_slot_args(keys, item_id),
        )
        return self.slot_result(reply)

    async def assign_content(
        self, batch_id: str, text_storage_id: str, file_name: str
    ) -> SlotResult:
        result = await super().assign_content(batch_id, text_storage_id, file_name)
        await self._complete_if_full(BatchKeys(batch_id))
        return result

    async def record_failure(self, batch_id: str, failure_id: str) -> SlotResult:
        result = await super().record_failure(batch_id, failure_id)
        await self._complete_if_full(BatchKeys(batch_id))
        return result

    async def _complete_if_full(self, keys: BatchKeys) -> None:
        # The bug: this read and the XADD below are separate steps, and nothing
        # records that some request already emitted.
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.scard(keys.available)
            pipe.hgetall(keys.assignments)
            pipe.hgetall(keys.failures)
            remaining, assignments, failures = await pipe.execute()
        if remaining != 0:
            return
        await self.redis.xadd(
            BATCH_READY_STREAM,
            {
                "batch_id": keys.batch_id,
                "assignments": mapping_json(assignments),
                "failures": mapping_json(failures),
            },
        )
        self.metrics.count_completion()
