"""postgres (correct): slots as rows, taken under a lock on the batch row.

The slot update, the slot_assignments (or slot_failures) row, the batch's
remaining count and, for the last slot, a batch_ready outbox row all commit in
one transaction. A relay task on every instance moves outbox rows to the Redis
stream, and a SET NX marker makes a repeated relay a no-op.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg

from harness.coordinator.errors import BatchNotFound, NoSlot, RegistrationConflict
from harness.coordinator.keys import BATCH_READY_STREAM, BatchKeys
from harness.coordinator.logs import RepeatLimiter
from harness.coordinator.stores import (
    ASSIGNMENT_SCHEMA,
    TRANSIENT_ERRORS,
    ensure_schema,
)
from harness.coordinator.strategies import scripts
from harness.coordinator.strategies.base import (
    BatchState,
    Registration,
    SlotResult,
    Strategy,
    canonical_slot_ids,
    mapping_json,
)

logger = logging.getLogger(__name__)

# Seconds between relay polls for outbox rows that another, possibly dead,
# instance committed; a local commit wakes the relay at once.
RELAY_POLL_S = 0.5
# Seconds stop() waits for the relay task to end.
RELAY_STOP_S = 5.0

POSTGRES_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS batches (
        batch_id text PRIMARY KEY,
        capacity integer NOT NULL,
        slot_ids text NOT NULL,
        remaining integer NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS slots (
        batch_id text NOT NULL REFERENCES batches ON DELETE CASCADE,
        slot_id text NOT NULL,
        state text NOT NULL DEFAULT 'available'
            CHECK (state IN ('available', 'assigned', 'failed')),
        PRIMARY KEY (batch_id, slot_id)
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS slots_available
        ON slots (batch_id, slot_id) WHERE state = 'available'
    """,
    """
    CREATE TABLE IF NOT EXISTS slot_failures (
        batch_id text NOT NULL,
        slot_id text NOT NULL,
        failure_id text NOT NULL,
        instance_id text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (batch_id, slot_id),
        UNIQUE (batch_id, failure_id)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS batch_ready_outbox (
        id bigserial PRIMARY KEY,
        batch_id text NOT NULL UNIQUE,
        assignments text NOT NULL,
        failures text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        relayed_at timestamptz
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS batch_ready_outbox_pending
        ON batch_ready_outbox (id) WHERE relayed_at IS NULL
    """,
)


@dataclass(frozen=True)
class ItemTable:
    """The SQL for one kind of item: contents in slot_assignments, failures in
    slot_failures."""

    state: str
    find_slot: str
    insert: str


CONTENT_TABLE = ItemTable(
    state="assigned",
    find_slot="""
        SELECT slot_id FROM slot_assignments
        WHERE batch_id = $1 AND text_storage_id = $2
    """,
    # $5 is the file name.
    insert="""
        INSERT INTO slot_assignments
            (batch_id, slot_id, text_storage_id, instance_id, file_name)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT DO NOTHING
        RETURNING slot_id
    """,
)

FAILURE_TABLE = ItemTable(
    state="failed",
    find_slot="""
        SELECT slot_id FROM slot_failures WHERE batch_id = $1 AND failure_id = $2
    """,
    insert="""
        INSERT INTO slot_failures (batch_id, slot_id, failure_id, instance_id)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT DO NOTHING
        RETURNING slot_id
    """,
)

# Every transaction that takes a slot locks its batch row first, so takers of
# one batch run one at a time and take their locks in one order: batch row,
# slot row, item row. No taker waits for a lock on a slot row, because such a
# wait (FOR UPDATE without SKIP LOCKED) keeps the lock on each row it rechecks
# and skips. Other waiters whose snapshots still show that row as available
# then wait for it. In duplicate storms that ran a batch out of slots,
# PostgreSQL 15 reported deadlocks among such waits.
# FOR NO KEY UPDATE is the lock that the UPDATE of remaining takes later, so
# the lock is never upgraded. No row means the batch is not registered.
LOCK_BATCH = """
    SELECT remaining FROM batches WHERE batch_id = $1 FOR NO KEY UPDATE
"""

# Under the batch row lock no other taker holds a slot of the batch, so no row
# means that the batch is full. SKIP LOCKED only matters for a writer that does
# not lock the batch row first: this query skips its slot rather than wait.
LOCK_FREE_SLOT = """
    SELECT slot_id FROM slots
    WHERE batch_id = $1 AND state = 'available'
    LIMIT 1
    FOR UPDATE SKIP LOCKED
"""


class PostgresStrategy(Strategy):
    """Keep batches and slots in Postgres and relay batch_ready through an outbox."""

    name = "postgres"
    correct = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._relay_script = self.redis.register_script(scripts.RELAY_BATCH_READY)
        self._relay_wakeup = asyncio.Event()
        self._relay_task: asyncio.Task[None] | None = None
        self._relay_stopping = False
        self._relay_limiter = RepeatLimiter()

    async def start(self) -> None:
        await ensure_schema(self.postgres, ASSIGNMENT_SCHEMA + POSTGRES_SCHEMA)
        self._relay_task = asyncio.create_task(self._relay_loop(), name="outbox-relay")

    async def stop(self) -> None:
        if self._relay_task is None:
            return
        # The flag ends the loop too, because in a test that terminated the
        # Postgres sessions the relay was seen looping on after cancel(): its
        # CancelledError was absorbed on the way (cause not found).
        self._relay_stopping = True
        self._relay_wakeup.set()
        self._relay_task.cancel()
        done, _ = await asyncio.wait({self._relay_task}, timeout=RELAY_STOP_S)
        if not done:
            logger.warning("outbox relay did not stop within %s s", RELAY_STOP_S)
        self._relay_task = None

    async def register_batch(self, batch_id: str, slot_ids: list[str]) -> Registration:
        canonical = canonical_slot_ids(slot_ids)
        async with self.postgres.acquire() as conn, conn.transaction():
            # A concurrent registration of the same batch waits here for the
            # first one to commit, then reads the row and compares the slots.
            created = await conn.fetchval(
                """
                INSERT INTO batches (batch_id, capacity, slot_ids, remaining)
                VALUES ($1, $2, $3, $2)
                ON CONFLICT DO NOTHING
                RETURNING true
                """,
                batch_id,
                len(slot_ids),
                canonical,
            )
            if created:
                await conn.execute(
                    """
                    INSERT INTO slots (batch_id, slot_id)
                    SELECT $1, unnest($2::text[])
                    """,
                    batch_id,
                    slot_ids,
                )
                return Registration.CREATED
            stored = await conn.fetchval(
                "SELECT slot_ids FROM batches WHERE batch_id = $1", batch_id
            )
        if stored != canonical:
            raise RegistrationConflict()
        return Registration.EXISTS

    async def assign_content(
        self, batch_id: str, text_storage_id: str, file_name: str
    ) -> SlotResult:
        return await self._take_slot(
            CONTENT_TABLE, batch_id, text_storage_id, (file_name,)
        )

    async def record_failure(self, batch_id: str, failure_id: str) -> SlotResult:
        return await self._take_slot(FAILURE_TABLE, batch_id, failure_id, ())

    async def _take_slot(
        self, table: ItemTable, batch_id: str, item_id: str, extra: tuple[str, ...]
    ) -> SlotResult:
        async with self.postgres.acquire() as conn:
            # Replays, the common case under duplicate delivery, lock nothing.
            existing = await conn.fetchval(table.find_slot, batch_id, item_id)
            if existing is not None:
                return SlotResult(existing, created=False)
            transaction = conn.transaction()
            await transaction.start()
            try:
                slot, completed = await self._take_in_transaction(
                    conn, table, batch_id, item_id, extra
                )
            except BaseException:
                await _rollback_after_error(transaction)
                raise
            if slot is None:
                # A copy of this item committed first; its row is visible now.
                await transaction.rollback()
                existing = await conn.fetchval(table.find_slot, batch_id, item_id)
                if existing is None:
                    raise RuntimeError(
                        f"item {item_id!r} of batch {batch_id!r} conflicted on "
                        "insert but has no row; check slot_assignments and "
                        "slot_failures for rows left from another strategy"
                    )
                return SlotResult(existing, created=False)
            await transaction.commit()
        if completed:
            self._relay_wakeup.set()
        return SlotResult(slot, created=True)

    async def _take_in_transaction(
        self,
        conn: asyncpg.Connection,
        table: ItemTable,
        batch_id: str,
        item_id: str,
        extra: tuple[str, ...],
    ) -> tuple[str | None, bool]:
        """Take a slot; return (slot, whether the batch is now full).

        The slot is None when a copy of the item has a slot already, and the
        caller must roll back and read that slot.
        """
        remaining = await conn.fetchval(LOCK_BATCH, batch_id)
        if remaining is None:
            raise BatchNotFound()
        slot = None
        if remaining > 0:
            slot = await conn.fetchval(LOCK_FREE_SLOT, batch_id)
        if slot is None:
            await self._raise_unless_item_found(conn, table, batch_id, item_id)
            return None, False

        inserted = await conn.fetchval(
            table.insert, batch_id, slot, item_id, self.settings.instance_id, *extra
        )
        if inserted is None:
            return None, False
        await conn.execute(
            "UPDATE slots SET state = $3 WHERE batch_id = $1 AND slot_id = $2",
            batch_id,
            slot,
            table.state,
        )
        # Takers of this batch run one at a time under the batch row lock, so
        # exactly one of them reads 0, after all others committed.
        remaining = await conn.fetchval(
            """
            UPDATE batches SET remaining = remaining - 1
            WHERE batch_id = $1 RETURNING remaining
            """,
            batch_id,
        )
        if remaining == 0:
            await self._insert_outbox_row(conn, batch_id)
        return slot, remaining == 0

    async def _raise_unless_item_found(
        self, conn: asyncpg.Connection, table: ItemTable, batch_id: str, item_id: str
    ) -> None:
        """Raise NoSlot, unless a copy of the item has a slot."""
        # A copy of this item may have taken the last slot while this request
        # waited for the batch row; that is a replay, not a refusal.
        if await conn.fetchval(table.find_slot, batch_id, item_id) is None:
            raise NoSlot()

    async def _insert_outbox_row(self, conn: asyncpg.Connection, batch_id: str) -> None:
        assignments, failures = await self._read_items(conn, batch_id)
        await conn.execute(
            """
            INSERT INTO batch_ready_outbox (batch_id, assignments, failures)
            VALUES ($1, $2, $3)
            """,
            batch_id,
            mapping_json(assignments),
            mapping_json(failures),
        )

    async def read_batch(self, batch_id: str) -> BatchState:
        async with self.postgres.acquire() as conn:
            # One snapshot for all four reads.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                capacity = await conn.fetchval(
                    "SELECT capacity FROM batches WHERE batch_id = $1", batch_id
                )
                if capacity is None:
                    raise BatchNotFound()
                available = await conn.fetch(
                    """
                    SELECT slot_id FROM slots
                    WHERE batch_id = $1 AND state = 'available'
                    """,
                    batch_id,
                )
                assignments, failures = await self._read_items(conn, batch_id)
        return BatchState(
            batch_id=batch_id,
            capacity=capacity,
            available=[row["slot_id"] for row in available],
            assignments=assignments,
            failures=failures,
        )

    async def _read_items(
        self, conn: asyncpg.Connection, batch_id: str
    ) -> tuple[dict[str, str], dict[str, str]]:
        assignments = await conn.fetch(
            "SELECT slot_id, text_storage_id FROM slot_assignments WHERE batch_id = $1",
            batch_id,
        )
        failures = await conn.fetch(
            "SELECT slot_id, failure_id FROM slot_failures WHERE batch_id = $1",
            batch_id,
        )
        return (
            {row["slot_id"]: row["text_storage_id"] for row in assignments},
            {row["slot_id"]: row["failure_id"] for row in failures},
        )

    async def _relay_loop(self) -> None:
        while not self._relay_stopping:
            self._relay_wakeup.clear()
            try:
                while await self.relay_once():
                    pass
            except (*TRANSIENT_ERRORS, asyncpg.PostgresError) as err:
                self._warn_relay_error(err)
            except Exception:
                # A background task has no caller to report to; log and go on.
                logger.exception("outbox relay failed; retrying in %s s", RELAY_POLL_S)
            try:
                async with asyncio.timeout(RELAY_POLL_S):
                    await self._relay_wakeup.wait()
            except TimeoutError:
                pass

    async def relay_once(self) -> bool:
        """Move one unrelayed outbox row to the stream; return False if none is left.

        The row stays locked until the relay marks it, so two relays never
        handle one row at once. A crash after the XADD and before the commit
        leaves the row unrelayed, and the SET NX marker stops the next relay
        from appending it a second time.
        """
        async with self.postgres.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """
                SELECT id, batch_id, assignments, failures FROM batch_ready_outbox
                WHERE relayed_at IS NULL
                ORDER BY id
                LIMIT 1
                FOR UPDATE SKIP LOCKED
                """
            )
            if row is None:
                return False
            keys = BatchKeys(row["batch_id"])
            emitted = await self._relay_script(
                keys=[keys.ready_relayed, BATCH_READY_STREAM],
                args=[
                    row["batch_id"],
                    row["assignments"],
                    row["failures"],
                    self.settings.key_ttl_s,
                ],
            )
            await conn.execute(
                "UPDATE batch_ready_outbox SET relayed_at = now() WHERE id = $1",
                row["id"],
            )
        if emitted:
            self.metrics.count_completion()
        else:
            logger.info("batch_ready of batch %s was already relayed", row["batch_id"])
        return True

    def _warn_relay_error(self, err: BaseException) -> None:
        suppressed = self._relay_limiter.admit(type(err).__name__)
        if suppressed is not None:
            logger.warning(
                "outbox relay failed: %s: %s; retrying in %s s "
                "(%d similar warnings suppressed)",
                type(err).__name__,
                err,
                RELAY_POLL_S,
                suppressed,
            )


async def _rollback_after_error(transaction) -> None:
    """Roll back, keeping the caller's error when the connection is gone as well."""
    try:
        await transaction.rollback()
    except (*TRANSIENT_ERRORS, asyncpg.InterfaceError):
        # Postgres aborts the open transaction of a lost connection itself.
        pass
