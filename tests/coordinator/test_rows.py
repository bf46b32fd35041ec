"""Group commit of slot_assignments rows on a real Postgres."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import pytest_asyncio

from harness.coordinator.rows import AssignmentRow, AssignmentRowWriter
from harness.coordinator.stores import ASSIGNMENT_SCHEMA, ensure_schema


@pytest_asyncio.fixture(loop_scope="function")
async def pool(stores):
    pool = await asyncpg.create_pool(stores.database_url, min_size=1, max_size=4)
    try:
        await ensure_schema(pool, ASSIGNMENT_SCHEMA)
        yield pool
    finally:
        await pool.close()


async def test_concurrent_rows_share_statements(stores, pool, monkeypatch):
    writer = AssignmentRowWriter(pool, "w1", max_statements=2)
    group_sizes: list[int] = []
    original = AssignmentRowWriter._insert_group

    async def counting_insert(self, rows):
        group_sizes.append(len(rows))
        await original(self, rows)

    monkeypatch.setattr(AssignmentRowWriter, "_insert_group", counting_insert)
    rows = [AssignmentRow("b1", f"s{i:03d}", f"c{i:03d}", "f.txt") for i in range(200)]
    # Every row twice, as duplicate deliveries would write it.
    await asyncio.gather(*(writer.insert(row) for row in rows + rows))
    await writer.close()

    assert sum(group_sizes) == 400
    assert len(group_sizes) < 400
    stored = await stores.assignment_rows("b1")
    assert stored == {row.slot_id: row.text_storage_id for row in rows}
    instances = await stores.postgres.fetch(
        "SELECT DISTINCT instance_id FROM slot_assignments"
    )
    assert [r["instance_id"] for r in instances] == ["w1"]


async def test_failed_group_fails_its_callers(stores, pool):
    writer = AssignmentRowWriter(pool, "w1", max_statements=1)
    await stores.postgres.execute(
        "ALTER TABLE slot_assignments ADD CONSTRAINT no_bad CHECK (file_name <> 'bad')"
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await writer.insert(AssignmentRow("b1", "s1", "c1", "bad"))
    await writer.insert(AssignmentRow("b1", "s2", "c2", "good"))
    await writer.close()

    assert await stores.assignment_rows("b1") == {"s2": "c2"}
