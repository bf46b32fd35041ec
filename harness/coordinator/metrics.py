"""Prometheus metrics of one coordinator app, in a registry of its own.

A registry per app, rather than the global one, lets several apps run in one
process (the tests start three) without duplicate-metric errors.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from harness.coordinator.logs import RepeatLimiter

if TYPE_CHECKING:
    from harness.coordinator.strategies.base import BatchState

logger = logging.getLogger(__name__)

# Upper bounds in seconds; a Lua assignment takes well under a millisecond on
# loopback, and a WATCH retry storm can take seconds.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# Outcomes of coordinator_assignment_seconds. Any other request end (503
# unavailable, 500, a cancelled request) is counted as "error".
ASSIGNMENT_OUTCOMES = ("assigned", "replay", "no_slot", "contention", "not_found")
ASSIGNMENT_ERROR = "error"

# Batches whose slot gauges a scrape refreshes: the ones this instance saw
# last. The bound keeps a scrape's reads and the number of series fixed,
# however many batches an instance has served.
MAX_GAUGE_BATCHES = 64
# Seconds one scrape may spend reading batches, for all of them together, so
# that /metrics replies within a second while a store hangs.
BATCH_READ_DEADLINE_S = 0.5
# Batch reads a scrape runs at once, so that it takes few pooled connections
# away from requests.
BATCH_READ_CONCURRENCY = 8

SLOT_STATES = ("available", "assigned", "failed")

# True while a scrape reads batches for the gauges. The store timers skip the
# commands and queries of those reads, so that observing an instance does not
# add to its store operation counts. A watch instance would otherwise count
# one MULTI/EXEC per batch per scrape.
_SCRAPE_READ = contextvars.ContextVar("coordinator_scrape_read", default=False)


def recording_store_operations() -> bool:
    """Return whether store commands of the current task count in the metrics."""
    return not _SCRAPE_READ.get()


class CoordinatorMetrics:
    """Counters, histograms and gauges of one app, labelled by strategy."""

    def __init__(self, strategy: str, instance_id: str) -> None:
        self.strategy = strategy
        self.registry = CollectorRegistry(auto_describe=True)
        self.info = Gauge(
            "coordinator_info",
            "Always 1; the labels name the instance and its strategy.",
            ["instance_id", "strategy"],
            registry=self.registry,
        )
        self.info.labels(instance_id, strategy).set(1)
        self.requests = Counter(
            "coordinator_requests",
            "HTTP requests by route and outcome.",
            ["route", "outcome"],
            registry=self.registry,
        )
        self.assignment_seconds = Histogram(
            "coordinator_assignment_seconds",
            "Time to assign a content or record a failure, by outcome: assigned, "
            "replay, no_slot, contention, not_found or error.",
            ["strategy", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._declare_store_metrics()
        self.watch_conflicts = Counter(
            "coordinator_watch_conflicts",
            "WATCH conflicts (WatchError) the strategy saw and handled.",
            ["strategy"],
            registry=self.registry,
        )
        self.retries = Counter(
            "coordinator_retries",
            "Attempts repeated, by reason: watch_conflict, claim_wait or store_error.",
            ["strategy", "reason"],
            registry=self.registry,
        )
        self.completions = Counter(
            "coordinator_completions_emitted",
            "batch_ready entries this instance appended to the Redis stream.",
            ["strategy"],
            registry=self.registry,
        )
        self.batches = BatchGauges(strategy, self.registry)

    def _declare_store_metrics(self) -> None:
        self.store_operation_seconds = Histogram(
            "coordinator_store_operation_seconds",
            "Time of one store operation as the coordinator sees it, the wait for "
            "a pooled connection included: a Redis command in lower case (exec "
            "for a MULTI/EXEC transaction, pipeline for a plain pipeline) or the "
            "first SQL keyword (select, insert, update, delete, begin, commit, "
            "rollback, other).",
            ["strategy", "store", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.store_errors = Counter(
            "coordinator_store_errors",
            "Store operations that raised, an aborted EXEC excepted.",
            ["strategy", "store"],
            registry=self.registry,
        )
        self.exec_sent = Counter(
            "coordinator_exec",
            "MULTI/EXEC transactions sent to Redis.",
            ["strategy"],
            registry=self.registry,
        )
        self.exec_aborts = Counter(
            "coordinator_exec_aborts",
            "MULTI/EXEC transactions that Redis aborted because a watched key "
            "changed (WatchError at EXEC).",
            ["strategy"],
            registry=self.registry,
        )
        # Series at 0 from the start, so that a rate over them exists before
        # the first error or transaction.
        for store in ("redis", "postgres"):
            self.store_errors.labels(self.strategy, store)
        self.exec_sent.labels(self.strategy)
        self.exec_aborts.labels(self.strategy)

    def count_retry(self, reason: str) -> None:
        self.retries.labels(self.strategy, reason).inc()

    def count_watch_conflict(self) -> None:
        self.watch_conflicts.labels(self.strategy).inc()

    def count_completion(self) -> None:
        self.completions.labels(self.strategy).inc()

    def observe_assignment(self, outcome: str, seconds: float) -> None:
        self.assignment_seconds.labels(self.strategy, outcome).observe(seconds)

    def observe_store_operation(
        self, store: str, operation: str, seconds: float, failed: bool
    ) -> None:
        """Record one store operation's time, and count it as an error if it raised."""
        self.store_operation_seconds.labels(self.strategy, store, operation).observe(
            seconds
        )
        if failed:
            self.store_errors.labels(self.strategy, store).inc()

    def count_exec(self, aborted: bool) -> None:
        self.exec_sent.labels(self.strategy).inc()
        if aborted:
            self.exec_aborts.labels(self.strategy).inc()


class BatchGauges:
    """Slot gauges of the batches this instance saw last, read at scrape time.

    A read that fails or misses the deadline leaves the batch's last known
    values in place, so a store outage shows as stale gauges, not as gaps.
    """

    def __init__(self, strategy: str, registry: CollectorRegistry) -> None:
        self.strategy = strategy
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._reads_left_running: set[asyncio.Task[None]] = set()
        self._stale_limiter = RepeatLimiter()
        self.slots = Gauge(
            "coordinator_batch_slots",
            "Slots of a recently seen batch by state (available, assigned or "
            "failed), read from the store at scrape time.",
            ["strategy", "batch", "state"],
            registry=registry,
        )
        self.capacity = Gauge(
            "coordinator_batch_capacity",
            "Slots of a recently seen batch.",
            ["strategy", "batch"],
            registry=registry,
        )
        self.completed = Gauge(
            "coordinator_batch_completed",
            "1 once every slot of a recently seen batch is assigned or failed, else 0.",
            ["strategy", "batch"],
            registry=registry,
        )

    @property
    def batch_ids(self) -> list[str]:
        """Batch ids whose gauges a scrape refreshes, most recently seen last."""
        return list(self._recent)

    def note(self, batch_id: str) -> None:
        """Mark a batch as seen now, dropping the gauges of the least recent one
        past MAX_GAUGE_BATCHES."""
        self._recent[batch_id] = None
        self._recent.move_to_end(batch_id)
        while len(self._recent) > MAX_GAUGE_BATCHES:
            evicted, _ = self._recent.popitem(last=False)
            self._remove(evicted)

    def forget(self, batch_id: str) -> None:
        """Drop a batch that the store no longer has, and its gauges."""
        self._recent.pop(batch_id, None)
        self._remove(batch_id)

    def _remove(self, batch_id: str) -> None:
        for state in SLOT_STATES:
            _remove_series(self.slots, self.strategy, batch_id, state)
        _remove_series(self.capacity, self.strategy, batch_id)
        _remove_series(self.completed, self.strategy, batch_id)

    def set_from(self, batch: BatchState) -> None:
        """Set the gauges of a batch from its state as GET /batches/{id} reads it."""
        body = batch.to_json()
        counts = {
            "available": len(body["available"]),
            "assigned": len(body["assignments"]),
            "failed": len(body["failures"]),
        }
        for state, count in counts.items():
            self.slots.labels(self.strategy, batch.batch_id, state).set(count)
        self.capacity.labels(self.strategy, batch.batch_id).set(body["capacity"])
        self.completed.labels(self.strategy, batch.batch_id).set(
            1 if body["completed"] else 0
        )

    async def refresh(
        self,
        read_batch: Callable[[str], Awaitable[BatchState]],
        not_found: type[Exception],
        deadline_s: float = BATCH_READ_DEADLINE_S,
    ) -> None:
        """Read every recent batch with ``read_batch`` and set its gauges.

        Returns within ``deadline_s`` seconds and cancels the reads still
        running then. A batch whose read raises ``not_found`` is forgotten.
        """
        batch_ids = list(self._recent)
        if not batch_ids:
            return
        limit = asyncio.Semaphore(BATCH_READ_CONCURRENCY)
        with _scrape_read():
            tasks = [
                asyncio.create_task(self._refresh_one(read_batch, batch_id, limit))
                for batch_id in batch_ids
            ]
        try:
            _, pending = await asyncio.wait(tasks, timeout=deadline_s)
        finally:
            # Also when the scrape itself is cancelled, no read outlives it.
            for task in tasks:
                if not task.done():
                    task.cancel()
                    # Kept until it ends, so that the cancelled read is not
                    # collected while it releases its connection.
                    self._reads_left_running.add(task)
                    task.add_done_callback(self._reads_left_running.discard)

        errors: list[BaseException] = []
        for batch_id, task in zip(batch_ids, tasks, strict=True):
            if task in pending or task.cancelled():
                continue
            error = task.exception()
            if isinstance(error, not_found):
                self.forget(batch_id)
            elif error is not None:
                errors.append(error)
        if errors or pending:
            self._warn_stale(len(batch_ids), len(pending), errors, deadline_s)

    async def _refresh_one(
        self,
        read_batch: Callable[[str], Awaitable[BatchState]],
        batch_id: str,
        limit: asyncio.Semaphore,
    ) -> None:
        async with limit:
            batch = await read_batch(batch_id)
        # The batch may have been evicted while its read ran.
        if batch_id in self._recent:
            self.set_from(batch)

    def _warn_stale(
        self,
        reads: int,
        timed_out: int,
        errors: list[BaseException],
        deadline_s: float,
    ) -> None:
        suppressed = self._stale_limiter.admit("stale")
        if suppressed is None:
            return
        first_error = (
            f"; first error {type(errors[0]).__name__}: {errors[0]}" if errors else ""
        )
        logger.warning(
            "metrics scrape: of %d batch reads, %d failed and %d did not finish "
            "within %s s, so those slot gauges keep their last values%s "
            "(%d similar warnings suppressed)",
            reads,
            len(errors),
            timed_out,
            deadline_s,
            first_error,
            suppressed,
        )


@contextmanager
def _scrape_read() -> Iterator[None]:
    # Tasks copy the context when they are created, so the tasks created
    # inside this block keep the mark.
    token = _SCRAPE_READ.set(True)
    try:
        yield
    finally:
        _SCRAPE_READ.reset(token)


def _remove_series(gauge: Gauge, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        # The batch was seen but never read, so it has no series yet.
        pass
