"""Latency in the RESP proxy and the TCP relay, in front of real Redis and Postgres."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from harness.proxy.config import RelayConfig
from harness.proxy.latency import ALL_CLIENTS
from harness.proxy.tcp import TcpRelay, serve_relay
from tests.proxy.conftest import StartProxy
from tests.servers import Server

pytestmark = [pytest.mark.stores, pytest.mark.asyncio(loop_scope="session")]

DELAY_MS = 150.0
# Round trips on loopback take well under this when nothing delays them.
FAST_MS = 60.0

StartRelay = Callable[..., Awaitable[TcpRelay]]


@pytest.fixture
async def start_relay() -> AsyncIterator[StartRelay]:
    """Return a function that starts TCP relays on free 127.0.0.1 ports."""
    relays: list[TcpRelay] = []

    async def start(upstream_port: int, max_connections: int = 64) -> TcpRelay:
        relay = await serve_relay(
            RelayConfig(
                upstream_host="127.0.0.1",
                upstream_port=upstream_port,
                listen_host="127.0.0.1",
                listen_port=0,
                control_host="127.0.0.1",
                control_port=0,
                max_connections=max_connections,
                upstream_connect_timeout_s=2.0,
            )
        )
        relays.append(relay)
        return relay

    yield start
    for relay in relays:
        await relay.close()


async def control(port: int, method: str, path: str, body: Any = None):
    async with aiohttp.ClientSession() as http:
        async with http.request(
            method, f"http://127.0.0.1:{port}{path}", json=body
        ) as response:
            return response.status, await response.json()


async def connect_when_ready(dsn: str) -> asyncpg.Connection:
    """Connect, waiting out a session server that is still starting up."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return await asyncpg.connect(dsn)
        except asyncpg.CannotConnectNowError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def ping_ms(client: aioredis.Redis) -> float:
    started = time.monotonic()
    assert await client.ping() is True
    return (time.monotonic() - started) * 1000


# --- the RESP proxy -----------------------------------------------------------------


async def test_resp_proxy_delays_all_clients(start_proxy: StartProxy):
    proxy = await start_proxy()

    async with aioredis.Redis(port=proxy.port) as client:
        before = await ping_ms(client)
        status, body = await control(
            proxy.control_port, "POST", "/latency", {"delay_ms": DELAY_MS}
        )
        assert status == 200
        assert body == {
            "latency": {ALL_CLIENTS: {"delay_ms": DELAY_MS, "jitter_ms": 0.0}}
        }
        during = await ping_ms(client)
        status, body = await control(
            proxy.control_port, "POST", "/latency/clear", {"clients": None}
        )
        assert status == 200
        assert body == {"latency": {}}
        after = await ping_ms(client)

    assert before < FAST_MS
    assert during >= DELAY_MS
    assert after < FAST_MS
    assert proxy.stats()["delayed_chunks"] == 1


async def test_resp_proxy_delays_only_named_client(start_proxy: StartProxy):
    proxy = await start_proxy()

    async with aioredis.Redis(port=proxy.port) as client:
        # 127.0.0.2 is not this client, so it passes undelayed.
        await control(
            proxy.control_port,
            "POST",
            "/latency",
            {"delay_ms": DELAY_MS, "clients": ["127.0.0.2"]},
        )
        other = await ping_ms(client)
        await control(
            proxy.control_port,
            "POST",
            "/latency",
            {"delay_ms": DELAY_MS, "clients": ["127.0.0.1"]},
        )
        named = await ping_ms(client)
        await control(
            proxy.control_port, "POST", "/latency/clear", {"clients": ["127.0.0.1"]}
        )
        cleared = await ping_ms(client)
        _, stats = await control(proxy.control_port, "GET", "/stats")

    assert other < FAST_MS
    assert named >= DELAY_MS
    assert cleared < FAST_MS
    assert stats["latency"] == {"127.0.0.2": {"delay_ms": DELAY_MS, "jitter_ms": 0.0}}


async def test_resp_proxy_rejects_invalid_latency(start_proxy: StartProxy):
    proxy = await start_proxy()

    status, body = await control(
        proxy.control_port, "POST", "/latency", {"delay_ms": -5}
    )
    clear_status, clear_body = await control(
        proxy.control_port, "POST", "/latency/clear", {"clients": 3}
    )

    assert status == 400
    assert body["error"] == "bad_request"
    assert body["detail"].startswith("delay_ms is -5")
    assert clear_status == 400
    assert clear_body["detail"].startswith("clients is 3")
    assert proxy.latency.snapshot() == {}


# --- the TCP relay ------------------------------------------------------------------


async def test_relay_passes_redis_unchanged(start_relay, redis_server: Server):
    relay = await start_relay(redis_server.port)

    async with aioredis.Redis(port=relay.port) as client:
        await client.set("relay-test:key", "value", ex=60)
        value = await client.get("relay-test:key")

    assert value == b"value"
    assert relay.stats()["connections"] == 1


async def test_relay_delays_postgres_queries(start_relay, postgres_server: Server):
    relay = await start_relay(postgres_server.port)
    dsn = postgres_server.url.replace(f":{postgres_server.port}/", f":{relay.port}/")
    connection = await connect_when_ready(dsn)
    try:
        started = time.monotonic()
        assert await connection.fetchval("SELECT 1") == 1
        before = (time.monotonic() - started) * 1000

        status, _ = await control(
            relay.control_port,
            "POST",
            "/latency",
            {"delay_ms": DELAY_MS, "clients": ["127.0.0.1"]},
        )
        assert status == 200
        started = time.monotonic()
        assert await connection.fetchval("SELECT 2") == 2
        during = (time.monotonic() - started) * 1000

        await control(relay.control_port, "POST", "/latency/clear", {"clients": None})
        started = time.monotonic()
        assert await connection.fetchval("SELECT 3") == 3
        after = (time.monotonic() - started) * 1000
    finally:
        await connection.close()

    assert before < FAST_MS
    assert during >= DELAY_MS
    assert after < FAST_MS


async def test_relay_has_no_config_route(start_relay, redis_server: Server):
    relay = await start_relay(redis_server.port)

    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"http://127.0.0.1:{relay.control_port}/config",
            json={"watch_conflict_fraction": 0.5},
        ) as response:
            status = response.status

    assert status == 404


async def test_relay_closes_connections_past_maximum(start_relay, redis_server: Server):
    relay = await start_relay(redis_server.port, max_connections=1)

    async with aioredis.Redis(port=relay.port) as first:
        assert await first.ping() is True
        second = aioredis.Redis(port=relay.port, retry_on_error=[])
        try:
            with pytest.raises(aioredis.ConnectionError):
                await second.ping()
        finally:
            await second.aclose()

    assert relay.stats()["rejected"] == 1


async def test_relay_closes_client_when_upstream_down(start_relay):
    from tests.servers import free_port

    relay = await start_relay(free_port())
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        closed = await asyncio.wait_for(reader.read(10), 5)
    finally:
        writer.close()

    assert closed == b""
