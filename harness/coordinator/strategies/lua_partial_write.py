"""lua-partial-write (faulty): a script that pops, then errors out on a duplicate.

The script pops a slot first and only then looks for the item's slot. For a
duplicate it returns an error reply, as if an error undid the SPOP the way
DISCARD undoes a MULTI. Redis does not roll a script back: a write made before
an error reply or a Lua ``error()`` stays. So each duplicate delivery loses a
slot, while its HTTP reply is the ordinary replay.
"""

from __future__ import annotations

from redis.exceptions import ResponseError

from harness.coordinator.keys import BatchKeys
from harness.coordinator.strategies import scripts
from harness.coordinator.strategies.base import RedisStrategy, SlotResult

# Start of the script's error reply for an item that has a slot; the slot
# follows it.
ALREADY_ASSIGNED = "ALREADY_ASSIGNED "


class LuaPartialWriteStrategy(RedisStrategy):
    """Take a slot with ``scripts.TAKE_SLOT_POP_FIRST``, reading its error as a replay.

    Every duplicate of a content or failure leaves one slot in no set and no
    hash, which ``no-lost-slot`` reports. A batch that received duplicates
    never has all its slots assigned or failed. When the last available slot
    goes to a new item, the script appends batch_ready for that short batch.
    """

    name = "lua-partial-write"
    correct = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._take_slot_script = self.redis.register_script(scripts.TAKE_SLOT_POP_FIRST)

    async def take_slot(self, keys: BatchKeys, kind: str, item_id: str) -> SlotResult:
        try:
            reply = await self._take_slot_script(
                keys=self.take_slot_keys(keys, kind),
                args=self.take_slot_args(keys, item_id),
            )
        except ResponseError as err:
            message = str(err)
            if not message.startswith(ALREADY_ASSIGNED):
                raise
            # The bug's premise: the error undid the SPOP, so this is a replay.
            return SlotResult(message.removeprefix(ALREADY_ASSIGNED), created=False)
        return self.slot_result(reply)
