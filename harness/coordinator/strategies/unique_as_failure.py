"""unique-as-failure (faulty): postgres, with a unique violation taken for a full batch.

The assignment row goes in with a plain INSERT, without ON CONFLICT DO
NOTHING. Two concurrent copies of one content can both find no row before
either commits. The second waits at the batch row's lock, takes a free slot
once the first commits, and its INSERT fails with a unique violation on
(batch_id, text_storage_id). The contract makes that an idempotent success: a 200 reply
naming the first copy's slot. This strategy rolls back and replies
``409 no_slot`` instead, so a content is rejected as if the batch were full
while it already has a slot.
"""

from __future__ import annotations

from dataclasses import replace

import asyncpg

from harness.coordinator.errors import NoSlot
from harness.coordinator.strategies.base import SlotResult
from harness.coordinator.strategies.postgres import (
    CONTENT_TABLE,
    ItemTable,
    PostgresStrategy,
)

# $5 is the file name. Without ON CONFLICT a second row for the content raises
# UniqueViolationError.
PLAIN_INSERT_CONTENT_TABLE = replace(
    CONTENT_TABLE,
    insert="""
        INSERT INTO slot_assignments
            (batch_id, slot_id, text_storage_id, instance_id, file_name)
        VALUES ($1, $2, $3, $4, $5)
        RETURNING slot_id
    """,
)


class UniqueAsFailureStrategy(PostgresStrategy):
    """Insert content rows with a plain INSERT, so a unique violation becomes no_slot.

    Shows under duplicate storms: a copy that lost the race to its own
    content gets ``409 no_slot`` while other copies get ``200`` with the
    content's slot, which ``one-slot-per-content`` reports. Failures keep the
    correct ON CONFLICT DO NOTHING insert.
    """

    name = "unique-as-failure"
    correct = False

    async def assign_content(
        self, batch_id: str, text_storage_id: str, file_name: str
    ) -> SlotResult:
        return await self._take_slot(
            PLAIN_INSERT_CONTENT_TABLE, batch_id, text_storage_id, (file_name,)
        )

    async def _take_in_transaction(
        self,
        conn: asyncpg.Connection,
        table: ItemTable,
        batch_id: str,
        item_id: str,
        extra: tuple[str, ...],
    ) -> tuple[str | None, bool]:
        try:
            return await super()._take_in_transaction(
                conn, table, batch_id, item_id, extra
            )
        except asyncpg.UniqueViolationError as err:
            # The bug: a copy of this content committed its row first, which
            # makes this a replay, but the violation is taken for a full batch.
            # The caller rolls back, so the slot this transaction locked stays
            # free.
            raise NoSlot() from err
