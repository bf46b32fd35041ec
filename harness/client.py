"""HTTP calls to coordinator instances, each recorded as a history operation.

Every call is one operation: an ``invoke`` line before the request and one
completion after it. The completion type follows what the reply proves. It is
``ok`` for 200/201, and ``fail`` for a definite refusal: 409, 404, 400, or a
connection refused before anything was sent. It is ``info`` when the request
may or may not have taken effect: a timeout, a reset after sending, a 5xx.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from harness.history import HistoryWriter, Operation

DEFINITE_REFUSALS = (400, 404, 409)


class ProcessPool:
    """Jepsen-style logical processes: one open operation per process at a time.

    A process whose operation ended in ``info`` is retired and never reused,
    because its request may still be in flight somewhere.
    """

    def __init__(self) -> None:
        self._free: list[int] = []
        self._next = 0

    def acquire(self) -> int:
        if self._free:
            return self._free.pop()
        self._next += 1
        return self._next - 1

    def release(self, process: int, retire: bool) -> None:
        if not retire:
            self._free.append(process)


@dataclass
class CallStats:
    """Counts and latencies per operation kind, as the client saw them."""

    counts: dict[str, int] = field(default_factory=dict)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)

    def record(self, f: str, type_: str, latency_ms: float) -> None:
        key = f"{f}:{type_}"
        self.counts[key] = self.counts.get(key, 0) + 1
        self.latencies_ms.setdefault(f, []).append(latency_ms)


class CoordinatorClient:
    """Sends requests to named instances and writes each one to the history."""

    def __init__(
        self,
        history: HistoryWriter,
        instance_url: Callable[[str], str | None],
        timeout_s: float,
        on_completion: Callable[[Operation, float], None] = lambda _op, _ms: None,
        max_connections: int = 512,
    ) -> None:
        self.history = history
        self.instance_url = instance_url
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.on_completion = on_completion
        self.processes = ProcessPool()
        self.stats = CallStats()
        self._connector_limit = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> CoordinatorClient:
        connector = aiohttp.TCPConnector(limit=self._connector_limit)
        self._session = aiohttp.ClientSession(connector=connector)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(
        self,
        f: str,
        instance: str,
        method: str,
        path: str,
        value: dict[str, Any],
        body: dict[str, Any] | None = None,
    ) -> tuple[Operation, Any]:
        """Performs one request; returns its completion and the reply's JSON body."""
        assert self._session is not None, "use CoordinatorClient as a context manager"
        process = self.processes.acquire()
        self.history.append(process, "invoke", f, value, instance)
        started = time.monotonic()
        type_, extra, payload = await self._request(instance, method, path, body)
        latency_ms = (time.monotonic() - started) * 1000
        op = self.history.append(process, type_, f, {**value, **extra}, instance)
        self.processes.release(process, retire=type_ == "info")
        self.stats.record(f, type_, latency_ms)
        self.on_completion(op, latency_ms)
        return op, payload

    async def _request(
        self, instance: str, method: str, path: str, body: dict[str, Any] | None
    ) -> tuple[str, dict[str, Any], Any]:
        base = self.instance_url(instance)
        if base is None:
            # The instance is down (killed and not yet restarted): nothing was sent.
            return "fail", {"error": "instance-down"}, None
        try:
            async with self._session.request(
                method, base + path, json=body, timeout=self.timeout
            ) as reply:
                status = reply.status
                try:
                    payload = await reply.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    payload = None
        except aiohttp.ClientConnectorError as err:
            # Refused at connect time: the request never left this process.
            return (
                "fail",
                {"error": "connect-refused", "detail": str(err.os_error)},
                None,
            )
        except TimeoutError:
            return "info", {"error": "timeout"}, None
        except aiohttp.ServerDisconnectedError:
            return "info", {"error": "disconnected"}, None
        except (aiohttp.ClientError, OSError) as err:
            # Sent, or partly sent, before the connection broke.
            return "info", {"error": "connection-lost", "detail": str(err)[:200]}, None
        except asyncio.CancelledError:
            raise
        type_, extra = classify(status, payload)
        return type_, extra, payload


def classify(status: int, payload: Any) -> tuple[str, dict[str, Any]]:
    """Maps an HTTP reply to a completion type and the fields the history keeps."""
    body = payload if isinstance(payload, dict) else {}
    if status in (200, 201):
        extra: dict[str, Any] = {"status": status}
        for key in ("slot_id", "created"):
            if key in body:
                extra[key] = body[key]
        return "ok", extra
    error = body.get("error") or f"http-{status}"
    extra = {"status": status, "error": error}
    if status in DEFINITE_REFUSALS:
        return "fail", extra
    return "info", extra
