"""check-then-act (faulty): the dedup read runs before, and apart from, the atomic step.

Concurrent copies of one content all read "no slot yet", and each then pops
and records its own slot, so one content ends up in several slots. The
content -> slot hash keeps only the last one, and Postgres keeps the first.
"""

from __future__ import annotations

from harness.coordinator.keys import BatchKeys
from harness.coordinator.strategies import scripts
from harness.coordinator.strategies.base import RedisStrategy, SlotResult


class CheckThenActStrategy(RedisStrategy):
    """HGET the dedup hash, then pop and record with a Lua script that skips dedup."""

    name = "check-then-act"
    correct = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pop_script = self.redis.register_script(scripts.POP_AND_RECORD_UNCHECKED)

    async def take_slot(self, keys: BatchKeys, kind: str, item_id: str) -> SlotResult:
        _, by_item = keys.item_hashes(kind)
        existing = await self.redis.hget(by_item, item_id)
        if existing is not None:
            return SlotResult(existing, created=False)

        # The bug: another copy of the item may take a slot between the read
        # above and this script.
        reply = await self._pop_script(
            keys=self.take_slot_keys(keys, kind),
            args=self.take_slot_args(keys, item_id),
        )
        return self.slot_result(reply)
