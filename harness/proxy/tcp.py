"""A TCP relay that can delay what its clients send: ``python -m harness.proxy.tcp``.

The cluster runs it as ``postgres-proxy`` between the coordinator instances
and Postgres, so a latency fault can slow down one instance's Postgres
traffic where the kernel has no netem. Bytes pass unchanged. The relay
understands no protocol, so it works for any TCP service whose clients do
not half-close: when either side closes, the relay closes both. Its control
endpoint has the RESP proxy's ``/stats``, ``/latency`` and ``/health``
routes (harness/proxy/control.py).

It is configured by environment variables (``--help`` lists them), runs
until SIGTERM or SIGINT, and exits with 2 on an invalid setting or a port
that cannot be bound.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from harness.proxy.command import run_proxy_command
from harness.proxy.config import (
    RELAY_ENVIRONMENT_HELP,
    RelayConfig,
)
from harness.proxy.control import ControlEndpoint
from harness.proxy.latency import DelayedReader, LatencyRules, latency_stats
from harness.proxy.logs import RateLimitedLogger
from harness.proxy.server import peer_host

logger = logging.getLogger(__name__)

_READ_SIZE = 64 * 1024


class TcpRelay:
    """A running relay. Create it with ``serve_relay``, stop it with ``close``."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        # Bound ports, known after start().
        self.port = 0
        self.control_port = 0
        self.latency = LatencyRules(config.seed)
        self._connections = 0
        self._rejected = 0
        self._delayed_chunks = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._control = ControlEndpoint(self.stats, None, self.latency)
        self._server: asyncio.Server | None = None
        self._closed = False
        self._warnings = RateLimitedLogger(logger)

    def stats(self) -> dict[str, Any]:
        """Return the counters since start as a JSON-ready dict.

        ``connections`` counts the client connections relayed, ``rejected``
        those closed at once because ``max_connections`` were open, and
        ``delayed_chunks`` the chunks sent late by a latency rule.
        """
        return {
            "connections": self._connections,
            "open_connections": len(self._tasks),
            "rejected": self._rejected,
            "upstream": f"{self.config.upstream_host}:{self.config.upstream_port}",
            **latency_stats(self.latency, self._delayed_chunks),
        }

    async def start(self) -> None:
        """Bind the relay and control ports and start accepting connections."""
        config = self.config
        try:
            self._server = await asyncio.start_server(
                self._handle_client, config.listen_host, config.listen_port
            )
            self.port = self._server.sockets[0].getsockname()[1]
            self.control_port = await self._control.start(
                config.control_host, config.control_port
            )
        except BaseException:
            await self.close()
            raise
        logger.info(
            "TCP relay listening on %s:%d, forwarding to %s:%d, control endpoint "
            "on %s:%d",
            config.listen_host,
            self.port,
            config.upstream_host,
            config.upstream_port,
            config.control_host,
            self.control_port,
        )

    async def close(self) -> None:
        """Stop accepting, close every relayed connection and the control endpoint."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        await self._control.close()
        logger.info("TCP relay stopped after %d connections", self._connections)

    async def _handle_client(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        if self._closed or len(self._tasks) >= self.config.max_connections:
            if not self._closed:
                self._rejected += 1
                self._warnings.warning(
                    "max-connections",
                    "closed a connection from %s because %d are open, the maximum "
                    "(MAX_CONNECTIONS)",
                    peer_host(client_writer),
                    len(self._tasks),
                )
            await _close_writer(client_writer)
            return
        # close() cancels this inner task rather than the one start_server
        # created, because Python 3.11 logs an error when that one is cancelled.
        connection = asyncio.create_task(self._relay(client_reader, client_writer))
        self._tasks.add(connection)
        connection.add_done_callback(self._tasks.discard)
        try:
            await connection
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    async def _relay(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self._connections += 1
        client = peer_host(client_writer)
        config = self.config
        try:
            try:
                async with asyncio.timeout(config.upstream_connect_timeout_s):
                    upstream_reader, upstream_writer = await asyncio.open_connection(
                        config.upstream_host, config.upstream_port
                    )
            except (OSError, TimeoutError) as error:
                self._warnings.warning(
                    "upstream-connect",
                    "closing a connection from %s because %s:%d is unreachable: %s",
                    client,
                    config.upstream_host,
                    config.upstream_port,
                    error or "timed out",
                )
                return
            try:
                await self._pipe_both_ways(
                    client,
                    client_reader,
                    client_writer,
                    upstream_reader,
                    upstream_writer,
                )
            finally:
                await _close_writer(upstream_writer)
        finally:
            await _close_writer(client_writer)

    async def _pipe_both_ways(
        self,
        client: str,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> None:
        """Copy both directions until either side closes or fails."""
        delayed = DelayedReader(
            client_reader,
            _READ_SIZE,
            lambda: self.latency.delay_s(client),
            on_delayed=self._count_delayed,
            active=lambda: self.latency.applies_to(client),
        )
        requests = asyncio.create_task(_pipe(delayed.read, upstream_writer))
        replies = asyncio.create_task(
            _pipe(lambda: upstream_reader.read(_READ_SIZE), client_writer)
        )
        try:
            await asyncio.wait((requests, replies), return_when=asyncio.FIRST_COMPLETED)
        finally:
            requests.cancel()
            replies.cancel()
            await asyncio.gather(requests, replies, return_exceptions=True)
            await delayed.close()

    def _count_delayed(self) -> None:
        self._delayed_chunks += 1


async def _pipe(read, writer: asyncio.StreamWriter) -> None:
    """Copy chunks from ``read()`` to ``writer`` until the end of the stream."""
    while True:
        try:
            data = await read()
        except OSError:
            return
        if not data:
            return
        writer.write(data)
        try:
            await writer.drain()
        except OSError:
            return


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass  # The peer reset the connection, which leaves it closed anyway.


async def serve_relay(config: RelayConfig) -> TcpRelay:
    """Start a relay with ``config`` and return it once both ports are bound."""
    relay = TcpRelay(config)
    await relay.start()
    return relay


def main(argv: list[str] | None = None) -> int:
    """Run the relay until it is signalled to stop, and return the exit code."""
    return run_proxy_command(
        argv,
        prog="python -m harness.proxy.tcp",
        description=(
            "Relay TCP connections unchanged, and delay what chosen clients send "
            "when the control endpoint sets a latency."
        ),
        environment_help=RELAY_ENVIRONMENT_HELP,
        load_config=RelayConfig.from_env,
        serve=serve_relay,
        what="TCP relay",
    )


if __name__ == "__main__":
    sys.exit(main())
