"""unbounded-retry (faulty): the watch transaction, retried with no limit or backoff.

Each attempt is the ``watch`` strategy's WATCH / MULTI / EXEC transaction. On
WatchError the request starts the next attempt at once, however many
attempts have failed. While every EXEC meets a conflict, for example while a
RESP proxy writes to a watched key before each EXEC, the request spins and
sends no reply. The correct ``watch`` sleeps between attempts and replies
``503 contention`` after WATCH_MAX_RETRIES retries.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import WatchError

from harness.coordinator.errors import Contention
from harness.coordinator.keys import BatchKeys
from harness.coordinator.strategies.base import SlotResult
from harness.coordinator.strategies.watch import WatchStrategy

logger = logging.getLogger(__name__)

# Seconds after which a spinning request gives up with 503 contention. This is
# not part of the bug: it only keeps a container from spinning forever after
# the harness has gone. It is far above any client timeout (scenarios accept a
# request_timeout_s of at most 120 s), so the request has already counted as
# unanswered long before it.
SPIN_LIMIT_S = 300.0


class UnboundedRetryStrategy(WatchStrategy):
    """Repeat the ``watch`` transaction at once after every WatchError.

    Under a persistent WATCH conflict a request stays without a reply for as
    long as the conflict lasts, which the ``no-hang`` invariant reports. Each
    spinning request also sends one transaction after another to Redis.
    """

    name = "unbounded-retry"
    correct = False

    async def take_slot(self, keys: BatchKeys, kind: str, item_id: str) -> SlotResult:
        started = time.monotonic()
        attempts = 0
        # The bug: no retry limit and no sleep before the next attempt.
        while True:
            attempts += 1
            try:
                async with self._in_flight:
                    return await self._attempt(keys, kind, item_id)
            except WatchError:
                self.metrics.count_watch_conflict()
            if time.monotonic() - started >= SPIN_LIMIT_S:
                logger.warning(
                    "%s %r of batch %s gave up after %d WATCH conflicts in %.0f s",
                    kind,
                    item_id,
                    keys.batch_id,
                    attempts,
                    SPIN_LIMIT_S,
                )
                raise Contention()
            self.metrics.count_retry("watch_conflict")
