"""lua (correct): one Lua script dedups, pops, records and completes atomically."""

from __future__ import annotations

from harness.coordinator.keys import BatchKeys
from harness.coordinator.strategies import scripts
from harness.coordinator.strategies.base import RedisStrategy, SlotResult


class LuaStrategy(RedisStrategy):
    """Take a slot with ``scripts.TAKE_SLOT``.

    Redis runs a script without interleaving other commands, so no other
    request can see the slot popped but unrecorded, and only the request that
    empties the set appends batch_ready. redis-py's Script object reloads the
    script when Redis replies NOSCRIPT (after a restart or SCRIPT FLUSH).
    """

    name = "lua"
    correct = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._take_slot_script = self.redis.register_script(scripts.TAKE_SLOT)

    async def take_slot(self, keys: BatchKeys, kind: str, item_id: str) -> SlotResult:
        reply = await self._take_slot_script(
            keys=self.take_slot_keys(keys, kind),
            args=self.take_slot_args(keys, item_id),
        )
        return self.slot_result(reply)
