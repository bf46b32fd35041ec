"""``python -m harness.coordinator`` as a real process: settings, startup, kill."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from harness.coordinator import STRATEGY_NAMES
from harness.coordinator.keys import BatchKeys
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IMPORTS = ["docker", "pydantic", "rich", "typer", "yaml"]


def coordinator_env(stores, strategy: str, port: int, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(
        PORT=str(port),
        HOST="127.0.0.1",
        INSTANCE_ID="proc-1",
        REDIS_URL=stores.redis_url,
        DATABASE_URL=stores.database_url,
        COORDINATOR_STRATEGY=strategy,
        LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


def run_to_exit(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.coordinator"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


@asynccontextmanager
async def coordinator_process(
    stores, strategy: str, log_path: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Start a coordinator process and wait until /health returns 200."""
    port = free_port()
    with log_path.open("w") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "harness.coordinator",
            env=coordinator_env(stores, strategy, port),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_for_health(process, url, log_path, deadline_s=20)
        yield process, url
    finally:
        if process.returncode is None:
            process.kill()
        await asyncio.wait_for(process.wait(), 10)


async def wait_for_health(
    process: asyncio.subprocess.Process, url: str, log_path: Path, deadline_s: float
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline:
            if process.returncode is not None:
                log = await asyncio.to_thread(log_path.read_text)
                pytest.fail(f"coordinator exited with {process.returncode}: {log}")
            try:
                async with session.get(f"{url}/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    log = await asyncio.to_thread(log_path.read_text)
    pytest.fail(f"coordinator not healthy within {deadline_s} s: {log}")


def test_unknown_strategy_exits_listing_names(stores):
    result = run_to_exit(coordinator_env(stores, "bogus", free_port()))

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "harness.coordinator: COORDINATOR_STRATEGY='bogus' is not a strategy; "
        f"set it to one of: {', '.join(STRATEGY_NAMES)}"
    )


def test_missing_environment_exits_naming_it(stores):
    env = coordinator_env(stores, "lua", free_port())
    del env["REDIS_URL"]
    del env["INSTANCE_ID"]
    result = run_to_exit(env)

    assert result.returncode == 2
    assert "missing environment variable(s) INSTANCE_ID, REDIS_URL" in result.stderr


def test_unreachable_store_exits_1(stores):
    env = coordinator_env(
        stores,
        "lua",
        free_port(),
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        STARTUP_TIMEOUT_S="0.5",
    )
    result = run_to_exit(env)

    assert result.returncode == 1
    assert "could not start: Redis did not accept a connection" in result.stderr


def test_coordinator_imports_no_harness_only_packages():
    code = (
        "import sys\n"
        "import harness.coordinator.server\n"
        f"print(sorted(set(sys.modules) & set({FORBIDDEN_IMPORTS!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.timeout(40)
async def test_process_starts_and_stops_on_sigterm(stores, tmp_path):
    log_path = tmp_path / "coordinator.log"
    async with coordinator_process(stores, "lua", log_path) as (process, url):
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/health") as response:
                health = await response.json()
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), 15)

    log = await asyncio.to_thread(log_path.read_text)
    assert health == {"status": "ok", "instance": "proc-1", "strategy": "lua"}
    assert returncode == 0
    assert "coordinator proc-1 started with strategy lua" in log
    assert "coordinator proc-1 stopped" in log


@pytest.mark.timeout(40)
async def test_pop_then_record_kill_loses_slot(stores, tmp_path):
    keys = BatchKeys("b1")
    blocker = await asyncpg.connect(stores.database_url)
    try:
        async with coordinator_process(
            stores, "pop-then-record", tmp_path / "coordinator.log"
        ) as (process, url):
            async with aiohttp.ClientSession() as session:
                async with session.post(
                    f"{url}/batches", json={"batch_id": "b1", "slot_ids": ["s1", "s2"]}
                ) as response:
                    assert response.status == 201

                # Hold the Postgres insert, the step between SPOP and record.
                transaction = blocker.transaction()
                await transaction.start()
                await blocker.execute("LOCK TABLE slot_assignments IN SHARE MODE")

                async def deliver() -> int:
                    async with session.post(
                        f"{url}/batches/b1/content",
                        json={"text_storage_id": "c1", "file_name": "c1.txt"},
                    ) as response:
                        return response.status

                delivery = asyncio.create_task(deliver())
                await wait_for_scard(stores, keys.available, 1)
                process.kill()
                await asyncio.wait_for(process.wait(), 10)
                with pytest.raises(aiohttp.ClientError):
                    await delivery
                # The dead process's database session dies with it.
                await blocker.execute(
                    """
                    SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                    WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()
                    """
                )
                await transaction.rollback()
    finally:
        await blocker.close()

    available = await stores.redis.smembers(keys.available)
    assigned = await stores.redis.hgetall(keys.assignments)
    assert len(available) == 1
    assert assigned == {}
    assert await stores.redis.hgetall(keys.content) == {}
    assert await stores.assignment_rows("b1") == {}
    # One slot is in neither the set nor the hash: lost for good.
    assert len({"s1", "s2"} - available) == 1


async def wait_for_scard(stores, key: str, expected: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while await stores.redis.scard(key) != expected:
        if loop.time() > deadline:
            pytest.fail(f"{key} never reached {expected} members")
        await asyncio.sleep(0.01)
