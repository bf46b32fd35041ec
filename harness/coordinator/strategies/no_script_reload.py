"""no-script-reload (faulty): EVALSHA of a script loaded once at start, never again.

The instance loads the take-slot script with SCRIPT LOAD when it starts and
keeps the SHA1 digest. Each request calls EVALSHA with that digest. Redis keeps
scripts in memory only: SCRIPT FLUSH empties the cache, and so does a restart
(redis-server 7.0.15 came back from its append-only file with the data but
without the script). EVALSHA then fails with NOSCRIPT. This strategy replies
503 and never loads the script again, so every assignment fails until the
instance restarts.
"""

from __future__ import annotations

import logging

from redis.exceptions import NoScriptError

from harness.coordinator.errors import StoreUnavailable
from harness.coordinator.keys import BatchKeys
from harness.coordinator.logs import RepeatLimiter
from harness.coordinator.strategies import scripts
from harness.coordinator.strategies.base import RedisStrategy, SlotResult

logger = logging.getLogger(__name__)


class NoScriptReloadStrategy(RedisStrategy):
    """Take a slot with EVALSHA of ``scripts.TAKE_SLOT``, loaded only in ``start``.

    After SCRIPT FLUSH or a Redis restart, every content and failure request
    gets ``503 unavailable`` and no batch fills any more, which ``liveness``
    reports. The correct ``lua`` strategy calls the same script through
    redis-py's Script object, which loads it again after NOSCRIPT.
    """

    name = "no-script-reload"
    correct = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._take_slot_sha = ""
        self._noscript_limiter = RepeatLimiter()

    async def start(self) -> None:
        await super().start()
        self._take_slot_sha = await self.redis.script_load(scripts.TAKE_SLOT)
        logger.info("loaded the take-slot script as %s", self._take_slot_sha)

    async def take_slot(self, keys: BatchKeys, kind: str, item_id: str) -> SlotResult:
        slot_keys = self.take_slot_keys(keys, kind)
        try:
            reply = await self.redis.evalsha(
                self._take_slot_sha,
                len(slot_keys),
                *slot_keys,
                *self.take_slot_args(keys, item_id),
            )
        except NoScriptError as err:
            # The bug: the script is never loaded again, so this repeats for
            # every request until the instance restarts.
            self._warn_noscript(err)
            raise StoreUnavailable(
                f"Redis has no script {self._take_slot_sha} (NOSCRIPT: {err}). "
                "This instance loads it only at start, so restart the instance"
            ) from err
        return self.slot_result(reply)

    def _warn_noscript(self, err: NoScriptError) -> None:
        suppressed = self._noscript_limiter.admit("noscript")
        if suppressed is not None:
            logger.warning(
                "EVALSHA %s failed with NOSCRIPT, so the request gets 503: %s "
                "(%d similar warnings suppressed)",
                self._take_slot_sha,
                err,
                suppressed,
            )
