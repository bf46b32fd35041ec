"""Redis key names of one batch, as the original service laid them out."""

from __future__ import annotations

from dataclasses import dataclass

# Stream that receives one batch_ready entry per completed batch.
BATCH_READY_STREAM = "events:batch-ready"

# The two kinds of item that take a slot.
CONTENT = "content"
FAILURE = "failure"


@dataclass(frozen=True)
class BatchKeys:
    """The keys of one batch; every one of them carries the TTL ``KEY_TTL_S``."""

    batch_id: str

    @property
    def prefix(self) -> str:
        return f"batch:{self.batch_id}"

    @property
    def available(self) -> str:
        """SET of the slots not yet assigned or failed."""
        return f"{self.prefix}:available_slots"

    @property
    def assignments(self) -> str:
        """HASH slot -> content."""
        return f"{self.prefix}:assignments"

    @property
    def content(self) -> str:
        """HASH content -> slot, the dedup index of assignments."""
        return f"{self.prefix}:content"

    @property
    def failures(self) -> str:
        """HASH slot -> failure id."""
        return f"{self.prefix}:failures"

    @property
    def failure_ids(self) -> str:
        """HASH failure id -> slot, the dedup index of failures."""
        return f"{self.prefix}:failure_ids"

    @property
    def metadata(self) -> str:
        """HASH with capacity, slot_ids (sorted JSON list) and created_ns."""
        return f"{self.prefix}:metadata"

    @property
    def ready_relayed(self) -> str:
        """Marker set once the outbox relay has emitted the batch_ready entry."""
        return f"{self.prefix}:ready_relayed"

    def item_hashes(self, kind: str) -> tuple[str, str]:
        """Return the slot -> item and item -> slot hashes of an item kind."""
        if kind == CONTENT:
            return self.assignments, self.content
        if kind == FAILURE:
            return self.failures, self.failure_ids
        raise ValueError(
            f"item kind {kind!r} is invalid; expected {CONTENT!r} or {FAILURE!r}"
        )

    def claim(self, item_kind: str, item_id: str) -> str:
        """Key a pop-then-record instance sets with NX while it handles one item."""
        return f"{self.prefix}:claim:{item_kind}:{item_id}"
