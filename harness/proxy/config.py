"""Settings of the RESP proxy and the TCP relay, read from environment variables.

This package runs in the runtime image, which ships only ``harness/__init__.py``,
``harness/coordinator`` and ``harness/proxy``, so it imports nothing else of
``harness``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

# Environment variables and their help text, in the order ``--help`` lists them.
ENVIRONMENT_HELP = {
    "UPSTREAM_HOST": "host name or address of Redis (required)",
    "UPSTREAM_PORT": "TCP port of Redis (default 6379)",
    "LISTEN_HOST": "address the proxy listens on for clients (default 0.0.0.0)",
    "LISTEN_PORT": "TCP port the proxy listens on for clients (default 6379)",
    "CONTROL_HOST": "address of the HTTP control endpoint (default 0.0.0.0)",
    "CONTROL_PORT": "TCP port of the HTTP control endpoint (default 8080)",
    "WATCH_CONFLICT_FRACTION": (
        "probability from 0 to 1 that a transaction with watched keys gets a "
        "conflicting write before its EXEC (default 0)"
    ),
    "SEED": "integer seed of the random choices of transactions and keys (default 0)",
    "LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR (default INFO)",
}


class ProxyConfigError(ValueError):
    """An invalid setting: the message names the setting, the value and the fix."""


@dataclass(frozen=True)
class ProxyConfig:
    """Settings of one proxy process. Port 0 binds a free port chosen by the OS."""

    upstream_host: str
    upstream_port: int = 6379
    # Every interface by default, because the proxy normally runs in a
    # container, and other containers reach it over the container's network.
    listen_host: str = "0.0.0.0"
    listen_port: int = 6379
    control_host: str = "0.0.0.0"
    control_port: int = 8080
    watch_conflict_fraction: float = 0.0
    seed: int = 0
    upstream_connect_timeout_s: float = 5.0
    # Maximum time for one neutral write. EXEC is held back that long at most.
    injection_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.upstream_host:
            raise ProxyConfigError(
                "UPSTREAM_HOST is missing: set it to the host name or address of Redis"
            )
        for name in ("upstream_port", "listen_port", "control_port"):
            _check_port(name.upper(), getattr(self, name))
        validate_fraction(self.watch_conflict_fraction, "WATCH_CONFLICT_FRACTION")
        for name in ("upstream_connect_timeout_s", "injection_timeout_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ProxyConfigError(
                    f"{name} is {value!r}: expected a positive number of seconds"
                )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ProxyConfig:
        """Build the settings from environment variables, rejecting invalid values."""
        return cls(
            upstream_host=environ.get("UPSTREAM_HOST", "").strip(),
            upstream_port=_read_int(environ, "UPSTREAM_PORT", 6379),
            listen_host=environ.get("LISTEN_HOST", "0.0.0.0"),
            listen_port=_read_int(environ, "LISTEN_PORT", 6379),
            control_host=environ.get("CONTROL_HOST", "0.0.0.0"),
            control_port=_read_int(environ, "CONTROL_PORT", 8080),
            watch_conflict_fraction=_read_fraction(environ),
            seed=_read_int(environ, "SEED", 0),
        )


# Environment variables of the TCP relay (python -m harness.proxy.tcp).
RELAY_ENVIRONMENT_HELP = {
    "UPSTREAM_HOST": "host name or address of the server relayed to (required)",
    "UPSTREAM_PORT": "TCP port of that server (default 5432)",
    "LISTEN_HOST": "address the relay listens on for clients (default 0.0.0.0)",
    "LISTEN_PORT": "TCP port the relay listens on for clients (default 5432)",
    "CONTROL_HOST": "address of the HTTP control endpoint (default 0.0.0.0)",
    "CONTROL_PORT": "TCP port of the HTTP control endpoint (default 8080)",
    "MAX_CONNECTIONS": (
        "maximum client connections relayed at the same time; the relay closes "
        "any more right away (default 512)"
    ),
    "SEED": "integer seed of the latency jitter (default 0)",
    "LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR (default INFO)",
}


@dataclass(frozen=True)
class RelayConfig:
    """Settings of one TCP relay process. Port 0 binds a free port."""

    upstream_host: str
    upstream_port: int = 5432
    listen_host: str = "0.0.0.0"
    listen_port: int = 5432
    control_host: str = "0.0.0.0"
    control_port: int = 8080
    max_connections: int = 512
    seed: int = 0
    upstream_connect_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.upstream_host:
            raise ProxyConfigError(
                "UPSTREAM_HOST is missing: set it to the host name or address of "
                "the server to relay to"
            )
        for name in ("upstream_port", "listen_port", "control_port"):
            _check_port(name.upper(), getattr(self, name))
        if self.max_connections < 1:
            raise ProxyConfigError(
                f"MAX_CONNECTIONS is {self.max_connections!r}: expected 1 or more"
            )
        if not self.upstream_connect_timeout_s > 0:
            raise ProxyConfigError(
                f"upstream_connect_timeout_s is {self.upstream_connect_timeout_s!r}: "
                "expected a positive number of seconds"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RelayConfig:
        """Build the settings from environment variables, rejecting invalid values."""
        return cls(
            upstream_host=environ.get("UPSTREAM_HOST", "").strip(),
            upstream_port=_read_int(environ, "UPSTREAM_PORT", 5432),
            listen_host=environ.get("LISTEN_HOST", "0.0.0.0"),
            listen_port=_read_int(environ, "LISTEN_PORT", 5432),
            control_host=environ.get("CONTROL_HOST", "0.0.0.0"),
            control_port=_read_int(environ, "CONTROL_PORT", 8080),
            max_connections=_read_int(environ, "MAX_CONNECTIONS", 512),
            seed=_read_int(environ, "SEED", 0),
        )


def validate_fraction(value: object, name: str) -> float:
    """Return ``value`` as a float, or raise ProxyConfigError unless it is in 0..1."""
    # Reject bool, a subclass of int, because JSON `true` is almost surely a mistake.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProxyConfigError(
            f"{name} is {value!r}: expected a number from 0 to 1, such as 0.2"
        )
    fraction = float(value)
    if math.isnan(fraction) or not 0.0 <= fraction <= 1.0:
        raise ProxyConfigError(
            f"{name} is {value!r}: expected a number from 0 to 1, such as 0.2"
        )
    return fraction


def _read_int(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ProxyConfigError(
            f"{name} is {text!r}: expected an integer such as {default}"
        ) from None


def _read_fraction(environ: Mapping[str, str]) -> float:
    text = environ.get("WATCH_CONFLICT_FRACTION", "").strip()
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise ProxyConfigError(
            f"WATCH_CONFLICT_FRACTION is {text!r}: expected a number from 0 to 1, "
            "such as 0.2"
        ) from None
    return validate_fraction(value, "WATCH_CONFLICT_FRACTION")


def _check_port(name: str, port: object) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ProxyConfigError(
            f"{name} is {port!r}: expected a TCP port from 1 to 65535, "
            "or 0 for a free port"
        )
