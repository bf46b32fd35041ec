"""A proxy's HTTP control endpoint: counters, fault settings, health.

- ``GET /stats`` returns the counters as JSON (see ``ProxyServer.stats``).
- ``POST /config`` with ``{"watch_conflict_fraction": x}`` sets the fraction
  and returns ``{"fraction": x}``. A value outside 0..1 or any other field
  gets ``400 {"error": "bad_request", "detail": ...}``. Only the RESP proxy
  has this route.
- ``POST /latency`` with ``{"delay_ms", "jitter_ms", "clients"}`` delays what
  those client addresses send (``clients`` null: every client) and returns
  ``{"latency": <rules>}``; ``POST /latency/clear`` with ``{"clients"}``
  removes those rules (null: all of them); ``GET /latency`` returns the rules.
- ``GET /health`` returns 200 while the proxy runs. It does not probe the
  upstream server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from harness.proxy.config import ProxyConfigError, validate_fraction
from harness.proxy.latency import LatencyRules, parse_clients, parse_latency_request

logger = logging.getLogger(__name__)

FRACTION_FIELD = "watch_conflict_fraction"


class ControlEndpoint:
    """The aiohttp server of the control endpoint."""

    def __init__(
        self,
        stats: Callable[[], dict[str, Any]],
        set_fraction: Callable[[float], None] | None,
        latency: LatencyRules | None = None,
    ) -> None:
        self._stats = stats
        self._set_fraction = set_fraction
        self._latency = latency
        app = web.Application()
        app.router.add_get("/stats", self._handle_stats)
        if set_fraction is not None:
            app.router.add_post("/config", self._handle_config)
        if latency is not None:
            app.router.add_get("/latency", self._handle_latency)
            app.router.add_post("/latency", self._handle_set_latency)
            app.router.add_post("/latency/clear", self._handle_clear_latency)
        app.router.add_get("/health", self._handle_health)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self, host: str, port: int) -> int:
        """Start serving and return the bound port (useful when ``port`` is 0)."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        return self._runner.addresses[0][1]

    async def close(self) -> None:
        await self._runner.cleanup()

    async def _handle_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self._stats())

    async def _handle_health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _handle_config(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _bad_request(
                f'the body is not valid JSON: send {{"{FRACTION_FIELD}": 0.2}}'
            )
        if not isinstance(body, dict) or FRACTION_FIELD not in body:
            return _bad_request(
                f"missing field {FRACTION_FIELD!r}: send "
                f'{{"{FRACTION_FIELD}": <number from 0 to 1>}}, got {body!r:.200}'
            )
        unknown = sorted(set(body) - {FRACTION_FIELD})
        if unknown:
            return _bad_request(
                f"unknown fields {unknown}: only {FRACTION_FIELD!r} can be set"
            )
        try:
            fraction = validate_fraction(body[FRACTION_FIELD], FRACTION_FIELD)
        except ProxyConfigError as error:
            return _bad_request(str(error))
        assert self._set_fraction is not None  # the route exists only with it
        self._set_fraction(fraction)
        return web.json_response({"fraction": fraction})

    async def _handle_latency(self, _request: web.Request) -> web.Response:
        assert self._latency is not None  # the route exists only with it
        return web.json_response({"latency": self._latency.snapshot()})

    async def _handle_set_latency(self, request: web.Request) -> web.Response:
        assert self._latency is not None
        body = await _json_body(request)
        try:
            latency, clients = parse_latency_request(body)
        except ProxyConfigError as error:
            return _bad_request(str(error))
        self._latency.set(latency, clients)
        logger.info(
            "latency %s ms, jitter %s ms, for %s",
            latency.delay_ms,
            latency.jitter_ms,
            ", ".join(clients) if clients is not None else "every client",
        )
        return web.json_response({"latency": self._latency.snapshot()})

    async def _handle_clear_latency(self, request: web.Request) -> web.Response:
        assert self._latency is not None
        body = await _json_body(request)
        if not isinstance(body, dict) or set(body) - {"clients"}:
            return _bad_request(
                f'expected {{"clients": [addresses] or null}}, got {body!r:.200}'
            )
        try:
            clients = parse_clients(body.get("clients"))
        except ProxyConfigError as error:
            return _bad_request(str(error))
        self._latency.clear(clients)
        logger.info(
            "latency cleared for %s",
            ", ".join(clients) if clients is not None else "every client",
        )
        return web.json_response({"latency": self._latency.snapshot()})


async def _json_body(request: web.Request) -> object:
    """Return the decoded JSON body, or None when it is not valid JSON."""
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _bad_request(detail: str) -> web.Response:
    logger.warning("rejected a control request: %s", detail)
    return web.json_response(
        {"error": "bad_request", "detail": detail},
        status=web.HTTPBadRequest.status_code,
    )
