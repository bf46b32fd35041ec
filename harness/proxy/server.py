"""The RESP proxy: relays client connections to Redis and injects WATCH conflicts.

Each client connection gets its own connection to Redis. Bytes pass unchanged
in both directions. A TransactionTracker also parses the client-to-Redis
stream to find each EXEC of a transaction that watches keys. Before forwarding
such an EXEC, the proxy makes a neutral write to one of those keys with the
configured probability, so the EXEC aborts while the data stays the same.

The control endpoint can also set a latency, per client address or for all
clients, that delays what clients send (harness/proxy/latency.py).

Random choices come from one ``random.Random(seed)``. Each transaction with
watched keys draws ``random()``, and when that is below the fraction, one
``choice()`` among its watched keys in WATCH order. With one client sending
transactions one at a time, the choices repeat exactly for the same seed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from dataclasses import asdict, dataclass
from typing import Any

from harness.proxy.config import ProxyConfig, validate_fraction
from harness.proxy.conflicts import ConflictInjector
from harness.proxy.control import ControlEndpoint
from harness.proxy.latency import DelayedReader, LatencyRules, latency_stats
from harness.proxy.logs import RateLimitedLogger
from harness.proxy.tracker import ExecPoint, TransactionTracker

logger = logging.getLogger(__name__)

_CLIENT_READ_SIZE = 64 * 1024
_UPSTREAM_READ_SIZE = 256 * 1024


@dataclass
class ConnectionStats:
    """Counters of one client connection."""

    connection_id: int
    peer: str
    transactions: int = 0
    conflicts_injected: int = 0


@dataclass(frozen=True)
class _RelayEnd:
    """The reason one direction of a relay stopped."""

    side: str  # "client" or "upstream"
    reason: str


class ProxyServer:
    """A running proxy. Create it with ``serve``, stop it with ``close``."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        # Bound ports, known after start().
        self.port = 0
        self.control_port = 0

        self._fraction = config.watch_conflict_fraction
        self._rng = random.Random(config.seed)
        self._transactions = 0
        self._conflicts_injected = 0
        self._connections = 0
        self._open: dict[int, ConnectionStats] = {}
        self._connection_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._injector = ConflictInjector(
            config.upstream_host, config.upstream_port, config.injection_timeout_s
        )
        self.latency = LatencyRules(config.seed)
        self._delayed_chunks = 0
        self._control = ControlEndpoint(self.stats, self.set_fraction, self.latency)
        self._server: asyncio.Server | None = None
        self._closed = False
        self._warnings = RateLimitedLogger(logger)

    @property
    def fraction(self) -> float:
        """Probability that a transaction with watched keys gets a conflict."""
        return self._fraction

    def set_fraction(self, fraction: float) -> None:
        """Set the conflict probability, raising ProxyConfigError unless in 0..1."""
        fraction = validate_fraction(fraction, "watch_conflict_fraction")
        logger.info(
            "WATCH conflict fraction set to %s (was %s)", fraction, self._fraction
        )
        self._fraction = fraction

    def stats(self) -> dict[str, Any]:
        """Return the counters since start as a JSON-ready dict.

        ``transactions`` counts EXECs of transactions that watched keys,
        ``conflicts_injected`` the neutral writes made before them, and
        ``connections`` every client connection accepted. ``open_connections``
        has the same counters for each connection still open. ``latency`` has
        the latency rules by client address, and ``delayed_chunks`` counts
        the chunks sent late because of them.
        """
        return {
            "transactions": self._transactions,
            "conflicts_injected": self._conflicts_injected,
            "connections": self._connections,
            "fraction": self._fraction,
            "seed": self.config.seed,
            "upstream": f"{self.config.upstream_host}:{self.config.upstream_port}",
            "open_connections": [asdict(stats) for stats in self._open.values()],
            **latency_stats(self.latency, self._delayed_chunks),
        }

    async def start(self) -> None:
        """Bind the proxy and control ports and start accepting connections."""
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
            "RESP proxy listening on %s:%d, forwarding to Redis at %s:%d, "
            "control endpoint on %s:%d",
            config.listen_host,
            self.port,
            config.upstream_host,
            config.upstream_port,
            config.control_host,
            self.control_port,
        )
        logger.info("WATCH conflict fraction %s, seed %d", self._fraction, config.seed)

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
        await self._injector.close()
        await self._control.close()
        logger.info(
            "RESP proxy stopped after %d connections, %d transactions with watched "
            "keys and %d conflicts injected",
            self._connections,
            self._transactions,
            self._conflicts_injected,
        )

    async def _handle_client(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        if self._closed:
            await _close_writer(client_writer)
            return
        # close() cancels this inner task rather than the one start_server
        # created, because Python 3.11 logs an error when that one is cancelled.
        connection = asyncio.create_task(
            self._serve_connection(client_reader, client_writer)
        )
        self._tasks.add(connection)
        connection.add_done_callback(self._tasks.discard)
        try:
            await connection
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    async def _serve_connection(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self._connections += 1
        stats = ConnectionStats(
            next(self._connection_ids),
            _format_address(client_writer.get_extra_info("peername")),
        )
        self._open[stats.connection_id] = stats
        logger.debug("connection %d from %s opened", stats.connection_id, stats.peer)
        try:
            await self._relay_to_upstream(stats, client_reader, client_writer)
        except Exception:
            # A bug in the relay of one connection must not stop the proxy.
            logger.exception("connection %d from %s failed", *_ids(stats))
        finally:
            await _close_writer(client_writer)
            del self._open[stats.connection_id]
            logger.debug(
                "connection %d from %s closed after %d transactions with watched "
                "keys and %d conflicts injected",
                *_ids(stats),
                stats.transactions,
                stats.conflicts_injected,
            )

    async def _relay_to_upstream(
        self,
        stats: ConnectionStats,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
    ) -> None:
        config = self.config
        try:
            async with asyncio.timeout(config.upstream_connect_timeout_s):
                upstream_reader, upstream_writer = await asyncio.open_connection(
                    config.upstream_host, config.upstream_port
                )
        except (OSError, TimeoutError) as error:
            self._warnings.warning(
                "upstream-connect",
                "closing connection %d from %s because Redis at %s:%d is "
                "unreachable: %s",
                *_ids(stats),
                config.upstream_host,
                config.upstream_port,
                error or "timed out",
            )
            return
        # With no buffer allowance, drain() returns only once every byte written
        # so far is in the kernel, which the EXEC ordering below relies on.
        upstream_writer.transport.set_write_buffer_limits(high=0)
        try:
            end = await self._relay(
                stats, client_reader, client_writer, upstream_reader, upstream_writer
            )
        finally:
            await _close_writer(upstream_writer)
        if end.side == "upstream":
            self._warnings.warning(
                "upstream-relay",
                "closing connection %d from %s because Redis %s",
                *_ids(stats),
                end.reason,
            )
        else:
            logger.debug("connection %d from %s: client %s", *_ids(stats), end.reason)

    async def _relay(
        self,
        stats: ConnectionStats,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> _RelayEnd:
        """Relay both directions until either side closes, and return why."""
        client_host = peer_host(client_writer)
        delayed_reader = DelayedReader(
            client_reader,
            _CLIENT_READ_SIZE,
            lambda: self.latency.delay_s(client_host),
            on_delayed=self._count_delayed,
            active=lambda: self.latency.applies_to(client_host),
        )
        requests = asyncio.create_task(
            self._forward_requests(stats, delayed_reader, upstream_writer)
        )
        replies = asyncio.create_task(
            self._forward_replies(upstream_reader, client_writer)
        )
        try:
            await asyncio.wait((requests, replies), return_when=asyncio.FIRST_COMPLETED)
        finally:
            requests.cancel()
            replies.cancel()
            await asyncio.gather(requests, replies, return_exceptions=True)
            await delayed_reader.close()
        finished = requests if requests.done() and not requests.cancelled() else replies
        return finished.result()

    def _count_delayed(self) -> None:
        self._delayed_chunks += 1

    async def _forward_requests(
        self,
        stats: ConnectionStats,
        client_reader: DelayedReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> _RelayEnd:
        tracker = TransactionTracker()
        while True:
            try:
                data = await client_reader.read()
            except OSError as error:
                return _RelayEnd("client", f"read failed: {error}")
            if not data:
                return _RelayEnd("client", "closed the connection")

            had_error = tracker.error is not None
            points = tracker.feed(data)
            if tracker.error is not None and not had_error:
                logger.warning(
                    "connection %d from %s sent invalid RESP, so its transactions "
                    "are no longer tracked: %s",
                    *_ids(stats),
                    tracker.error,
                )

            view = memoryview(data)
            start = 0
            try:
                for point in points:
                    # The bytes before the EXEC, the WATCH included, are in the
                    # kernel before the neutral write starts. Redis reads them
                    # before it replies to the write's first round trip, so the
                    # write lands after the WATCH.
                    # NOTE: when a client pipelines many commands ahead of WATCH
                    # in one packet, Redis may read the WATCH only after the
                    # write. That transaction then commits but is counted in
                    # conflicts_injected.
                    upstream_writer.write(view[start : point.offset])
                    start = point.offset
                    await upstream_writer.drain()
                    await self._before_exec(stats, point)
                upstream_writer.write(view[start:])
                await upstream_writer.drain()
            except OSError as error:
                return _RelayEnd("upstream", f"write failed: {error}")

    async def _forward_replies(
        self, upstream_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> _RelayEnd:
        while True:
            try:
                data = await upstream_reader.read(_UPSTREAM_READ_SIZE)
            except OSError as error:
                return _RelayEnd("upstream", f"read failed: {error}")
            if not data:
                return _RelayEnd("upstream", "closed the connection")
            client_writer.write(data)
            try:
                await client_writer.drain()
            except OSError as error:
                return _RelayEnd("client", f"write failed: {error}")

    async def _before_exec(self, stats: ConnectionStats, point: ExecPoint) -> None:
        """Count the transaction and maybe make a neutral write to a watched key."""
        self._transactions += 1
        stats.transactions += 1
        if self._rng.random() >= self._fraction:
            return
        db, key = self._rng.choice(point.watched)
        if await self._injector.write_neutrally(db, key):
            self._conflicts_injected += 1
            stats.conflicts_injected += 1


async def serve(config: ProxyConfig) -> ProxyServer:
    """Start a proxy with ``config`` and return it once both ports are bound."""
    server = ProxyServer(config)
    await server.start()
    return server


def _ids(stats: ConnectionStats) -> tuple[int, str]:
    return stats.connection_id, stats.peer


def peer_host(writer: asyncio.StreamWriter) -> str:
    """Return the IP address of a connection's client, which latency rules name."""
    address = writer.get_extra_info("peername")
    if isinstance(address, tuple) and address:
        return str(address[0])
    return str(address)


def _format_address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass  # The peer reset the connection, which leaves it closed anyway.
