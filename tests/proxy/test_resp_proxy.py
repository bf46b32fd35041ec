"""The RESP proxy in front of a real redis-server, driven by redis-py."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import WatchError

from harness.proxy.client import encode_command
from harness.proxy.conflicts import SENTINEL_PREFIX, ConflictInjector
from tests.proxy.conftest import StartProxy, start_redis_on_port
from tests.servers import Server, free_port

pytestmark = [pytest.mark.stores, pytest.mark.asyncio(loop_scope="session")]

TTL_S = 100


@dataclass(frozen=True)
class KeyCase:
    """A key of one Redis type, a transaction that changes it, and how to read it."""

    name: str
    setup: Callable[[aioredis.Redis, str], Awaitable[Any]]
    write: Callable[[Any, str], Any]
    read: Callable[[aioredis.Redis, str], Awaitable[Any]]
    # What read() returns after the transaction commits.
    after_commit: Any
    # False where the neutral write changes the internal encoding only.
    same_dump: bool = True


async def _setup_stream(client: aioredis.Redis, key: str) -> None:
    await client.xadd(key, {"n": "1"}, id="1-0")
    await client.xadd(key, {"n": "2"}, id="2-0")
    await client.xgroup_create(key, "readers", id="0")
    await client.xreadgroup("readers", "reader-1", {key: ">"}, count=1)
    await client.expire(key, TTL_S)


async def _read_intset(client: aioredis.Redis, key: str) -> Any:
    return (await client.smembers(key), await client.object("encoding", key))


KEY_CASES = [
    KeyCase(
        "set",
        lambda c, k: c.sadd(k, "slot-1", "slot-2"),
        lambda p, k: p.srem(k, "slot-1"),
        lambda c, k: c.smembers(k),
        {b"slot-2"},
    ),
    KeyCase(
        "intset",
        lambda c, k: c.sadd(k, 1, 2, 3),
        lambda p, k: p.sadd(k, 4),
        _read_intset,
        ({b"1", b"2", b"3", b"4"}, b"intset"),
        same_dump=False,
    ),
    KeyCase(
        "hash",
        lambda c, k: c.hset(k, mapping={"slot-1": "content-a"}),
        lambda p, k: p.hset(k, "slot-2", "content-b"),
        lambda c, k: c.hgetall(k),
        {b"slot-1": b"content-a", b"slot-2": b"content-b"},
    ),
    KeyCase(
        "string",
        lambda c, k: c.set(k, "12345"),
        lambda p, k: p.set(k, "changed"),
        lambda c, k: c.get(k),
        b"changed",
    ),
    KeyCase(
        "absent",
        lambda c, k: asyncio.sleep(0),
        lambda p, k: p.set(k, "created"),
        lambda c, k: c.get(k),
        b"created",
    ),
    KeyCase(
        "zset",
        lambda c, k: c.zadd(k, {"a": 1.5, "b": 2}),
        lambda p, k: p.zadd(k, {"c": 3}),
        lambda c, k: c.zrange(k, 0, -1, withscores=True),
        [(b"a", 1.5), (b"b", 2.0), (b"c", 3.0)],
    ),
    KeyCase(
        "list",
        lambda c, k: c.rpush(k, "a", "b", "a"),
        lambda p, k: p.rpush(k, "c"),
        lambda c, k: c.lrange(k, 0, -1),
        [b"a", b"b", b"a", b"c"],
    ),
    KeyCase(
        "stream",
        _setup_stream,
        lambda p, k: p.xgroup_destroy(k, "readers"),
        lambda c, k: c.xinfo_groups(k),
        [],
    ),
]


@pytest.fixture
async def direct(redis_server: Server):
    """A client that talks to Redis itself, past the proxy."""
    client = aioredis.Redis(port=redis_server.port)
    yield client
    await client.aclose()


async def run_transaction(
    client: aioredis.Redis, keys: list[str], write: Callable[[Any], Any]
) -> bool:
    """Run WATCH, MULTI, the write and EXEC, and return True if EXEC aborted."""
    async with client.pipeline(transaction=True) as pipe:
        await pipe.watch(*keys)
        pipe.multi()
        write(pipe)
        try:
            await pipe.execute()
        except WatchError:
            return True
    return False


async def set_up_key(direct: aioredis.Redis, case: KeyCase, key: str) -> None:
    await case.setup(direct, key)
    if case.name != "absent":
        await direct.expire(key, TTL_S)


async def sentinel_keys(direct: aioredis.Redis) -> list[bytes]:
    return [key async for key in direct.scan_iter(match=SENTINEL_PREFIX + b"*")]


@pytest.mark.parametrize("case", KEY_CASES, ids=lambda case: case.name)
async def test_fraction_one_aborts_every_transaction(
    start_proxy: StartProxy, direct: aioredis.Redis, key_prefix: str, case: KeyCase
):
    key = key_prefix + case.name
    await set_up_key(direct, case, key)
    value_before = await case.read(direct, key)
    dump_before = await direct.dump(key)
    ttl_before = await direct.pttl(key)
    proxy = await start_proxy(fraction=1.0)

    async with aioredis.Redis(port=proxy.port) as client:
        outcomes = [
            await run_transaction(client, [key], lambda p: case.write(p, key))
            for _ in range(5)
        ]

    assert outcomes == [True] * 5
    assert await case.read(direct, key) == value_before
    if case.same_dump:
        assert await direct.dump(key) == dump_before
    ttl_after = await direct.pttl(key)
    if case.name == "absent":
        assert ttl_after == -2
    else:
        assert ttl_before - 5000 < ttl_after <= ttl_before
    assert await sentinel_keys(direct) == []
    stats = proxy.stats()
    assert stats["transactions"] == 5
    assert stats["conflicts_injected"] == 5


@pytest.mark.parametrize("case", KEY_CASES, ids=lambda case: case.name)
async def test_fraction_zero_commits_every_transaction(
    start_proxy: StartProxy, direct: aioredis.Redis, key_prefix: str, case: KeyCase
):
    key = key_prefix + case.name
    await set_up_key(direct, case, key)
    proxy = await start_proxy(fraction=0.0)

    async with aioredis.Redis(port=proxy.port) as client:
        aborted = await run_transaction(client, [key], lambda p: case.write(p, key))

    assert aborted is False
    assert await case.read(direct, key) == case.after_commit
    stats = proxy.stats()
    assert stats["transactions"] == 1
    assert stats["conflicts_injected"] == 0


async def test_seeded_fraction_gives_exact_count(
    start_proxy: StartProxy, direct: aioredis.Redis, key_prefix: str
):
    keys = [key_prefix + "slots-a", key_prefix + "slots-b"]
    seed = 7
    proxy = await start_proxy(fraction=0.5, seed=seed)

    async with aioredis.Redis(port=proxy.port) as client:
        outcomes = [
            await run_transaction(client, keys, lambda p, i=i: p.sadd(keys[0], i))
            for i in range(200)
        ]

    # The proxy draws random() per transaction, then choice() of a watched key
    # when it injects.
    rng = random.Random(seed)
    expected = []
    for _ in range(200):
        inject = rng.random() < 0.5
        if inject:
            rng.choice(keys)
        expected.append(inject)
    assert outcomes == expected
    assert sum(outcomes) == 104
    assert 70 <= sum(outcomes) <= 130
    assert proxy.stats()["conflicts_injected"] == 104
    assert proxy.stats()["transactions"] == 200
    assert await direct.scard(keys[0]) == 200 - 104


async def test_pipeline_without_watch_passes_unchanged(
    start_proxy: StartProxy, direct: aioredis.Redis, key_prefix: str
):
    proxy = await start_proxy(fraction=1.0)
    large = b"x" * (1024 * 1024 + 7)

    async with aioredis.Redis(port=proxy.port) as client:
        pipe = client.pipeline(transaction=False)
        for i in range(1000):
            pipe.set(f"{key_prefix}{i}", f"value-{i}")
            pipe.get(f"{key_prefix}{i}")
        pipe.set(key_prefix + "large", large)
        pipe.get(key_prefix + "large")
        results = await pipe.execute()
        # A transaction that watches nothing is not touched either.
        async with client.pipeline(transaction=True) as transaction:
            transaction.incr(key_prefix + "counter")
            transaction.incr(key_prefix + "counter")
            counters = await transaction.execute()

    expected: list[Any] = []
    for i in range(1000):
        expected += [True, f"value-{i}".encode()]
    expected += [True, large]
    assert results == expected
    assert counters == [1, 2]
    assert await direct.get(key_prefix + "999") == b"value-999"
    assert proxy.stats()["transactions"] == 0
    assert proxy.stats()["conflicts_injected"] == 0


async def test_lua_scripts_pass(start_proxy: StartProxy, key_prefix: str):
    proxy = await start_proxy(fraction=1.0)
    script = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
    key = key_prefix + "counter"

    async with aioredis.Redis(port=proxy.port) as client:
        first = await client.eval(script, 1, key, 5)
        sha = await client.script_load(script)
        second = await client.evalsha(sha, 1, key, 7)

    assert first == 5
    assert second == 12
    assert proxy.stats()["conflicts_injected"] == 0


async def test_database_of_client_is_used(
    start_proxy: StartProxy, redis_server: Server, key_prefix: str
):
    key = key_prefix + "in-db-3"
    proxy = await start_proxy(fraction=1.0)

    async with (
        aioredis.Redis(port=redis_server.port, db=3) as direct_db3,
        aioredis.Redis(port=redis_server.port, db=0) as direct_db0,
        aioredis.Redis(port=proxy.port, db=3) as client,
    ):
        await direct_db3.hset(key, "slot-1", "content-a")
        aborted = await run_transaction(
            client, [key], lambda p: p.hset(key, "slot-2", "content-b")
        )
        assert aborted is True
        assert await direct_db3.hgetall(key) == {b"slot-1": b"content-a"}
        assert await direct_db0.exists(key) == 0
        await direct_db3.delete(key)


async def test_watch_to_exec_in_one_write(start_proxy: StartProxy, key_prefix: str):
    key = (key_prefix + "raw").encode()
    request = b"".join(
        [
            b"*2\r\n$5\r\nWATCH\r\n$%d\r\n%s\r\n" % (len(key), key),
            b"*1\r\n$5\r\nMULTI\r\n",
            b"*3\r\n$4\r\nSADD\r\n$%d\r\n%s\r\n$1\r\nm\r\n" % (len(key), key),
            b"*1\r\n$4\r\nEXEC\r\n",
        ]
    )
    for fraction, exec_reply in [(1.0, b"*-1\r\n"), (0.0, b"*1\r\n:1\r\n")]:
        proxy = await start_proxy(fraction=fraction)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            writer.write(request)
            expected = b"+OK\r\n+OK\r\n+QUEUED\r\n" + exec_reply
            async with asyncio.timeout(5):
                reply = await reader.readexactly(len(expected))
        finally:
            writer.close()
            await writer.wait_closed()
        assert reply == expected


async def test_concurrent_clients_all_get_conflicts(
    start_proxy: StartProxy, direct: aioredis.Redis, key_prefix: str
):
    proxy = await start_proxy(fraction=1.0)
    clients = [aioredis.Redis(port=proxy.port) for _ in range(10)]

    async def run_client(index: int, client: aioredis.Redis) -> list[bool]:
        key = f"{key_prefix}{index}"
        return [
            await run_transaction(client, [key], lambda p: p.sadd(key, "m"))
            for _ in range(10)
        ]

    try:
        outcomes = await asyncio.gather(
            *(run_client(index, client) for index, client in enumerate(clients))
        )
        open_connections = proxy.stats()["open_connections"]
    finally:
        for client in clients:
            await client.aclose()

    assert outcomes == [[True] * 10] * 10
    assert proxy.stats()["conflicts_injected"] == 100
    assert proxy.stats()["transactions"] == 100
    assert len(open_connections) == 10
    assert sorted(c["conflicts_injected"] for c in open_connections) == [10] * 10
    assert await direct.exists(*(f"{key_prefix}{i}" for i in range(10))) == 0


async def test_control_endpoint_sets_fraction(start_proxy: StartProxy, key_prefix: str):
    proxy = await start_proxy(fraction=0.0, seed=3)
    base = f"http://127.0.0.1:{proxy.control_port}"
    key = key_prefix + "set"

    async with (
        aiohttp.ClientSession() as http,
        aioredis.Redis(port=proxy.port) as client,
    ):
        async with http.get(base + "/health") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}

        async with http.post(
            base + "/config", json={"watch_conflict_fraction": 1}
        ) as response:
            assert response.status == 200
            assert await response.json() == {"fraction": 1.0}
        assert await run_transaction(client, [key], lambda p: p.sadd(key, "a"))

        async with http.post(
            base + "/config", json={"watch_conflict_fraction": 0.0}
        ) as response:
            assert response.status == 200
        assert not await run_transaction(client, [key], lambda p: p.sadd(key, "a"))

        async with http.get(base + "/stats") as response:
            assert response.status == 200
            stats = await response.json()
        assert stats["transactions"] == 2
        assert stats["conflicts_injected"] == 1
        assert stats["connections"] == 1
        assert stats["fraction"] == 0.0
        assert stats["seed"] == 3
        assert len(stats["open_connections"]) == 1


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            {"watch_conflict_fraction": 1.5},
            "watch_conflict_fraction is 1.5: expected a number from 0 to 1, "
            "such as 0.2",
        ),
        (
            {"watch_conflict_fraction": -0.1},
            "watch_conflict_fraction is -0.1: expected a number from 0 to 1, "
            "such as 0.2",
        ),
        (
            {"watch_conflict_fraction": "0.5"},
            "watch_conflict_fraction is '0.5': expected a number from 0 to 1, "
            "such as 0.2",
        ),
        (
            {"watch_conflict_fraction": True},
            "watch_conflict_fraction is True: expected a number from 0 to 1, "
            "such as 0.2",
        ),
        (
            {"watch_conflict_fraction": 0.5, "seed": 1},
            "unknown fields ['seed']: only 'watch_conflict_fraction' can be set",
        ),
        (
            {"fraction": 0.5},
            "missing field 'watch_conflict_fraction': send "
            '{"watch_conflict_fraction": <number from 0 to 1>}, '
            "got {'fraction': 0.5}",
        ),
    ],
)
async def test_control_endpoint_rejects_invalid_config(
    start_proxy: StartProxy, body: Any, detail: str
):
    proxy = await start_proxy(fraction=0.25)
    url = f"http://127.0.0.1:{proxy.control_port}/config"

    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body) as response:
            assert response.status == 400
            assert await response.json() == {"error": "bad_request", "detail": detail}

    assert proxy.fraction == 0.25


async def test_control_endpoint_rejects_invalid_json(start_proxy: StartProxy):
    proxy = await start_proxy(fraction=0.25)
    url = f"http://127.0.0.1:{proxy.control_port}/config"

    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=b"{not json") as response:
            assert response.status == 400
            assert (await response.json())["error"] == "bad_request"

    assert proxy.fraction == 0.25


async def test_proxy_serves_again_after_redis_restart(
    start_proxy: StartProxy, tmp_path
):
    port = free_port()
    upstream = start_redis_on_port(port, tmp_path)
    try:
        proxy = await start_proxy(fraction=1.0, upstream_port=port)
        async with aioredis.Redis(port=proxy.port, socket_timeout=5) as client:
            assert await client.set("key", "before") is True
            assert await run_transaction(client, ["key"], lambda p: p.incr("n"))

            upstream.stop()
            # The open connection is closed, and so is every new one while
            # Redis is down.
            with pytest.raises(RedisConnectionError):
                await client.get("key")
            async with aioredis.Redis(port=proxy.port, socket_timeout=5) as fresh:
                with pytest.raises(RedisConnectionError):
                    await fresh.ping()
            connections_while_down = proxy.stats()["connections"]
            assert connections_while_down >= 2

            upstream = start_redis_on_port(port, tmp_path)
            assert await client.get("key") is None
            assert await client.set("key", "after") is True
            assert await client.get("key") == b"after"
            # The neutral write gets through although Redis closed the
            # proxy's idle connection for neutral writes.
            assert await run_transaction(client, ["key"], lambda p: p.incr("n"))
            assert await client.get("n") is None
        assert proxy.stats()["connections"] == connections_while_down + 1
        assert proxy.stats()["conflicts_injected"] == 2
    finally:
        upstream.stop()


async def test_neutral_write_without_redis_returns_false(caplog):
    injector = ConflictInjector("127.0.0.1", free_port(), timeout_s=1.0)
    try:
        with caplog.at_level(logging.WARNING, logger="harness.proxy.conflicts"):
            written = await injector.write_neutrally(0, b"slots")
    finally:
        await injector.close()
    assert written is False
    assert "neutral write to key b'slots' in database 0 failed" in caplog.text
    assert "ConnectionRefusedError" in caplog.text


def resp(*arguments: bytes) -> bytes:
    return encode_command(list(arguments))


@pytest.mark.parametrize(
    ("name", "commands", "replies", "transactions"),
    [
        (
            "exec-without-multi-keeps-watch",
            [(b"WATCH", b"{key}"), (b"EXEC",), (b"MULTI",), (b"SET", b"{key}", b"v")],
            b"+OK\r\n-ERR EXEC without MULTI\r\n+OK\r\n+QUEUED\r\n*-1\r\n",
            1,
        ),
        (
            "discard-without-multi-keeps-watch",
            [
                (b"WATCH", b"{key}"),
                (b"DISCARD",),
                (b"MULTI",),
                (b"SET", b"{key}", b"v"),
            ],
            b"+OK\r\n-ERR DISCARD without MULTI\r\n+OK\r\n+QUEUED\r\n*-1\r\n",
            1,
        ),
        (
            "unwatch-inside-multi-keeps-watch",
            [
                (b"WATCH", b"{key}"),
                (b"MULTI",),
                (b"UNWATCH",),
                (b"SET", b"{key}", b"v"),
            ],
            b"+OK\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n*-1\r\n",
            1,
        ),
        (
            "unwatch-clears-watch",
            [
                (b"WATCH", b"{key}"),
                (b"UNWATCH",),
                (b"MULTI",),
                (b"SET", b"{key}", b"v"),
            ],
            b"+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n",
            0,
        ),
    ],
)
async def test_tracker_agrees_with_redis_on_watch(
    start_proxy: StartProxy,
    key_prefix: str,
    name: str,
    commands,
    replies: bytes,
    transactions: int,
):
    # At fraction 1.0, EXEC aborts exactly when the proxy thinks the key is
    # still watched, so a wrong tracker state shows in the EXEC reply.
    key = (key_prefix + name).encode()
    proxy = await start_proxy(fraction=1.0)
    request = b"".join(
        resp(*(key if part == b"{key}" else part for part in command))
        for command in [*commands, (b"EXEC",)]
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(request)
        async with asyncio.timeout(5):
            reply = await reader.readexactly(len(replies))
    finally:
        writer.close()
        await writer.wait_closed()
    assert reply == replies
    assert proxy.stats()["transactions"] == transactions
