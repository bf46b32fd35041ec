"""Command line of the RESP proxy: ``python -m harness.proxy.resp``.

It is configured by environment variables (``--help`` lists them), runs until
SIGTERM or SIGINT, and exits with 2 on an invalid setting or a port that
cannot be bound.
"""

from __future__ import annotations

import sys

from harness.proxy.command import run_proxy_command
from harness.proxy.config import ENVIRONMENT_HELP, ProxyConfig
from harness.proxy.server import serve


def main(argv: list[str] | None = None) -> int:
    """Run the proxy until it is signalled to stop, and return the exit code."""
    return run_proxy_command(
        argv,
        prog="python -m harness.proxy.resp",
        description=(
            "Relay Redis connections unchanged and make a chosen fraction of "
            "WATCH transactions abort by writing to a watched key, without "
            "changing its contents, just before their EXEC."
        ),
        environment_help=ENVIRONMENT_HELP,
        load_config=ProxyConfig.from_env,
        serve=serve,
        what="RESP proxy",
    )


if __name__ == "__main__":
    sys.exit(main())
