"""Neutral writes: writes to a key that leave its contents and TTL as they were.

Any write to a watched key makes the watching transaction's EXEC fail, so a
neutral write injects a WATCH conflict without changing data. Each one runs on
the proxy's own connection, under its own WATCH of the key, in two round trips:

1. ``WATCH key``, ``TYPE key`` and ``OBJECT ENCODING key``;
2. ``MULTI``, a pair of commands that undo each other, ``EXEC``.

The WATCH makes the second step abort if another client changes the key in
between, so a pair chosen for the old type never runs on a new value. That
other client's write has then already broken the transaction's WATCH too.

Checked on redis-server 7.0.15 (tests/proxy/test_resp_proxy.py covers each
type). Members, values, scores, order and TTL stay the same, but two internal
encodings can change. A hash or sorted set with exactly as many entries as
hash-max-listpack-entries or zset-max-listpack-entries allow converts to the
larger encoding. An integer set of small integers is widened to 64-bit ones.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from harness.proxy.client import RespConnection, RespError, RespProtocolError
from harness.proxy.logs import RateLimitedLogger

logger = logging.getLogger(__name__)

SENTINEL_PREFIX = b"harness-proxy-sentinel:"

# Errors after which the proxy's own connection is closed and the neutral
# write counts as not made. The transaction still goes on to Redis.
_NEUTRAL_WRITE_ERRORS = (
    OSError,
    EOFError,
    TimeoutError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    RespProtocolError,
    RespError,
)
# Errors of an idle connection that Redis closed while it was unused.
_STALE_CONNECTION_ERRORS = (OSError, asyncio.IncompleteReadError)


def plan_neutral_write(
    key_type: bytes, encoding: bytes | None, key: bytes
) -> list[tuple[bytes, ...]]:
    """Return the commands, to run between MULTI and EXEC, that write ``key``.

    ``key_type`` and ``encoding`` are the replies of TYPE and OBJECT ENCODING.
    The sentinel members are random, so they are not already in the key.
    """
    sentinel = SENTINEL_PREFIX + secrets.token_hex(8).encode()
    if key_type == b"set":
        # A text member would convert an integer set to a hash table permanently.
        member = str(2**62 + secrets.randbits(61)).encode()
        if encoding != b"intset":
            member = sentinel
        return [(b"SADD", key, member), (b"SREM", key, member)]
    if key_type == b"hash":
        return [(b"HSET", key, sentinel, b"1"), (b"HDEL", key, sentinel)]
    if key_type == b"zset":
        return [(b"ZADD", key, b"0", sentinel), (b"ZREM", key, sentinel)]
    if key_type == b"list":
        # RPOP removes the element RPUSH appended, because nothing runs between.
        return [(b"RPUSH", key, sentinel), (b"RPOP", key)]
    if key_type == b"none":
        return [(b"SET", key, sentinel), (b"DEL", key)]
    # For strings, streams and module types, RENAME moves the value object
    # itself, so even its encoding and a stream's consumer groups stay the same.
    # No add-and-remove pair fits a stream, because XADD and XDEL change its
    # last ID. In redis-server 7.0.15, neither XSETID to the same ID nor XGROUP
    # CREATE and DESTROY invalidate a WATCH.
    return [(b"RENAME", key, sentinel), (b"RENAME", sentinel, key)]


class ConflictInjector:
    """Neutral writes from a small pool of the proxy's own Redis connections."""

    def __init__(
        self, host: str, port: int, timeout_s: float, max_idle_connections: int = 8
    ) -> None:
        self._host = host
        self._port = port
        self._timeout_s = timeout_s
        self._max_idle = max_idle_connections
        self._idle: list[RespConnection] = []
        self._closed = False
        self._warnings = RateLimitedLogger(logger)

    async def write_neutrally(self, db: int, key: bytes) -> bool:
        """Write to ``key`` in database ``db`` without changing it.

        Return True when the write was made, so that a transaction that watched
        the key before it will abort. Return False, after logging why, when the
        write could not be made, for example because Redis is unreachable.
        """
        try:
            async with asyncio.timeout(self._timeout_s):
                if self._idle:
                    try:
                        return await self._write_on(self._idle.pop(), db, key)
                    except _STALE_CONNECTION_ERRORS:
                        # A Redis restart closes idle connections. Repeating the
                        # write on a new connection is safe because it is neutral.
                        pass
                connection = await RespConnection.open(self._host, self._port)
                return await self._write_on(connection, db, key)
        except _NEUTRAL_WRITE_ERRORS as error:
            self._warnings.warning(
                "neutral-write",
                "neutral write to key %r in database %d failed, so the "
                "transaction goes on without a conflict: %s",
                key,
                db,
                _describe(error),
            )
            return False

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    async def _write(self, connection: RespConnection, db: int, key: bytes) -> bool:
        if connection.db != db:
            await connection.call(b"SELECT", str(db).encode())
            connection.db = db

        # Step 1: watch the key and learn its type.
        _, key_type, encoding = await connection.call_many(
            [(b"WATCH", key), (b"TYPE", key), (b"OBJECT", b"ENCODING", key)]
        )
        if isinstance(key_type, RespError):
            raise key_type
        if not isinstance(key_type, bytes):
            raise RespProtocolError(f"TYPE returned {key_type!r}, expected a name")
        if not isinstance(encoding, bytes):
            encoding = None  # None for an absent key.
        commands = plan_neutral_write(key_type, encoding, key)

        # Step 2: the pair of writes, which aborts if the key changed since step 1.
        replies = await connection.call_many([(b"MULTI",), *commands, (b"EXEC",)])
        result = replies[-1]
        if result is None:
            logger.debug(
                "neutral write to key %r aborted because another client changed it",
                key,
            )
            return False
        if isinstance(result, RespError):
            raise result
        if not isinstance(result, list):
            raise RespProtocolError(f"EXEC returned {result!r}, expected an array")
        for command, reply in zip(commands, result, strict=True):
            if isinstance(reply, RespError):
                raise RespError(f"{command[0].decode()} on a {key_type!r}: {reply}")
        return True

    async def _write_on(self, connection: RespConnection, db: int, key: bytes) -> bool:
        """Make the neutral write on ``connection``, then keep it idle or close it."""
        reusable = False
        try:
            written = await self._write(connection, db, key)
            reusable = True
            return written
        finally:
            if reusable and not self._closed:
                self._release(connection)
            else:
                connection.close()

    def _release(self, connection: RespConnection) -> None:
        if len(self._idle) < self._max_idle:
            self._idle.append(connection)
        else:
            connection.close()


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    return f"{type(error).__name__}: {error}"
