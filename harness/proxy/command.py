"""The proxies' shared command line: logging, configuration, signals, exit codes.

Each proxy is configured by environment variables (``--help`` lists them),
runs until SIGTERM or SIGINT, and exits with 2 on an invalid setting or a
port that cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from harness.proxy.config import ProxyConfigError

logger = logging.getLogger("harness.proxy")


def run_proxy_command(
    argv: list[str] | None,
    prog: str,
    description: str,
    environment_help: Mapping[str, str],
    load_config: Callable[[Mapping[str, str]], Any],
    serve: Callable[[Any], Awaitable[Any]],
    what: str,
) -> int:
    """Parses the command line, starts the server and returns the exit code.

    ``serve(config)`` starts the server and returns an object with an async
    ``close()``; ``what`` names the server in the error logged when it fails.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="environment variables:\n"
        + "\n".join(f"  {name:<25} {text}" for name, text in environment_help.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)

    level = os.environ.get("LOG_LEVEL", "INFO").strip().upper()
    if level not in logging.getLevelNamesMapping():
        print(
            f"error: LOG_LEVEL is {level!r}: expected DEBUG, INFO, WARNING or ERROR",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_config(os.environ)
    except ProxyConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve_until_signalled(serve, config))
    except OSError as error:
        logger.error("%s failed to start: %s", what, error)
        return 2
    return 0


async def _serve_until_signalled(
    serve: Callable[[Any], Awaitable[Any]], config: Any
) -> None:
    server = await serve(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()
