"""Fixtures that run coordinator apps in-process against the session's real stores."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp import web

from harness.coordinator import Settings, create_app
from harness.coordinator.app import STATE, AppState
from harness.coordinator.keys import BATCH_READY_STREAM

# Tables any strategy may create; dropped before each test so that every app
# start also exercises schema creation.
TABLES = (
    "batch_ready_outbox",
    "slot_failures",
    "slots",
    "batches",
    "slot_assignments",
)


@dataclass
class StoreAccess:
    """Clients of the session's Redis and Postgres, emptied for one test."""

    redis_url: str
    database_url: str
    redis: aioredis.Redis
    postgres: asyncpg.Connection

    async def batch_ready_entries(self) -> list[dict[str, Any]]:
        """Return the batch_ready entries with their JSON fields decoded."""
        entries = await self.redis.xrange(BATCH_READY_STREAM)
        return [
            {
                "batch_id": fields["batch_id"],
                "assignments": json.loads(fields["assignments"]),
                "failures": json.loads(fields["failures"]),
            }
            for _, fields in entries
        ]

    async def assignment_rows(self, batch_id: str) -> dict[str, str]:
        rows = await self.postgres.fetch(
            "SELECT slot_id, text_storage_id FROM slot_assignments WHERE batch_id = $1",
            batch_id,
        )
        return {row["slot_id"]: row["text_storage_id"] for row in rows}


# Seconds any coordinator test may run before pytest-timeout fails it, so that
# a hang shows up as a failure with a traceback.
TEST_TIMEOUT_S = 60


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_S))


@pytest_asyncio.fixture(loop_scope="function")
async def stores(redis_server, postgres_server) -> AsyncIterator[StoreAccess]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    conn = await asyncpg.connect(postgres_server.url)
    try:
        await client.flushall()
        await conn.execute(f"DROP TABLE IF EXISTS {', '.join(TABLES)} CASCADE")
        yield StoreAccess(redis_server.url, postgres_server.url, client, conn)
    finally:
        await conn.close()
        await client.aclose()


def settings_for(
    stores: StoreAccess, strategy: str, instance_id: str = "c1", **overrides: Any
) -> Settings:
    settings = Settings(
        port=0,
        host="127.0.0.1",
        instance_id=instance_id,
        redis_url=stores.redis_url,
        database_url=stores.database_url,
        strategy=strategy,
        store_retry_s=1.0,
        startup_timeout_s=5.0,
    )
    return replace(settings, **overrides)


@dataclass
class Reply:
    status: int
    body: Any


class Coordinator:
    """One running app and an HTTP client for it."""

    def __init__(self, app: web.Application, url: str, session: aiohttp.ClientSession):
        self.app = app
        self.url = url
        self.session = session

    @property
    def state(self) -> AppState:
        return self.app[STATE]

    async def request(self, method: str, path: str, **kwargs: Any) -> Reply:
        async with self.session.request(method, self.url + path, **kwargs) as response:
            if response.content_type == "application/json":
                body = await response.json()
            else:
                body = await response.text()
            return Reply(response.status, body)

    async def register(self, batch_id: str, slot_ids: Sequence[str]) -> Reply:
        return await self.request(
            "POST", "/batches", json={"batch_id": batch_id, "slot_ids": list(slot_ids)}
        )

    async def content(self, batch_id: str, text_storage_id: str) -> Reply:
        return await self.request(
            "POST",
            f"/batches/{batch_id}/content",
            json={
                "text_storage_id": text_storage_id,
                "file_name": f"{text_storage_id}.txt",
            },
        )

    async def failure(self, batch_id: str, failure_id: str) -> Reply:
        return await self.request(
            "POST", f"/batches/{batch_id}/failures", json={"failure_id": failure_id}
        )

    async def read(self, batch_id: str) -> Reply:
        return await self.request("GET", f"/batches/{batch_id}")

    def metric(self, name: str, labels: dict[str, str]) -> float:
        value = self.state.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@asynccontextmanager
async def running(*all_settings: Settings) -> AsyncIterator[list[Coordinator]]:
    """Start one app per settings on a free 127.0.0.1 port, and stop them after."""
    runners: list[web.AppRunner] = []
    # Enough connections for a storm; every request still goes to loopback.
    connector = aiohttp.TCPConnector(limit=300)
    session = aiohttp.ClientSession(connector=connector)
    coordinators = []
    try:
        for settings in all_settings:
            app = create_app(settings)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            coordinators.append(Coordinator(app, f"http://{host}:{port}", session))
        yield coordinators
    finally:
        await session.close()
        for runner in reversed(runners):
            await runner.cleanup()


@dataclass(frozen=True)
class StormReply:
    content: str
    coordinator: int
    status: int
    body: Any


async def content_storm(
    coordinators: Sequence[Coordinator],
    batch_id: str,
    contents: Sequence[str],
    copies: int,
    seed: int = 7,
) -> list[StormReply]:
    """Send ``copies`` concurrent copies of each content, spread over the apps."""
    rng = random.Random(seed)
    jobs = [
        (content, (index + copy) % len(coordinators))
        for index, content in enumerate(contents)
        for copy in range(copies)
    ]
    rng.shuffle(jobs)

    async def send(content: str, position: int) -> StormReply:
        reply = await coordinators[position].content(batch_id, content)
        return StormReply(content, position, reply.status, reply.body)

    return await asyncio.gather(
        *(send(content, position) for content, position in jobs)
    )


def slots_by_content(replies: Sequence[StormReply]) -> dict[str, set[str]]:
    """Map each content to the set of slots its 200 replies named."""
    slots: dict[str, set[str]] = {}
    for reply in replies:
        if reply.status == 200:
            slots.setdefault(reply.content, set()).add(reply.body["slot_id"])
    return slots
