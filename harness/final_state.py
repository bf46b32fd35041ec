"""The final state read after settling: batches, completion events, store rows."""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from harness.client import CoordinatorClient

log = logging.getLogger(__name__)

COMPLETION_STREAM = "events:batch-ready"


async def read_batches(
    client: CoordinatorClient, instances: list[str], batch_ids: list[str]
) -> dict[str, Any]:
    """Reads each batch through the coordinator API, trying every instance in turn."""
    batches: dict[str, Any] = {}
    for batch_id in batch_ids:
        for instance in instances:
            op, payload = await client.call(
                "read", instance, "GET", f"/batches/{batch_id}", {"batch_id": batch_id}
            )
            if op.type == "ok" and isinstance(payload, dict):
                batches[batch_id] = payload
                break
    return batches


async def read_completions(redis_url: str) -> list[dict[str, Any]]:
    """Reads every ``batch_ready`` entry of the stream, in stream order."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        entries = await client.xrange(COMPLETION_STREAM, "-", "+")
    finally:
        await client.aclose()
    completions = []
    for entry_id, fields in entries:
        completions.append(
            {
                "id": entry_id,
                "batch_id": fields.get("batch_id"),
                "assignments": _json_field(fields.get("assignments")),
                "failures": _json_field(fields.get("failures")),
            }
        )
    return completions


def _json_field(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


async def read_store_rows(
    dsn: str, batch_ids: list[str]
) -> tuple[dict[str, dict[str, str]] | None, str | None]:
    """Reads the coordinator's Postgres rows; returns (rows, reason if unreadable).

    Only the reference coordinator is known to keep ``slot_assignments``; for a
    user's image the table may not exist, and the stores-agree check reports that.
    """
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as err:
        return None, f"Postgres unreachable: {err}"
    try:
        rows = await conn.fetch(
            "SELECT batch_id, slot_id, text_storage_id FROM slot_assignments "
            "WHERE batch_id = ANY($1::text[])",
            batch_ids,
        )
    except asyncpg.UndefinedTableError:
        return None, "the coordinator keeps no slot_assignments table in Postgres"
    except asyncpg.PostgresError as err:
        return None, f"slot_assignments could not be read: {err}"
    finally:
        await conn.close()
    store: dict[str, dict[str, str]] = {batch_id: {} for batch_id in batch_ids}
    for row in rows:
        store[row["batch_id"]][row["slot_id"]] = row["text_storage_id"]
    return store, None
