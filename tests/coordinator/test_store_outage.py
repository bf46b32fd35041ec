"""Store outages: 503 replies, retries across a restart, lost scripts and sessions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.coordinator.conftest import running, settings_for
from tests.servers import Server, free_port, start_redis


def start_redis_on(port: int, data_dir: Path) -> Server:
    """Start a redis-server of this test's own on a given port."""
    return start_redis(data_dir, port)


@pytest.fixture
def own_redis(tmp_path):
    servers = [start_redis_on(free_port(), tmp_path)]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


async def test_redis_down_health_and_unavailable(stores, own_redis):
    settings = settings_for(
        stores, "lua", redis_url=own_redis[0].url, store_retry_s=0.3
    )
    async with running(settings) as [coordinator]:
        await coordinator.register("b1", ["s1"])
        await asyncio.to_thread(own_redis[0].stop)
        health = await coordinator.request("GET", "/health")
        content = await coordinator.content("b1", "c1")
        retries = coordinator.metric(
            "coordinator_retries_total", {"strategy": "lua", "reason": "store_error"}
        )

    assert health.status == 503
    assert health.body["status"] == "unavailable"
    assert health.body["detail"].startswith("Redis: ")
    assert content.status == 503
    assert content.body["error"] == "unavailable"
    assert "content 'c1' of batch 'b1' failed" in content.body["detail"]
    assert retries >= 1.0


async def test_request_retried_across_redis_restart(stores, own_redis, tmp_path):
    port = own_redis[0].port
    settings = settings_for(
        stores, "lua", redis_url=own_redis[0].url, store_retry_s=5.0
    )
    async with running(settings) as [coordinator]:
        await asyncio.to_thread(own_redis[0].stop)

        async def restart_later() -> None:
            await asyncio.sleep(0.5)
            own_redis.append(await asyncio.to_thread(start_redis_on, port, tmp_path))

        restart = asyncio.create_task(restart_later())
        registered = await coordinator.register("b1", ["s1"])
        await restart
        content = await coordinator.content("b1", "c1")

    assert registered.status == 201
    assert content.body == {"slot_id": "s1", "created": True}


async def test_lua_script_reloaded_after_flush(stores):
    async with running(settings_for(stores, "lua")) as [coordinator]:
        await coordinator.register("b1", ["s1", "s2"])
        await coordinator.content("b1", "c1")
        await stores.redis.script_flush()
        reply = await coordinator.content("b1", "c2")

    assert reply.status == 200
    assert reply.body["created"] is True


@pytest.mark.parametrize("strategy", ["lua", "postgres"])
async def test_killed_postgres_sessions_replaced(stores, strategy):
    async with running(settings_for(stores, strategy)) as [coordinator]:
        await coordinator.register("b1", ["s1", "s2"])
        await coordinator.content("b1", "c1")
        terminated = await stores.postgres.fetchval(
            """
            SELECT count(*) FROM (
                SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'
            ) AS killed
            """
        )
        reply = await coordinator.content("b1", "c2")

    assert terminated >= 1
    assert reply.status == 200
    assert reply.body["created"] is True
