"""A minimal RESP2 client for the proxy's own connections to Redis.

The proxy uses it only for its neutral writes. It stays in the standard
library so that the proxy needs no Redis client package.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TypeAlias


class RespError(Exception):
    """An error reply from Redis, such as ``WRONGTYPE ...`` or ``EXECABORT ...``."""


# A decoded reply: simple strings and bulk strings are bytes, integers are int,
# arrays are lists, a null bulk string or null array is None, and an error
# reply is a RespError value (returned, not raised, by call_many).
Reply: TypeAlias = "bytes | int | list[Reply] | RespError | None"


class RespProtocolError(Exception):
    """A reply that is not valid RESP2, so the connection is no longer usable."""


def encode_command(arguments: Sequence[bytes]) -> bytes:
    """Encode one command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(arguments)]
    for argument in arguments:
        parts.append(b"$%d\r\n" % len(argument))
        parts.append(argument)
        parts.append(b"\r\n")
    return b"".join(parts)


class RespConnection:
    """One TCP connection to Redis that sends pipelined commands."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._reader = reader
        self._writer = writer
        # The database this connection has selected.
        self.db = 0

    @classmethod
    async def open(cls, host: str, port: int) -> RespConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def call_many(self, commands: Sequence[Sequence[bytes]]) -> list[Reply]:
        """Send the commands in one write and return their replies in order."""
        self._writer.write(b"".join(encode_command(command) for command in commands))
        await self._writer.drain()
        return [await self._read_reply() for _ in commands]

    async def call(self, *arguments: bytes) -> Reply:
        """Send one command and return its reply, raising RespError for an error."""
        [reply] = await self.call_many([arguments])
        if isinstance(reply, RespError):
            raise reply
        return reply

    def close(self) -> None:
        self._writer.close()

    async def _read_reply(self) -> Reply:
        line = await self._reader.readuntil(b"\r\n")
        kind, payload = line[:1], line[1:-2]
        if kind == b"+":
            return payload
        if kind == b"-":
            return RespError(payload.decode("utf-8", "replace"))
        if kind == b":":
            return _to_int(payload)
        if kind == b"$":
            length = _to_int(payload)
            if length < 0:
                return None
            data = await self._reader.readexactly(length + 2)
            return data[:-2]
        if kind == b"*":
            count = _to_int(payload)
            if count < 0:
                return None
            return [await self._read_reply() for _ in range(count)]
        raise RespProtocolError(f"unexpected reply line {line[:80]!r} from Redis")


def _to_int(payload: bytes) -> int:
    try:
        return int(payload)
    except ValueError:
        raise RespProtocolError(f"invalid integer {payload!r} in a reply") from None
