"""Latency with jitter that a proxy adds to what its clients send.

A rule applies to one client address or, under ``ALL_CLIENTS``, to every
client without a rule of its own. Each chunk a client sends is held for
``delay_ms`` plus a uniform draw from ``-jitter_ms`` to ``+jitter_ms``
(never below zero), as tc netem's ``delay D J`` does, so one request and
reply round trip takes about ``delay_ms`` longer. Bytes keep their order:
a chunk never leaves before the one read ahead of it.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.proxy.config import ProxyConfigError

ALL_CLIENTS = "*"
# Upper bound of a delay, and of a jitter, in milliseconds.
MAX_DELAY_MS = 60_000.0


@dataclass(frozen=True)
class Latency:
    """The delay and jitter, in milliseconds, of one rule."""

    delay_ms: float
    jitter_ms: float = 0.0

    def draw_s(self, rng: random.Random) -> float:
        """Draw one chunk's delay in seconds."""
        jitter = rng.uniform(-self.jitter_ms, self.jitter_ms) if self.jitter_ms else 0.0
        return max(0.0, self.delay_ms + jitter) / 1000


class LatencyRules:
    """The latency rules of one proxy, keyed by client address or ALL_CLIENTS."""

    def __init__(self, seed: int = 0) -> None:
        self._rules: dict[str, Latency] = {}
        self._rng = random.Random(seed)

    def set(self, latency: Latency, clients: list[str] | None) -> None:
        """Apply ``latency`` to each client address, or to all clients for None."""
        for client in clients if clients is not None else [ALL_CLIENTS]:
            self._rules[client] = latency

    def clear(self, clients: list[str] | None) -> None:
        """Remove the rules of these client addresses, or every rule for None."""
        if clients is None:
            self._rules.clear()
            return
        for client in clients:
            self._rules.pop(client, None)

    def applies_to(self, host: str) -> bool:
        return self.for_client(host) is not None

    def for_client(self, host: str) -> Latency | None:
        return self._rules.get(host) or self._rules.get(ALL_CLIENTS)

    def delay_s(self, host: str) -> float:
        """Draw the delay of the next chunk from ``host``: 0 without a rule."""
        latency = self.for_client(host)
        return latency.draw_s(self._rng) if latency else 0.0

    def snapshot(self) -> dict[str, dict[str, float]]:
        return {
            client: {"delay_ms": rule.delay_ms, "jitter_ms": rule.jitter_ms}
            for client, rule in sorted(self._rules.items())
        }


def parse_latency_request(body: object) -> tuple[Latency, list[str] | None]:
    """Read ``{"delay_ms", "jitter_ms", "clients"}``, raising ProxyConfigError."""
    example = '{"delay_ms": 200, "jitter_ms": 20, "clients": ["172.18.0.5"]}'
    if not isinstance(body, dict):
        raise ProxyConfigError(f"expected a JSON object such as {example}")
    unknown = sorted(set(body) - {"delay_ms", "jitter_ms", "clients"})
    if unknown:
        raise ProxyConfigError(
            f"unknown fields {unknown}: send only delay_ms, jitter_ms and clients, "
            f"such as {example}"
        )
    if "delay_ms" not in body:
        raise ProxyConfigError(f"missing field 'delay_ms': send {example}")
    delay_ms = _milliseconds(body["delay_ms"], "delay_ms")
    jitter_ms = _milliseconds(body.get("jitter_ms", 0), "jitter_ms")
    return Latency(delay_ms, jitter_ms), parse_clients(body.get("clients"))


def parse_clients(value: object) -> list[str] | None:
    """Read a list of client addresses; None (or absent) means every client."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(item, str) and item for item in value
    ):
        raise ProxyConfigError(
            f"clients is {value!r:.200}: expected a list of client IP addresses "
            'such as ["172.18.0.5"], or null for every client'
        )
    return list(value)


def _milliseconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProxyConfigError(
            f"{name} is {value!r}: expected a number of milliseconds from 0 "
            f"to {MAX_DELAY_MS:.0f}"
        )
    number = float(value)
    if math.isnan(number) or not 0 <= number <= MAX_DELAY_MS:
        raise ProxyConfigError(
            f"{name} is {value!r}: expected a number of milliseconds from 0 "
            f"to {MAX_DELAY_MS:.0f}"
        )
    return number


class DelayedReader:
    """Reads chunks from a stream and hands each out after the delay drawn for it.

    A background task reads as data arrives and stamps each chunk with its
    release time, so a chunk that waited in the socket buffer is not delayed
    twice. At most ``max_chunks`` wait at once. Past that the task stops
    reading, and TCP flow control slows the sender down. Until ``active()``
    first returns True, reads go straight to the stream, because the task's
    queue cost roughly 25-35% of the WATCH transactions per second through
    the RESP proxy (an estimate: 20 clients on a loaded 2-core machine).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        read_size: int,
        delay_s: Callable[[], float],
        max_chunks: int = 256,
        on_delayed: Callable[[], None] = lambda: None,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self._reader = reader
        self._active = active
        self._read_size = read_size
        self._delay_s = delay_s
        self._on_delayed = on_delayed
        # Items: (release time, data) or (release time, the read's error).
        self._queue: asyncio.Queue[tuple[float, bytes | OSError]] = asyncio.Queue(
            max_chunks
        )
        self._pump: asyncio.Task[None] | None = None

    async def read(self) -> bytes:
        """Return the next chunk once it is due; b"" at the end of the stream.

        Raises the OSError that reading the stream raised.
        """
        if self._pump is None:
            if not self._active():
                # Nothing reads ahead yet, so a direct read keeps the order.
                data = await self._reader.read(self._read_size)
                if not data or not self._active():
                    return data
                # A rule came in while this read waited. The chunk has just
                # arrived, so it gets the whole delay from now.
                delay = self._delay_s()
                if delay > 0:
                    self._on_delayed()
                    await asyncio.sleep(delay)
                return data
            self._pump = asyncio.create_task(self._read_ahead())
        release_at, item = await self._queue.get()
        wait = release_at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if isinstance(item, OSError):
            raise item
        return item

    async def close(self) -> None:
        """Stop the background read."""
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)

    async def _read_ahead(self) -> None:
        while True:
            try:
                data: bytes | OSError = await self._reader.read(self._read_size)
            except OSError as error:
                data = error
            delay = self._delay_s()
            if delay > 0:
                self._on_delayed()
            # The queue is first in, first out, so a chunk drawn a shorter
            # delay than the one before it leaves right after that one.
            await self._queue.put((time.monotonic() + delay, data))
            if not data or isinstance(data, OSError):
                return


def latency_stats(rules: LatencyRules, delayed_chunks: int) -> Mapping[str, Any]:
    """The latency part of a proxy's ``/stats`` reply."""
    return {"latency": rules.snapshot(), "delayed_chunks": delayed_chunks}
