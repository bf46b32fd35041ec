"""The interface every assignment strategy implements, and the shared Redis parts.

Registration, ``GET /batches/{id}`` and the Postgres row are the same for all
Redis strategies, so that they differ only in how a slot is taken.
"""

from __future__ import annotations

import abc
import enum
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from harness.coordinator.errors import BatchNotFound, NoSlot, RegistrationConflict
from harness.coordinator.keys import BATCH_READY_STREAM, CONTENT, FAILURE, BatchKeys
from harness.coordinator.metrics import CoordinatorMetrics
from harness.coordinator.rows import AssignmentRow, AssignmentRowWriter
from harness.coordinator.settings import Settings
from harness.coordinator.stores import (
    ASSIGNMENT_SCHEMA,
    StoreRetry,
    Stores,
    ensure_schema,
)
from harness.coordinator.strategies import scripts


class Registration(enum.Enum):
    """Outcome of a registration that did not conflict."""

    CREATED = "created"
    EXISTS = "exists"


@dataclass(frozen=True)
class SlotResult:
    """The slot a content or failure holds, and whether this request took it."""

    slot_id: str
    created: bool


@dataclass(frozen=True)
class BatchState:
    """One batch as ``GET /batches/{id}`` returns it."""

    batch_id: str
    capacity: int
    available: list[str]
    assignments: dict[str, str]
    failures: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "capacity": self.capacity,
            "available": sorted(self.available),
            "assignments": self.assignments,
            "failures": self.failures,
            # Complete means every slot is assigned or failed. An empty
            # available set is not enough: slots popped and never recorded
            # leave it empty while the batch is still short.
            "completed": len(self.assignments) + len(self.failures) >= self.capacity,
        }


def canonical_slot_ids(slot_ids: Sequence[str]) -> str:
    """Return the slot ids as sorted compact JSON, to compare two registrations."""
    return json.dumps(sorted(slot_ids), separators=(",", ":"))


def mapping_json(mapping: dict[str, str]) -> str:
    """Return a batch_ready field (assignments or failures) as JSON object text."""
    return json.dumps(mapping, sort_keys=True, separators=(",", ":"))


class Strategy(abc.ABC):
    """Interface of an assignment strategy: registration, slot taking and reads.

    Methods raise the CoordinatorError subclasses for refusals and let store
    connection errors propagate, so that the app can repeat the call.
    """

    name: ClassVar[str]
    correct: ClassVar[bool]

    def __init__(
        self, stores: Stores, settings: Settings, metrics: CoordinatorMetrics
    ) -> None:
        self.stores = stores
        self.redis = stores.redis
        self.postgres = stores.postgres
        self.settings = settings
        self.metrics = metrics
        # For a step that must be repeated alone, without the steps before it.
        self.store_retry = StoreRetry(settings.store_retry_s, metrics)

    async def start(self) -> None:
        """Create what the strategy needs in the stores; called once at startup."""
        await ensure_schema(self.postgres, ASSIGNMENT_SCHEMA)

    async def stop(self) -> None:  # noqa: B027 - most strategies have nothing to stop
        """Stop background work; called once at shutdown, before stores close."""

    @abc.abstractmethod
    async def register_batch(self, batch_id: str, slot_ids: list[str]) -> Registration:
        """Register a batch, raising RegistrationConflict for other slots."""

    @abc.abstractmethod
    async def assign_content(
        self, batch_id: str, text_storage_id: str, file_name: str
    ) -> SlotResult:
        """Give a content its slot, raising BatchNotFound, NoSlot or Contention."""

    @abc.abstractmethod
    async def record_failure(self, batch_id: str, failure_id: str) -> SlotResult:
        """Take a slot out of play for a failure, idempotent by failure id."""

    @abc.abstractmethod
    async def read_batch(self, batch_id: str) -> BatchState:
        """Read a batch, raising BatchNotFound."""


class RedisStrategy(Strategy):
    """A strategy that keeps slots in Redis and one Postgres row per assignment.

    Subclasses implement ``take_slot``. ``assign_content`` writes the Postgres
    row after the slot is taken or found again and before the reply, so a 200
    reply implies that the row exists. If a crash between the two stores loses
    the row, the next delivery of that content writes it.
    """

    def __init__(
        self, stores: Stores, settings: Settings, metrics: CoordinatorMetrics
    ) -> None:
        super().__init__(stores, settings, metrics)
        self._register_script = self.redis.register_script(scripts.REGISTER_BATCH)
        self._row_writer = AssignmentRowWriter(
            self.postgres, settings.instance_id, settings.postgres_max_connections
        )

    async def stop(self) -> None:
        await self._row_writer.close()

    @abc.abstractmethod
    async def take_slot(self, keys: BatchKeys, kind: str, item_id: str) -> SlotResult:
        """Take a slot for a ``content`` or ``failure`` item, or find its slot."""

    async def assign_content(
        self, batch_id: str, text_storage_id: str, file_name: str
    ) -> SlotResult:
        result = await self.take_slot(BatchKeys(batch_id), CONTENT, text_storage_id)
        # Retried here rather than by the app, so that a lost Postgres
        # connection does not repeat the Redis step and turn created into a
        # replay in the reply.
        await self.store_retry.run(
            lambda: self.insert_assignment_row(
                batch_id, result.slot_id, text_storage_id, file_name
            ),
            f"Postgres row of content {text_storage_id!r} of batch {batch_id!r}",
        )
        return result

    async def record_failure(self, batch_id: str, failure_id: str) -> SlotResult:
        return await self.take_slot(BatchKeys(batch_id), FAILURE, failure_id)

    async def register_batch(self, batch_id: str, slot_ids: list[str]) -> Registration:
        keys = BatchKeys(batch_id)
        reply = await self._register_script(
            keys=[keys.metadata, keys.available],
            args=[
                canonical_slot_ids(slot_ids),
                self.settings.key_ttl_s,
                time.time_ns(),
                *slot_ids,
            ],
        )
        if reply == -1:
            raise RegistrationConflict()
        return Registration.CREATED if reply == 1 else Registration.EXISTS

    async def read_batch(self, batch_id: str) -> BatchState:
        keys = BatchKeys(batch_id)
        # MULTI makes the four reads one consistent snapshot.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.metadata)
            pipe.smembers(keys.available)
            pipe.hgetall(keys.assignments)
            pipe.hgetall(keys.failures)
            metadata, available, assignments, failures = await pipe.execute()
        if not metadata:
            raise BatchNotFound()
        return BatchState(
            batch_id=batch_id,
            capacity=int(metadata["capacity"]),
            available=list(available),
            assignments=assignments,
            failures=failures,
        )

    async def insert_assignment_row(
        self, batch_id: str, slot_id: str, text_storage_id: str, file_name: str
    ) -> None:
        """Insert the Postgres row of an assignment; an existing row is kept."""
        await self._row_writer.insert(
            AssignmentRow(batch_id, slot_id, text_storage_id, file_name)
        )

    def take_slot_keys(self, keys: BatchKeys, kind: str) -> list[str]:
        """Return the KEYS list of the take-slot scripts in ``scripts``."""
        by_slot, by_item = keys.item_hashes(kind)
        return [
            keys.metadata,
            keys.available,
            by_slot,
            by_item,
            keys.assignments,
            keys.failures,
            BATCH_READY_STREAM,
        ]

    def take_slot_args(self, keys: BatchKeys, item_id: str) -> list[str | int]:
        return [item_id, self.settings.key_ttl_s, keys.batch_id]

    def slot_result(self, reply: list[str]) -> SlotResult:
        """Turn a take-slot script's reply into a result or a refusal."""
        outcome = reply[0]
        if outcome == "not_found":
            raise BatchNotFound()
        if outcome == "no_slot":
            raise NoSlot()
        if outcome == "completed":
            self.metrics.count_completion()
        return SlotResult(reply[1], created=outcome != "replay")
