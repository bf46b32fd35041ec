"""Command line of the RESP proxy: ``python -m harness.proxy.resp``.

It is configured by environment variables (``--help`` lists them), runs until
SIGTERM or SIGINT, and exits with 2 on an invalid setting or a port that
cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from harness.proxy.config import ENVIRONMENT_HELP, ProxyConfig, ProxyConfigError
from harness.proxy.server import serve

logger = logging.getLogger("harness.proxy")


def main(argv: list[str] | None = None) -> int:
    """Run the proxy until it is signalled to stop, and return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.proxy.resp",
        description=(
            "Relay Redis connections unchanged and make a chosen fraction of "
            "WATCH transactions abort by writing to a watched key, without "
            "changing its contents, just before their EXEC."
        ),
        epilog="environment variables:\n"
        + "\n".join(f"  {name:<25} {text}" for name, text in ENVIRONMENT_HELP.items()),
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
        config = ProxyConfig.from_env(os.environ)
    except ProxyConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(config))
    except OSError as error:
        logger.error("RESP proxy failed to start: %s", error)
        return 2
    return 0


async def _run(config: ProxyConfig) -> None:
    proxy = await serve(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    try:
        await stop.wait()
    finally:
        await proxy.close()


if __name__ == "__main__":
    sys.exit(main())
