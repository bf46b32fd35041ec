"""Rate limiting for repeated warnings, so a store outage logs a few lines, not one
per request."""

from __future__ import annotations

import time
from collections.abc import Callable


class RepeatLimiter:
    """Let one log line per key through each interval and count the ones held back."""

    def __init__(
        self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def admit(self, key: str) -> int | None:
        """Return the number of lines suppressed since the last one, or None to skip.

        A caller logs only when the result is not None.
        """
        now = self.clock()
        last = self._last_logged.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last_logged[key] = now
        return self._suppressed.pop(key, 0)
