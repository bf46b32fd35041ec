"""The runtime image's roles on real containers: Python, Redis and Postgres."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
import redis
from docker.models.containers import Container

from tests.images.conftest import StartContainer, container_logs, published_port

pytestmark = pytest.mark.docker

READY_DEADLINE_S = 60


def wait_for_redis(container: Container) -> redis.Redis:
    """Connect to Redis on its published port, retrying until PING succeeds."""
    deadline = time.monotonic() + READY_DEADLINE_S
    while True:
        port = published_port(container, "6379/tcp")
        client = redis.Redis(
            host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True
        )
        try:
            client.ping()
            return client
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            client.close()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"redis in {container.short_id} not ready within "
                    f"{READY_DEADLINE_S} s, logs:\n{container_logs(container)}"
                ) from None
            time.sleep(0.1)


async def wait_for_postgres(container: Container) -> asyncpg.Connection:
    """Connect to Postgres on its published port, retrying until a query succeeds."""
    deadline = time.monotonic() + READY_DEADLINE_S
    while True:
        port = published_port(container, "5432/tcp")
        try:
            connection = await asyncpg.connect(
                host="127.0.0.1",
                port=port,
                user="postgres",
                database="postgres",
                timeout=2,
            )
            await connection.fetchval("SELECT 1")
            return connection
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"postgres in {container.short_id} not ready within "
                    f"{READY_DEADLINE_S} s ({err!r}), logs:\n"
                    f"{container_logs(container)}"
                ) from err
            await asyncio.sleep(0.1)


def run_to_exit(container: Container) -> tuple[int, str]:
    status = container.wait(timeout=60)
    return status["StatusCode"], container_logs(container)


def test_python_is_venv_under_tini(start_container: StartContainer) -> None:
    script = (
        "import sys, aiohttp, async_timeout, asyncpg, prometheus_client, redis\n"
        "import harness\n"
        "print(sys.executable, harness.__file__)\n"
        "print(open('/proc/1/comm').read().strip())\n"
    )
    container = start_container(["python", "-c", script])

    code, logs = run_to_exit(container)

    assert code == 0, logs
    assert logs.splitlines() == [
        "/opt/venv/bin/python /opt/app/harness/__init__.py",
        "tini",
    ]


def test_redis_aof_keeps_data_across_restart(
    start_container: StartContainer,
) -> None:
    container = start_container(["slot-redis"], port="6379/tcp")
    client = wait_for_redis(container)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("appendfsync") == {"appendfsync": "always"}
    assert client.config_get("dir") == {"dir": "/data"}
    client.set("batch:b1:metadata", "kept")
    client.close()

    container.restart(timeout=10)
    client = wait_for_redis(container)

    assert client.get("batch:b1:metadata") == "kept"
    client.close()


def test_redis_aof_keeps_data_across_kill(
    start_container: StartContainer,
) -> None:
    # SIGKILL gives redis no chance to write a snapshot on shutdown, as
    # `docker restart` does, so only the fsynced append-only file keeps data.
    container = start_container(["slot-redis"], port="6379/tcp")
    client = wait_for_redis(container)
    client.hset("batch:b1:assignments", mapping={"s1": "c1", "s2": "c2"})
    client.close()

    container.kill()
    container.wait(timeout=30)
    container.start()
    client = wait_for_redis(container)

    assert client.hgetall("batch:b1:assignments") == {"s1": "c1", "s2": "c2"}
    client.close()


def test_redis_volatile_loses_data_on_restart(
    start_container: StartContainer,
) -> None:
    container = start_container(
        ["slot-redis"], environment={"REDIS_PERSISTENCE": "volatile"}, port="6379/tcp"
    )
    client = wait_for_redis(container)
    assert client.config_get("appendonly") == {"appendonly": "no"}
    assert client.config_get("save") == {"save": ""}
    client.set("batch:b1:metadata", "lost")
    client.close()

    container.restart(timeout=10)
    client = wait_for_redis(container)

    assert client.get("batch:b1:metadata") is None
    assert client.dbsize() == 0
    client.close()


def test_redis_rejects_unknown_persistence(
    start_container: StartContainer,
) -> None:
    container = start_container(
        ["slot-redis"], environment={"REDIS_PERSISTENCE": "sometimes"}
    )

    code, logs = run_to_exit(container)

    assert code == 2
    assert (
        "slot-redis: invalid REDIS_PERSISTENCE='sometimes': expected aof or volatile"
        in logs
    )


async def test_postgres_keeps_rows_across_restart(
    start_container: StartContainer,
) -> None:
    container = start_container(["slot-postgres"], port="5432/tcp")
    connection = await wait_for_postgres(container)
    try:
        await connection.execute(
            "CREATE TABLE slots (batch_id text, slot_id text,"
            " PRIMARY KEY (batch_id, slot_id))"
        )
        await connection.execute("INSERT INTO slots VALUES ('b1', 's1')")
    finally:
        await connection.close()

    container.restart(timeout=10)
    connection = await wait_for_postgres(container)
    try:
        rows = await connection.fetch("SELECT batch_id, slot_id FROM slots")
    finally:
        await connection.close()

    assert [tuple(row) for row in rows] == [("b1", "s1")]


async def test_postgres_runs_with_harness_settings(
    start_container: StartContainer,
) -> None:
    container = start_container(["slot-postgres"], port="5432/tcp")
    connection = await wait_for_postgres(container)
    try:
        settings = {
            name: await connection.fetchval(f"SHOW {name}")
            for name in (
                "listen_addresses",
                "port",
                "fsync",
                "synchronous_commit",
                "full_page_writes",
                "max_connections",
                "hba_file",
            )
        }
        user = await connection.fetchval("SELECT current_user")
    finally:
        await connection.close()

    assert settings == {
        "listen_addresses": "*",
        "port": "5432",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "300",
        "hba_file": "/etc/slot-harness/pg_hba.conf",
    }
    assert user == "postgres"


async def test_postgres_stop_is_fast_shutdown(
    start_container: StartContainer,
) -> None:
    container = start_container(["slot-postgres"], port="5432/tcp")
    # An open session would hold a smart shutdown until Docker's SIGKILL.
    connection = await wait_for_postgres(container)
    try:
        await asyncio.to_thread(container.stop, timeout=30)
    finally:
        connection.terminate()

    code, logs = run_to_exit(container)

    assert code == 0, logs
    assert "received fast shutdown request" in logs
