"""Rate-limited warnings, so that an unreachable Redis does not flood the log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLogger:
    """Log at most one warning per topic per interval and count the ones skipped.

    The next warning that is logged for a topic reports how many were skipped
    since the last one.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._last_logged: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warning(self, topic: str, message: str, *args: object) -> None:
        now = self._clock()
        last = self._last_logged.get(topic)
        if last is not None and now - last < self._interval_s:
            self._skipped[topic] = self._skipped.get(topic, 0) + 1
            return
        self._last_logged[topic] = now
        skipped = self._skipped.pop(topic, 0)
        if skipped:
            message += " (%d similar warnings skipped in the last %.0f s)"
            args = (*args, skipped, now - last)
        self._logger.warning(message, *args)
