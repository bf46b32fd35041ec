"""watch (correct): optimistic WATCH / MULTI / EXEC with bounded, jittered retries.

This is the original service's final design. Every write, the batch_ready
entry included, is queued inside MULTI, so EXEC applies all of them or none.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.exceptions import WatchError

from harness.coordinator.errors import BatchNotFound, Contention, NoSlot
from harness.coordinator.keys import BATCH_READY_STREAM, CONTENT, BatchKeys
from harness.coordinator.logs import RepeatLimiter
from harness.coordinator.strategies.base import RedisStrategy, SlotResult, mapping_json

logger = logging.getLogger(__name__)

# Backoff before retry n (from 0) is uniform in [0, min(CAP, BASE * 2**n)]
# seconds ("full jitter"), so that the losers of one EXEC do not collide again.
# With the cap, a request that uses all WATCH_MAX_RETRIES sleeps about
# WATCH_MAX_RETRIES * CAP / 2 seconds in total on average, unless
# WATCH_RETRY_BUDGET_S ends it first.
BACKOFF_BASE_S = 0.005
BACKOFF_CAP_S = 0.25

# Transactions one instance runs at once, over all batches. Each instance also
# runs at most one transaction per batch at a time (see WatchStrategy._turn).
# In a paced storm of 3 in-process instances on a 2-core machine, that cut
# WATCH conflicts about tenfold. Under 5 ms of Redis latency it also raised
# p95 latency from about 0.4 s to 0.8 s.
MAX_TRANSACTIONS = 8


def backoff_s(attempt: int, rng: random.Random) -> float:
    return rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))


class BudgetSpent(Exception):
    """The retry budget of a request ran out while it waited for its turn."""


class _BatchTurn:
    """A lock that lets one transaction of a batch run at a time, and its users."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class WatchStrategy(RedisStrategy):
    """Take a slot in a WATCH transaction and retry it when a watched key changes.

    A request gives up with ``503 contention`` after WATCH_MAX_RETRIES retries
    or once WATCH_RETRY_BUDGET_S seconds have passed since it started, its
    waits for a turn or for a copy of its item included, whichever comes
    first. A retry is not started past the budget, but an attempt that has
    started runs to its end, because a request cancelled between EXEC and its
    reply cannot tell whether EXEC applied.
    """

    name = "watch"
    correct = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._rng = random.Random()
        self._in_flight = asyncio.Semaphore(MAX_TRANSACTIONS)
        self._batch_turns: dict[str, _BatchTurn] = {}
        # Set when the request taking a slot for (batch, kind, item) ends.
        self._items_in_progress: dict[tuple[str, str, str], asyncio.Event] = {}
        self._give_up_limiter = RepeatLimiter()

    async def take_slot(self, keys: BatchKeys, kind: str, item_id: str) -> SlotResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.settings.watch_retry_budget_s
        item = (keys.batch_id, kind, item_id)
        _, by_item = keys.item_hashes(kind)
        while True:
            # A copy of an item that has its slot needs no transaction, because
            # the item's slot is written once, in the EXEC that takes the
            # slot, and changes only when the batch's keys expire. Under
            # duplicate delivery most requests end here.
            existing = await self.redis.hget(by_item, item_id)
            if existing is not None:
                return SlotResult(existing, created=False)
            # Wait for a copy of this item that is taking a slot on this
            # instance, rather than queue behind it. Once the copy ends, the
            # read above finds its slot, or this request tries itself.
            copy_done = self._items_in_progress.get(item)
            if copy_done is None:
                break
            try:
                async with asyncio.timeout_at(deadline):
                    await copy_done.wait()
            except TimeoutError:
                self._warn_gave_up(keys, kind, item_id, 0, loop.time() - started)
                raise Contention() from None

        done = self._items_in_progress[item] = asyncio.Event()
        try:
            return await self._take_with_retries(keys, kind, item_id, deadline)
        finally:
            del self._items_in_progress[item]
            done.set()

    async def _take_with_retries(
        self, keys: BatchKeys, kind: str, item_id: str, deadline: float
    ) -> SlotResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        max_retries = self.settings.watch_max_retries
        attempts = 0
        while attempts <= max_retries:
            try:
                async with self._turn(keys.batch_id, deadline):
                    attempts += 1
                    return await self._attempt(keys, kind, item_id)
            except BudgetSpent:
                break
            except WatchError:
                self.metrics.count_watch_conflict()
            delay = backoff_s(attempts - 1, self._rng)
            if attempts > max_retries or loop.time() + delay >= deadline:
                break
            self.metrics.count_retry("watch_conflict")
            await asyncio.sleep(delay)
        self._warn_gave_up(keys, kind, item_id, attempts, loop.time() - started)
        raise Contention()

    @asynccontextmanager
    async def _turn(self, batch_id: str, deadline: float) -> AsyncIterator[None]:
        """Wait, until ``deadline`` at most, to run one transaction of the batch.

        Raises BudgetSpent when the deadline passes first. Every EXEC that
        takes a slot removes it from the available set, which all transactions
        of the batch watch, so of two overlapping transactions of one batch at
        most one commits. An instance that runs them one at a time is spared
        most retries, and requests queue instead when Redis is slow.
        Conflicts remain between instances, and with writers outside the
        coordinator.
        """
        turn = self._batch_turns.get(batch_id)
        if turn is None:
            turn = self._batch_turns[batch_id] = _BatchTurn()
        turn.users += 1
        holds_turn = holds_transaction = False
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    await turn.lock.acquire()
                    holds_turn = True
                    await self._in_flight.acquire()
                    holds_transaction = True
            except TimeoutError:
                raise BudgetSpent() from None
            yield
        finally:
            if holds_transaction:
                self._in_flight.release()
            if holds_turn:
                turn.lock.release()
            turn.users -= 1
            if turn.users == 0:
                del self._batch_turns[batch_id]

    def _warn_gave_up(
        self, keys: BatchKeys, kind: str, item_id: str, attempts: int, elapsed_s: float
    ) -> None:
        suppressed = self._give_up_limiter.admit("contention")
        if suppressed is None:
            return
        logger.warning(
            "%s %r of batch %s: replying 503 contention after %d attempts in "
            "%.2f s (WATCH_MAX_RETRIES=%d, WATCH_RETRY_BUDGET_S=%s; %d similar "
            "warnings suppressed)",
            kind,
            item_id,
            keys.batch_id,
            attempts,
            elapsed_s,
            self.settings.watch_max_retries,
            self.settings.watch_retry_budget_s,
            suppressed,
        )

    async def _attempt(self, keys: BatchKeys, kind: str, item_id: str) -> SlotResult:
        by_slot, by_item = keys.item_hashes(kind)
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(
                keys.available,
                keys.assignments,
                keys.content,
                keys.failures,
                keys.failure_ids,
            )
            # Few reads keep the window between WATCH and EXEC, and so the
            # chance of a conflict, small.
            existing = await pipe.hget(by_item, item_id)
            if existing is not None:
                return SlotResult(existing, created=False)
            # Two candidates tell whether this slot is the last one.
            candidates = await pipe.srandmember(keys.available, 2)
            if not candidates:
                await self._confirm_no_slot(pipe, keys)
            slot = candidates[0]
            completion = None
            if len(candidates) == 1:
                completion = await self._completion_fields(
                    pipe, keys, kind, item_id, slot
                )

            # Everything below is queued and applied by EXEC only if no watched
            # key changed since WATCH; otherwise EXEC raises WatchError.
            pipe.multi()
            pipe.srem(keys.available, slot)
            pipe.hset(by_slot, slot, item_id)
            pipe.hset(by_item, item_id, slot)
            pipe.expire(by_slot, self.settings.key_ttl_s)
            pipe.expire(by_item, self.settings.key_ttl_s)
            if completion is not None:
                pipe.xadd(BATCH_READY_STREAM, completion)
            await pipe.execute()
        if completion is not None:
            self.metrics.count_completion()
        return SlotResult(slot, created=True)

    async def _confirm_no_slot(self, pipe, keys: BatchKeys) -> None:
        """Raise BatchNotFound or NoSlot, or WatchError to retry."""
        # The metadata is written once at registration, so it needs no WATCH.
        if not await pipe.exists(keys.metadata):
            raise BatchNotFound()
        # The HGET and SRANDMEMBER are separate reads, so a copy of this item
        # may have taken the last slot between them. An empty EXEC raises
        # WatchError if any watched key changed since WATCH.
        pipe.multi()
        await pipe.execute()
        raise NoSlot()

    async def _completion_fields(
        self, pipe, keys: BatchKeys, kind: str, item_id: str, slot: str
    ) -> dict[str, str]:
        """Read the batch under WATCH and add the slot about to be taken."""
        assignments = await pipe.hgetall(keys.assignments)
        failures = await pipe.hgetall(keys.failures)
        (assignments if kind == CONTENT else failures)[slot] = item_id
        return {
            "batch_id": keys.batch_id,
            "assignments": mapping_json(assignments),
            "failures": mapping_json(failures),
        }
