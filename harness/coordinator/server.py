"""Entry point of ``python -m harness.coordinator``: settings from the environment,
then the app until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from aiohttp import web

from harness.coordinator.app import create_app
from harness.coordinator.errors import StoreUnavailable
from harness.coordinator.settings import Settings, SettingsError

logger = logging.getLogger(__name__)

# Exit codes: 2 for an invalid environment, 1 when a store stays unreachable.
EXIT_BAD_SETTINGS = 2
EXIT_NO_STORE = 1


def main(environ: Mapping[str, str] = os.environ) -> int:
    """Run one coordinator instance and return its exit code."""
    try:
        settings = Settings.from_env(environ)
    except SettingsError as err:
        print(f"harness.coordinator: {err}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        # No access log: one line per request would cost more than the Lua
        # assignment itself under a storm; /metrics counts requests instead.
        web.run_app(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            access_log=None,
            print=None,
            shutdown_timeout=5,
        )
    except StoreUnavailable as err:
        logger.error("coordinator %s could not start: %s", settings.instance_id, err)
        return EXIT_NO_STORE
    return 0
