"""Connections to Redis and Postgres, the shared table, and retries after a
connection fails."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
import redis.asyncio as aioredis
import redis.exceptions

from harness.coordinator.errors import StoreUnavailable
from harness.coordinator.logs import RepeatLimiter
from harness.coordinator.metrics import CoordinatorMetrics
from harness.coordinator.settings import Settings
from harness.coordinator.store_timing import TimedRedis, postgres_query_timer

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Errors after which the same request may succeed on a new connection or in a
# new transaction: a store restarting, a killed client connection, a full pool,
# a deadlock. Other query errors are absent on purpose, because repeating a bad
# statement cannot help.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.DeadlockDetectedError,
    # asyncpg 0.32 raises this ("cannot switch to state ...; another operation
    # is in progress") for a query sent on a pooled connection that the
    # server has just terminated, before the pool has noticed the close.
    asyncpg.exceptions.InternalClientError,
    OSError,
)

# pg_advisory_lock key that serializes schema creation, because concurrent
# CREATE TABLE IF NOT EXISTS can still fail with a unique violation in
# pg_type when several instances start at once.
SCHEMA_LOCK_KEY = 0x510C00D

ASSIGNMENT_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS slot_assignments (
        batch_id text NOT NULL,
        slot_id text NOT NULL,
        text_storage_id text NOT NULL,
        file_name text NOT NULL,
        instance_id text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (batch_id, slot_id),
        UNIQUE (batch_id, text_storage_id)
    )
    """,
)


@dataclass
class Stores:
    """The Redis client and the Postgres pool of one app."""

    redis: aioredis.Redis
    postgres: asyncpg.Pool

    async def close(self) -> None:
        try:
            await self.redis.aclose()
        finally:
            await self.postgres.close()


async def open_stores(settings: Settings, metrics: CoordinatorMetrics) -> Stores:
    """Connect to both stores, retrying until ``settings.startup_timeout_s``.

    Instances often start together with their stores, so a refused connection
    at first is expected. Both clients record every command and query in
    ``metrics``. Raises StoreUnavailable with the last error.
    """
    deadline = time.monotonic() + settings.startup_timeout_s
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        # Seconds a request waits for a free pooled connection under a storm.
        timeout=10,
        socket_connect_timeout=2,
        socket_timeout=10,
        decode_responses=True,
    )
    client = TimedRedis.from_pool_timed(pool, metrics)
    try:
        await _retry_until(deadline, "Redis", client.ping)
        postgres = await _retry_until(
            deadline,
            "Postgres",
            lambda: asyncpg.create_pool(
                settings.database_url,
                min_size=settings.postgres_min_connections,
                max_size=settings.postgres_max_connections,
                command_timeout=10,
                init=postgres_query_timer(metrics),
            ),
        )
    except BaseException:
        await client.aclose()
        raise
    return Stores(client, postgres)


async def _retry_until(
    deadline: float, store: str, connect: Callable[[], Awaitable[T]]
):
    attempt = 0
    while True:
        attempt += 1
        try:
            return await connect()
        except TRANSIENT_ERRORS as err:
            if time.monotonic() >= deadline:
                raise StoreUnavailable(
                    f"{store} did not accept a connection after {attempt} attempts: "
                    f"{type(err).__name__}: {err}; check its URL and that it is up"
                ) from err
            logger.info("waiting for %s (attempt %d): %s", store, attempt, err)
            await asyncio.sleep(0.25)


async def ensure_schema(pool: asyncpg.Pool, statements: Sequence[str]) -> None:
    """Create tables and indexes idempotently, one instance at a time."""
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK_KEY)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK_KEY)


async def check_health(stores: Stores, timeout_s: float = 2.0) -> str | None:
    """Return None when both stores reply within the timeout, else the failure."""
    try:
        async with asyncio.timeout(timeout_s):
            await stores.redis.ping()
    except (*TRANSIENT_ERRORS, redis.exceptions.RedisError) as err:
        return f"Redis: {type(err).__name__}: {err}"
    try:
        async with asyncio.timeout(timeout_s):
            await stores.postgres.fetchval("SELECT 1")
    except (*TRANSIENT_ERRORS, asyncpg.PostgresError) as err:
        return f"Postgres: {type(err).__name__}: {err}"
    return None


class StoreRetry:
    """Repeat an operation whose store connection failed, for a bounded time.

    Every operation it wraps must be safe to repeat: the correct strategies
    find their own earlier write through the dedup step and reply as a replay.
    """

    def __init__(self, deadline_s: float, metrics: CoordinatorMetrics) -> None:
        self.deadline_s = deadline_s
        self.metrics = metrics
        self.limiter = RepeatLimiter()

    async def run(self, operation: Callable[[], Awaitable[T]], description: str) -> T:
        """Await ``operation()``, repeating it on a transient error.

        ``description`` names the operation and its batch and content ids for the log.
        Raises StoreUnavailable once ``deadline_s`` has passed.
        """
        deadline = time.monotonic() + self.deadline_s
        delay = 0.05
        attempt = 0
        while True:
            attempt += 1
            try:
                return await operation()
            except TRANSIENT_ERRORS as err:
                self._warn(description, attempt, err)
                if time.monotonic() + delay > deadline:
                    raise StoreUnavailable(
                        f"{description} failed {attempt} times in {self.deadline_s} s; "
                        f"last error {type(err).__name__}: {err}"
                    ) from err
                self.metrics.count_retry("store_error")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _warn(self, description: str, attempt: int, err: BaseException) -> None:
        suppressed = self.limiter.admit(type(err).__name__)
        if suppressed is None:
            return
        logger.warning(
            "store error in %s (attempt %d): %s: %s (%d similar warnings suppressed)",
            description,
            attempt,
            type(err).__name__,
            err,
            suppressed,
        )
