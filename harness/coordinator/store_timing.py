"""Timing of every Redis command and Postgres query into the coordinator metrics.

Redis: a client subclass times ``execute_command`` and returns pipelines that
time their immediate commands (WATCH and the reads after it) and ``execute``.
Postgres: asyncpg's query logger (asyncpg 0.29 and later) reports each query's
elapsed time and exception, and the pool registers it on every new connection.
Commands and queries that a scrape runs to read batches for the slot gauges
are left out (see ``recording_store_operations``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from harness.coordinator.metrics import CoordinatorMetrics, recording_store_operations

# Operation labels of Postgres queries. Any other first keyword (CREATE,
# WITH, ...) is counted as "other".
SQL_OPERATIONS = frozenset(
    {"select", "insert", "update", "delete", "begin", "commit", "rollback"}
)


class TimedRedis(aioredis.Redis):
    """A Redis client that records each command's time and errors."""

    store_metrics: CoordinatorMetrics | None = None

    @classmethod
    def from_pool_timed(
        cls, pool: aioredis.ConnectionPool, metrics: CoordinatorMetrics
    ) -> TimedRedis:
        """Return a client that owns ``pool`` and records into ``metrics``."""
        client = cls.from_pool(pool)
        client.store_metrics = metrics
        return client

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        metrics = self.store_metrics
        if metrics is None or not recording_store_operations():
            return await super().execute_command(*args, **options)
        started = time.perf_counter()
        try:
            result = await super().execute_command(*args, **options)
        except Exception:
            _observe_redis(metrics, args[0], started, failed=True)
            raise
        _observe_redis(metrics, args[0], started, failed=False)
        return result

    def pipeline(
        self, transaction: bool = True, shard_hint: str | None = None
    ) -> TimedPipeline:
        pipe = TimedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe.store_metrics = self.store_metrics
        return pipe


class TimedPipeline(Pipeline):
    """A pipeline that records its immediate commands and each execute().

    An execute() of a transaction is the operation "exec" and counts in
    coordinator_exec_total, and in coordinator_exec_aborts_total when Redis
    aborts it because a watched key changed. Other pipelines are "pipeline".
    """

    store_metrics: CoordinatorMetrics | None = None

    async def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        metrics = self.store_metrics
        if metrics is None or not recording_store_operations():
            return await super().immediate_execute_command(*args, **options)
        started = time.perf_counter()
        try:
            result = await super().immediate_execute_command(*args, **options)
        except Exception:
            _observe_redis(metrics, args[0], started, failed=True)
            raise
        _observe_redis(metrics, args[0], started, failed=False)
        return result

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        metrics = self.store_metrics
        # An empty pipeline that watches nothing sends nothing.
        sends = bool(self.command_stack) or self.watching
        if metrics is None or not sends or not recording_store_operations():
            return await super().execute(raise_on_error)
        # Read before execute(), which resets the pipeline.
        transaction = self.is_transaction or self.explicit_transaction
        operation = "exec" if transaction else "pipeline"
        started = time.perf_counter()
        try:
            result = await super().execute(raise_on_error)
        except WatchError as err:
            aborted = not _lost_connection(err)
            _observe_redis(metrics, operation, started, failed=not aborted)
            if transaction:
                metrics.count_exec(aborted=aborted)
            raise
        except Exception:
            _observe_redis(metrics, operation, started, failed=True)
            if transaction:
                metrics.count_exec(aborted=False)
            raise
        _observe_redis(metrics, operation, started, failed=False)
        if transaction:
            metrics.count_exec(aborted=False)
        return result


def _lost_connection(err: WatchError) -> bool:
    """Return whether a WatchError comes from a lost connection, not an abort.

    redis-py 5 raises WatchError for a connection that fails while it watches
    keys, from inside the handler of the ConnectionError or TimeoutError, so
    that error is the WatchError's context. The abort at EXEC is raised from
    None.
    """
    return isinstance(err.__context__, RedisConnectionError | RedisTimeoutError)


def _observe_redis(
    metrics: CoordinatorMetrics, command: object, started: float, failed: bool
) -> None:
    metrics.observe_store_operation(
        "redis", str(command).lower(), time.perf_counter() - started, failed
    )


def sql_operation(query: str) -> str:
    """Return the operation label of a query: its first keyword in lower case,
    or "other" for a keyword outside SQL_OPERATIONS."""
    words = query.split(None, 1)
    keyword = words[0].lower().rstrip(";") if words else ""
    return keyword if keyword in SQL_OPERATIONS else "other"


def postgres_query_timer(metrics: CoordinatorMetrics):
    """Return an asyncpg pool ``init`` callback that records every query."""

    async def init(conn: asyncpg.Connection) -> None:
        # asyncpg runs the callback soon after the query, in the context of the
        # task that ran it, so recording_store_operations() applies to it too.
        def record(query: asyncpg.connection.LoggedQuery) -> None:
            if not recording_store_operations():
                return
            # A cancelled request is not a store error, as for Redis.
            if isinstance(query.exception, asyncio.CancelledError):
                return
            # The pool resets each connection it takes back (UNLISTEN, RESET
            # ALL and more in one query). That is the pool's housekeeping, and
            # as a "select" it would add one to every acquire.
            if query.query == _reset_query(conn):
                return
            metrics.observe_store_operation(
                "postgres",
                sql_operation(query.query),
                query.elapsed,
                failed=query.exception is not None,
            )

        conn.add_query_logger(record)

    return init


def _reset_query(conn: asyncpg.Connection) -> str | None:
    # Connection.get_reset_query() exists from asyncpg 0.30; with 0.29 the
    # reset query is counted as a select.
    get_reset_query = getattr(conn, "get_reset_query", None)
    return None if get_reset_query is None else get_reset_query()
