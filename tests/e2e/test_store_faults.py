"""Redis and Postgres faults on the shared cluster: each takes effect, and the
coordinators serve again after it."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import urllib.error
import urllib.request

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from harness.coordinator.strategies import scripts
from harness.faults import (
    PostgresRestartFault,
    PostgresTerminateFault,
    RedisClientKillFault,
    RedisRestartFault,
    RedisScriptFlushFault,
    WatchConflictFault,
)
from harness.nemesis import (
    postgres_restart,
    postgres_terminate,
    redis_client_kill,
    redis_restart,
    redis_script_flush,
    watch_conflict,
)
from harness.topology.docker_cluster import http_json
from tests.e2e.fault_probes import (
    fault_context,
    post_content,
    probe_health,
    register_batch,
    use_strategy,
    window_phases,
)

pytestmark = pytest.mark.docker

BATCH = "store-fault-b1"


@pytest.fixture
def ctx(cluster, tmp_path):
    context = fault_context(cluster, tmp_path)
    yield context
    context.history.close()


@pytest.fixture
def redis_client(cluster):
    client = redis.Redis.from_url(cluster.redis_url(), socket_timeout=5)
    yield client
    client.close()


def proxy_connection_ids(cluster) -> set[int]:
    """Returns the ids of the client connections that are open in the RESP proxy."""
    stats = cluster.proxy_stats()
    return {entry["connection_id"] for entry in stats["open_connections"]}


def redis_ids_of_proxy(cluster, client: redis.Redis) -> set[int]:
    """Returns the CLIENT LIST ids of the proxy's connections to Redis."""
    address = cluster.member_address("redis-proxy")
    return {
        int(entry["id"])
        for entry in client.client_list()
        if entry["addr"].rsplit(":", 1)[0] == address
    }


def coordinator_backends(cluster) -> set[int]:
    """Returns the PIDs of the Postgres sessions of every client but psql itself."""
    rows = cluster.postgres_query(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
        "AND pid <> pg_backend_pid()"
    )
    return {int(pid) for (pid,) in rows}


def watch_conflicts(cluster) -> float:
    """Sums the coordinator_watch_conflicts counters of every instance."""
    total = 0.0
    for name in cluster.instance_names:
        url = cluster.url(name) + "/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        for family in text_string_to_metric_families(text):
            if family.name == "coordinator_watch_conflicts":
                total += sum(
                    sample.value
                    for sample in family.samples
                    if sample.name.endswith("_total")
                )
    return total


def wait_until(check, deadline_s: float = 5.0) -> bool:
    """Calls ``check`` every 0.1 s until it returns True or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


# --- lua strategy ---------------------------------------------------------------


async def test_script_flush_forgets_script(cluster, ctx, tmp_path, redis_client):
    use_strategy(cluster, "lua")
    register_batch(cluster, BATCH, slots=4)
    sha = hashlib.sha1(scripts.TAKE_SLOT.encode()).hexdigest()
    status, body = post_content(cluster, "coordinator-1", BATCH, "ts-1")
    assert (status, body["created"]) == (200, True)
    assert redis_client.script_exists(sha) == [True]

    await redis_script_flush.inject(
        RedisScriptFlushFault(kind="redis-script-flush"), ctx, random.Random(1)
    )

    assert redis_client.script_exists(sha) == [False]
    # The correct strategy loads its script again after NOSCRIPT.
    status, body = post_content(cluster, "coordinator-1", BATCH, "ts-2")
    assert (status, body["created"]) == (200, True)
    assert redis_client.script_exists(sha) == [True]
    phases = [w["phase"] for w in window_phases(tmp_path, "redis-script-flush")]
    assert phases == ["start", "end"]


async def test_client_kill_reaches_coordinators(cluster, ctx, tmp_path, redis_client):
    use_strategy(cluster, "lua")
    register_batch(cluster, BATCH, slots=4)
    for name in cluster.instance_names:
        assert probe_health(cluster.url(name)) == "ok"
    proxy_before = proxy_connection_ids(cluster)
    redis_before = redis_ids_of_proxy(cluster, redis_client)
    accepted_before = cluster.proxy_stats()["connections"]
    assert proxy_before
    assert redis_before

    await redis_client_kill.inject(
        RedisClientKillFault(kind="redis-client-kill"), ctx, random.Random(1)
    )

    # Redis closed the proxy's upstream connections, and the proxy closed the
    # matching coordinator connections in turn.
    assert redis_ids_of_proxy(cluster, redis_client).isdisjoint(redis_before)
    assert wait_until(lambda: proxy_connection_ids(cluster).isdisjoint(proxy_before))
    status, body = post_content(cluster, "coordinator-1", BATCH, "ts-1")
    assert (status, body["created"]) == (200, True)
    assert cluster.proxy_stats()["connections"] > accepted_before
    windows = window_phases(tmp_path, "redis-client-kill")
    assert [w["phase"] for w in windows] == ["start", "end"]
    assert windows[1]["killed"] == len(redis_before)


async def test_redis_restart_lose_empties(cluster, ctx, tmp_path, redis_client):
    use_strategy(cluster, "lua")
    register_batch(cluster, BATCH, slots=4)
    assert redis_client.dbsize() > 0

    await redis_restart.inject(
        RedisRestartFault(kind="redis-restart", data="lose"), ctx, random.Random(1)
    )

    # The restart published Redis on a new port.
    client = redis.Redis.from_url(cluster.redis_url(), socket_timeout=5)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()
    for name in cluster.instance_names:
        cluster.wait_instance_ready(name)
    with pytest.raises(urllib.error.HTTPError) as reply:
        http_json(cluster.url("coordinator-1") + f"/batches/{BATCH}")
    reply.value.close()
    assert reply.value.code == 404
    windows = window_phases(tmp_path, "redis-restart")
    assert [w["phase"] for w in windows] == ["start", "end"]
    assert windows[1]["data_lost"] is True


# --- watch strategy -------------------------------------------------------------


async def test_watch_writer_causes_conflicts(cluster, ctx, tmp_path):
    use_strategy(cluster, "watch")
    register_batch(cluster, BATCH, slots=40)
    ctx.batch_ids = [BATCH]
    conflicts_before = watch_conflicts(cluster)
    fault = WatchConflictFault(
        kind="watch-conflict", mode="writer", writes_per_s=1000, duration_s=3.0
    )

    writer = asyncio.create_task(watch_conflict.inject(fault, ctx, random.Random(1)))
    # One request at a time, so that no two transactions of the strategy
    # conflict with each other: every conflict comes from the writer.
    replies = []
    for number in range(40):
        if writer.done():
            break
        name = cluster.instance_names[number % 3]
        replies.append(
            await asyncio.to_thread(post_content, cluster, name, BATCH, f"ts-{number}")
        )
    await writer

    assert len(replies) >= 5
    assert {status for status, _ in replies} == {200}
    assert watch_conflicts(cluster) > conflicts_before
    windows = window_phases(tmp_path, "watch-conflict")
    assert [w["phase"] for w in windows] == ["start", "end"]
    assert windows[1]["injected"] > 0


# --- postgres strategy ----------------------------------------------------------


async def test_postgres_restart_keeps_data(cluster, ctx, tmp_path):
    use_strategy(cluster, "postgres")
    register_batch(cluster, BATCH, slots=4)
    status, body = post_content(cluster, "coordinator-1", BATCH, "ts-1")
    assert (status, body["created"]) == (200, True)
    started = cluster.postgres_query("SELECT pg_postmaster_start_time()")

    await postgres_restart.inject(
        PostgresRestartFault(kind="postgres-restart"), ctx, random.Random(1)
    )

    assert cluster.postgres_query("SELECT pg_postmaster_start_time()") != started
    rows = cluster.postgres_query(
        f"SELECT text_storage_id FROM slot_assignments WHERE batch_id = '{BATCH}'"
    )
    assert rows == [["ts-1"]]
    status, body = post_content(cluster, "coordinator-2", BATCH, "ts-2")
    assert (status, body["created"]) == (200, True)
    phases = [w["phase"] for w in window_phases(tmp_path, "postgres-restart")]
    assert phases == ["start", "end"]


async def test_postgres_terminate_replaces_backends(cluster, ctx, tmp_path):
    use_strategy(cluster, "postgres")
    register_batch(cluster, BATCH, slots=4)
    backends_before = coordinator_backends(cluster)
    assert backends_before

    await postgres_terminate.inject(
        PostgresTerminateFault(kind="postgres-terminate"), ctx, random.Random(1)
    )

    assert wait_until(lambda: coordinator_backends(cluster).isdisjoint(backends_before))
    for number, name in enumerate(cluster.instance_names):
        status, body = post_content(cluster, name, BATCH, f"ts-{number}")
        assert (status, body["created"]) == (200, True), name
    backends_after = coordinator_backends(cluster)
    assert backends_after
    assert backends_after.isdisjoint(backends_before)
    windows = window_phases(tmp_path, "postgres-terminate")
    assert [w["phase"] for w in windows] == ["start", "end"]
    assert windows[1]["terminated"] >= len(backends_before)
