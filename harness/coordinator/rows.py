"""Group commit of slot_assignments rows: concurrent requests share one INSERT.

Every Redis strategy writes a row before each 200 reply, so a row per request
would cost about as much as the Redis step itself. Rows that arrive while
earlier INSERTs run are written together in the next one, so each request
still waits for its own row to commit, and an idle instance writes at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg

# One statement for any number of rows. ON CONFLICT DO NOTHING also covers two
# equal rows in one group, because the second conflicts with the first.
INSERT_ROWS = """
    INSERT INTO slot_assignments
        (batch_id, slot_id, text_storage_id, file_name, instance_id)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
    ON CONFLICT DO NOTHING
"""

MAX_GROUP_ROWS = 500


@dataclass(frozen=True, order=True)
class AssignmentRow:
    """One slot_assignments row.

    Groups are sorted, so two groups that contain the same rows lock their
    index entries in the same order and cannot deadlock on each other.
    """

    batch_id: str
    slot_id: str
    text_storage_id: str
    file_name: str


class AssignmentRowWriter:
    """Insert rows in groups, with at most ``max_statements`` INSERTs at once."""

    def __init__(
        self, pool: asyncpg.Pool, instance_id: str, max_statements: int
    ) -> None:
        self.pool = pool
        self.instance_id = instance_id
        self.max_statements = max_statements
        self._pending: list[tuple[AssignmentRow, asyncio.Future[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def insert(self, row: AssignmentRow) -> None:
        """Insert the row and return once it is committed or found present.

        Raises the INSERT's error, for every row of the failed group.
        """
        future = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        if len(self._tasks) < self.max_statements:
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # The drain task, not the caller, owns the INSERT, so a cancelled
        # request cannot abandon the other rows of its group.
        await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._pending:
            group = self._pending[:MAX_GROUP_ROWS]
            del self._pending[:MAX_GROUP_ROWS]
            try:
                await self._insert_group(sorted(row for row, _ in group))
            except BaseException as err:
                for _, future in group:
                    if not future.done():
                        future.set_exception(err)
                if isinstance(err, asyncio.CancelledError):
                    raise
                continue
            for _, future in group:
                if not future.done():
                    future.set_result(None)

    async def _insert_group(self, rows: list[AssignmentRow]) -> None:
        await self.pool.execute(
            INSERT_ROWS,
            [row.batch_id for row in rows],
            [row.slot_id for row in rows],
            [row.text_storage_id for row in rows],
            [row.file_name for row in rows],
            [self.instance_id] * len(rows),
        )

    async def close(self) -> None:
        """Wait for the INSERTs in flight; called after the server stopped."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
