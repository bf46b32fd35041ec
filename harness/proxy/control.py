"""The proxy's HTTP control endpoint: counters, the conflict fraction, health.

- ``GET /stats`` returns the counters as JSON (see ``ProxyServer.stats``).
- ``POST /config`` with ``{"watch_conflict_fraction": x}`` sets the fraction
  and returns ``{"fraction": x}``. A value outside 0..1 or any other field
  gets ``400 {"error": "bad_request", "detail": ...}``.
- ``GET /health`` returns 200 while the proxy runs. It does not probe Redis.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from harness.proxy.config import ProxyConfigError, validate_fraction

logger = logging.getLogger(__name__)

FRACTION_FIELD = "watch_conflict_fraction"


class ControlEndpoint:
    """The aiohttp server of the control endpoint."""

    def __init__(
        self,
        stats: Callable[[], dict[str, Any]],
        set_fraction: Callable[[float], None],
    ) -> None:
        self._stats = stats
        self._set_fraction = set_fraction
        app = web.Application()
        app.router.add_get("/stats", self._handle_stats)
        app.router.add_post("/config", self._handle_config)
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
        self._set_fraction(fraction)
        return web.json_response({"fraction": fraction})


def _bad_request(detail: str) -> web.Response:
    logger.warning("rejected a control request: %s", detail)
    return web.json_response(
        {"error": "bad_request", "detail": detail},
        status=web.HTTPBadRequest.status_code,
    )
