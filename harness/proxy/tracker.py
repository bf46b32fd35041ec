"""Incremental parser of the commands a client sends to Redis, for WATCH tracking.

The proxy forwards every byte unchanged. It parses the client-to-server stream
only to know which keys a connection watches and where each EXEC starts, so it
can write to a watched key before Redis receives the EXEC.

Requests are RESP arrays of bulk strings, which is what client libraries send.
Inline commands (a plain text line, as typed into telnet) are passed through
but not tracked. Bulk strings that the tracker does not need are skipped by
their length and not kept, so a large value is never buffered whole and costs
no Python work per byte.
"""

from __future__ import annotations

from dataclasses import dataclass

# Redis replies with a protocol error and closes the connection when an inline
# command or an array or bulk header has no line end within 64 KiB
# (PROTO_INLINE_MAX_SIZE). Checked on redis-server 7.0.15.
MAX_HEADER_LENGTH = 64 * 1024

# Commands whose arguments the tracker needs. Only the name of any other
# command is read.
_COMMANDS_WITH_ARGUMENTS = frozenset({b"WATCH", b"SELECT"})

_ASTERISK = ord("*")
_DOLLAR = ord("$")


@dataclass(frozen=True)
class ExecPoint:
    """An EXEC of a transaction that watches keys, found in one chunk of input.

    ``offset`` is where the EXEC command starts in that chunk, or 0 when it
    started in an earlier chunk. Redis does not run a command before all its
    bytes have arrived, so an EXEC whose first bytes were already forwarded is
    still held back by holding the rest. ``watched`` lists the (database, key)
    pairs in the order they were first watched.
    """

    offset: int
    watched: tuple[tuple[int, bytes], ...]


class TransactionTracker:
    """WATCH, MULTI and database state of one client connection.

    The state follows redis-server 7.0.15. WATCH inside MULTI is rejected and
    adds no keys. UNWATCH inside MULTI is queued, so the keys stay watched
    until EXEC. EXEC or DISCARD without MULTI is an error that keeps the
    watched keys. EXEC and DISCARD in MULTI, UNWATCH and RESET clear them.
    """

    def __init__(self) -> None:
        self.watched: dict[tuple[int, bytes], None] = {}
        self.db = 0
        self.in_multi = False
        # Set after a protocol error. Redis closes such a connection, and the
        # tracker stops parsing instead of guessing where commands start.
        self.error: str | None = None

        self._buffer = bytearray()
        # Stream offset of self._buffer[0], counted from the connection's start.
        self._buffer_start = 0
        self._command_start = 0
        self._arity = 0
        self._arguments_left = 0
        # Bytes still expected of the current bulk string including its CRLF,
        # or -1 while its "$<length>" header is expected.
        self._bulk_left = -1
        self._bulk_parts: list[bytes] = []
        self._name: bytes | None = None
        self._arguments: list[bytes] | None = None

    @property
    def buffered_bytes(self) -> int:
        """Number of bytes kept back because the parser needs more to decide."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[ExecPoint]:
        """Parse the next chunk and return its EXECs that have watched keys."""
        if self.error is not None:
            return []
        chunk_start = self._buffer_start + len(self._buffer)
        self._buffer += data
        points: list[ExecPoint] = []
        try:
            consumed = self._parse(points, chunk_start)
        except _ProtocolError as error:
            self.error = str(error)
            self._buffer.clear()
            return points
        del self._buffer[:consumed]
        self._buffer_start += consumed
        return points

    def _parse(self, points: list[ExecPoint], chunk_start: int) -> int:
        """Parse as much of the buffer as is complete and return the bytes used."""
        end = len(self._buffer)
        position = 0
        while position < end:
            if self._arguments_left == 0:
                next_position = self._parse_array_header(position)
            elif self._bulk_left < 0:
                next_position = self._parse_bulk_header(position)
            else:
                next_position = self._parse_bulk_data(position, points, chunk_start)
            if next_position < 0:
                # Keep the incomplete header line for the next chunk.
                if end - position > MAX_HEADER_LENGTH:
                    raise _ProtocolError(
                        f"no line end within {MAX_HEADER_LENGTH} bytes of a "
                        "header or inline command"
                    )
                return position
            position = next_position
        return position

    def _parse_array_header(self, position: int) -> int:
        buffer = self._buffer
        self._command_start = self._buffer_start + position
        if buffer[position] != _ASTERISK:
            newline = buffer.find(b"\n", position)
            return -1 if newline < 0 else newline + 1
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return -1
        count = _parse_integer(buffer, position + 1, line_end, "array length")
        # Redis skips an empty or null array (*0, *-1) without a reply.
        if count > 0:
            self._arity = count
            self._arguments_left = count
            self._name = None
            self._arguments = None
        return line_end + 2

    def _parse_bulk_header(self, position: int) -> int:
        buffer = self._buffer
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return -1
        if buffer[position] != _DOLLAR:
            raise _ProtocolError(
                f"expected '$' at the start of a bulk string, got "
                f"{bytes(buffer[position : position + 1])!r}"
            )
        length = _parse_integer(buffer, position + 1, line_end, "bulk length")
        if length < 0:
            raise _ProtocolError(f"invalid bulk length {length}")
        self._bulk_left = length + 2
        self._bulk_parts = []
        return line_end + 2

    def _parse_bulk_data(
        self, position: int, points: list[ExecPoint], chunk_start: int
    ) -> int:
        buffer = self._buffer
        captured = self._name is None or self._arguments is not None
        length = min(len(buffer) - position, self._bulk_left)
        if captured:
            self._bulk_parts.append(bytes(buffer[position : position + length]))
        self._bulk_left -= length
        position += length
        if self._bulk_left > 0:
            return position

        self._bulk_left = -1
        self._arguments_left -= 1
        if captured:
            value = b"".join(self._bulk_parts)[:-2]
            self._bulk_parts = []
            if self._name is None:
                self._name = value.upper()
                if self._name in _COMMANDS_WITH_ARGUMENTS:
                    self._arguments = []
            else:
                assert self._arguments is not None
                self._arguments.append(value)
        if self._arguments_left == 0:
            self._apply_command(points, chunk_start)
        return position

    def _apply_command(self, points: list[ExecPoint], chunk_start: int) -> None:
        name = self._name
        arity = self._arity
        if name == b"EXEC" and arity == 1:
            if self.in_multi:
                if self.watched:
                    offset = max(0, self._command_start - chunk_start)
                    points.append(ExecPoint(offset, tuple(self.watched)))
                self.in_multi = False
                self.watched.clear()
        elif name == b"MULTI" and arity == 1:
            self.in_multi = True
        elif name == b"DISCARD" and arity == 1:
            if self.in_multi:
                self.in_multi = False
                self.watched.clear()
        elif name == b"WATCH" and arity >= 2:
            if not self.in_multi:
                assert self._arguments is not None
                for key in self._arguments:
                    self.watched[(self.db, key)] = None
        elif name == b"UNWATCH" and arity == 1:
            if not self.in_multi:
                self.watched.clear()
        elif name == b"RESET" and arity == 1:
            self.in_multi = False
            self.watched.clear()
            self.db = 0
        elif name == b"SELECT" and arity == 2:
            # NOTE: SELECT inside MULTI runs only if EXEC commits, which the
            # proxy cannot see without parsing replies, so it is not tracked.
            if not self.in_multi:
                assert self._arguments is not None
                try:
                    self.db = int(self._arguments[0])
                except ValueError:
                    pass  # Redis rejects it and keeps the database.


class _ProtocolError(Exception):
    pass


def _parse_integer(buffer: bytearray, start: int, end: int, field: str) -> int:
    text = bytes(buffer[start:end])
    try:
        return int(text)
    except ValueError:
        raise _ProtocolError(f"invalid {field} {text!r}") from None
