"""Settings of one coordinator instance, read from its environment."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

REQUIRED = ("PORT", "INSTANCE_ID", "REDIS_URL", "DATABASE_URL", "COORDINATOR_STRATEGY")


class SettingsError(ValueError):
    """An environment variable that is missing or invalid; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Configuration of one instance: where it listens, its stores and strategy."""

    port: int
    instance_id: str
    redis_url: str
    database_url: str
    strategy: str
    host: str = "0.0.0.0"
    key_ttl_s: int = 86400
    watch_max_retries: int = 50
    # Seconds after which a watch request stops retrying and replies 503
    # contention, counted from its start, waits for a turn included. It is
    # half the 3 s client timeout of most harness scenarios, so that a caller
    # gets a reply rather than a timeout.
    watch_retry_budget_s: float = 1.5
    log_level: str = "INFO"
    # Maximum time in seconds to retry an operation whose store connection
    # failed, before replying 503 unavailable. A Redis restart takes about 1 s.
    # It stays below the harness's smallest client timeout (3 s), so that a
    # caller gets a 503 rather than a timeout, which no-hang would count.
    store_retry_s: float = 1.5
    # Maximum time in seconds to wait for both stores when the instance starts.
    startup_timeout_s: float = 30.0
    redis_max_connections: int = 64
    postgres_min_connections: int = 1
    postgres_max_connections: int = 10

    def __post_init__(self) -> None:
        # Imported here because the strategy modules import this one.
        from harness.coordinator.strategies import STRATEGY_NAMES

        if self.strategy not in STRATEGY_NAMES:
            raise SettingsError(
                f"COORDINATOR_STRATEGY={self.strategy!r} is not a strategy; "
                f"set it to one of: {', '.join(STRATEGY_NAMES)}"
            )
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"PORT={self.port} is invalid; expected 0 to 65535")
        if self.key_ttl_s <= 0:
            raise SettingsError(
                f"KEY_TTL_S={self.key_ttl_s} is invalid; expected seconds above 0"
            )
        if self.watch_max_retries < 0:
            raise SettingsError(
                f"WATCH_MAX_RETRIES={self.watch_max_retries} is invalid; "
                "expected 0 or more"
            )
        if not 0 < self.watch_retry_budget_s < math.inf:
            raise SettingsError(
                f"WATCH_RETRY_BUDGET_S={self.watch_retry_budget_s} is invalid; "
                "expected a finite number of seconds above 0"
            )
        if not isinstance(logging.getLevelName(self.log_level), int):
            raise SettingsError(
                f"LOG_LEVEL={self.log_level!r} is not a logging level; "
                "expected DEBUG, INFO, WARNING or ERROR"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from environment variables, raising SettingsError."""
        missing = [name for name in REQUIRED if not environ.get(name)]
        if missing:
            raise SettingsError(
                f"missing environment variable(s) {', '.join(missing)}; a coordinator "
                f"needs {', '.join(REQUIRED)}"
            )
        optional: dict[str, object] = {}
        for name, field, convert in (
            ("HOST", "host", str),
            ("KEY_TTL_S", "key_ttl_s", int),
            ("WATCH_MAX_RETRIES", "watch_max_retries", int),
            ("WATCH_RETRY_BUDGET_S", "watch_retry_budget_s", float),
            ("LOG_LEVEL", "log_level", str.upper),
            ("STORE_RETRY_S", "store_retry_s", float),
            ("STARTUP_TIMEOUT_S", "startup_timeout_s", float),
        ):
            if environ.get(name):
                optional[field] = _convert(name, environ[name], convert)
        return cls(
            port=_convert("PORT", environ["PORT"], int),
            instance_id=environ["INSTANCE_ID"],
            redis_url=environ["REDIS_URL"],
            database_url=environ["DATABASE_URL"],
            strategy=environ["COORDINATOR_STRATEGY"],
            **optional,
        )


def _convert(name: str, text: str, convert):
    try:
        return convert(text)
    except ValueError as err:
        kind = {int: "an integer", float: "a number"}.get(convert, "a string")
        raise SettingsError(f"{name}={text!r} is invalid; expected {kind}") from err
