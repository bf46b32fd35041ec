"""An index of the slots that ok replies named, shared by the offline and online checks.

A content item or a failure id takes a slot. The index records, per batch, the
slots that replies gave each item and the items that replies gave each slot. An
item given two slots breaks "one slot per content". A slot given to two items
breaks "one content per slot".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from harness.checkers.findings import plural
from harness.history import COMPLETION_TYPES, History, Operation

ONE_SLOT_PER_CONTENT = "one-slot-per-content"
ONE_CONTENT_PER_SLOT = "one-content-per-slot"

# The value field that names the item, per operation kind.
ITEM_ID_FIELDS = {"content": "text_storage_id", "failure": "failure_id"}


@dataclass(frozen=True)
class Item:
    """A content item or a validation failure, either of which takes one slot."""

    kind: Literal["content", "failure"]
    id: str

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"


@dataclass(frozen=True)
class Reply:
    """An ok reply that gave ``item`` the slot ``slot_id`` of a batch."""

    batch_id: str
    item: Item
    slot_id: str
    op: Operation


@dataclass(frozen=True)
class Conflict:
    """Two ok replies that contradict each other.

    For ``one-slot-per-content`` both name the same item and different slots.
    For ``one-content-per-slot`` both name the same slot and different items.
    """

    invariant: str
    first: Reply
    second: Reply

    def describe(self) -> str:
        first, second = self.first, self.second
        if self.invariant == ONE_SLOT_PER_CONTENT:
            return (
                f"{first.item} of batch {first.batch_id} got slots {first.slot_id} "
                f"and {second.slot_id}"
            )
        return (
            f"slot {first.slot_id} of batch {first.batch_id} was given to "
            f"{first.item} and {second.item}"
        )


class ReplyIndex:
    """Slots named by ok replies, built one operation at a time.

    Feed it operations in history order. Invocations are optional: when one
    was fed, its value fills fields the completion lacks.
    """

    def __init__(self) -> None:
        self._open: dict[int | str, Operation] = {}
        # Per (batch, item): each slot it was given, with the first reply naming it.
        self.slots_by_item: dict[tuple[str, Item], dict[str, Reply]] = {}
        # Per (batch, slot): each item it was given to, with the first reply.
        self.items_by_slot: dict[tuple[str, str], dict[Item, Reply]] = {}
        # Per batch: its items in the order of their first ok reply.
        self._items_of_batch: dict[str, list[Item]] = {}
        self.conflicts: list[Conflict] = []
        self.ok_count = 0
        # Content and failure completions whose outcome is unknown (info).
        self.unknown_outcomes: list[Operation] = []
        # Ok replies without a batch id, item id or slot id: the index skips them.
        self.malformed: list[Operation] = []

    @classmethod
    def from_history(cls, history: History) -> ReplyIndex:
        index = cls()
        for op in history.operations:
            index.observe(op)
        return index

    def observe(self, op: Operation) -> list[Conflict]:
        """Record one operation and return the conflicts it reveals."""
        if op.type == "invoke":
            self._open[op.process] = op
            return []
        if op.type not in COMPLETION_TYPES:
            return []
        invoke = self._open.pop(op.process, None)
        if op.f not in ITEM_ID_FIELDS:
            return []
        if op.type == "info":
            self.unknown_outcomes.append(op)
            return []
        if op.type != "ok":
            return []

        value = {**invoke.value, **op.value} if invoke is not None else op.value
        batch_id = value.get("batch_id")
        item_id = value.get(ITEM_ID_FIELDS[op.f])
        slot_id = value.get("slot_id")
        if batch_id is None or item_id is None or slot_id is None:
            self.malformed.append(op)
            return []
        self.ok_count += 1
        reply = Reply(str(batch_id), Item(op.f, str(item_id)), str(slot_id), op)
        return self._record(reply)

    def _record(self, reply: Reply) -> list[Conflict]:
        found: list[Conflict] = []
        key = (reply.batch_id, reply.item)
        if key not in self.slots_by_item:
            self._items_of_batch.setdefault(reply.batch_id, []).append(reply.item)
        slots = self.slots_by_item.setdefault(key, {})
        if reply.slot_id not in slots:
            if slots:
                first = next(iter(slots.values()))
                found.append(Conflict(ONE_SLOT_PER_CONTENT, first, reply))
            slots[reply.slot_id] = reply

        items = self.items_by_slot.setdefault((reply.batch_id, reply.slot_id), {})
        if reply.item not in items:
            if items:
                first = next(iter(items.values()))
                found.append(Conflict(ONE_CONTENT_PER_SLOT, first, reply))
            items[reply.item] = reply

        self.conflicts.extend(found)
        return found

    def conflicts_of(self, invariant: str) -> list[Conflict]:
        return [c for c in self.conflicts if c.invariant == invariant]

    def acknowledged(self, batch_id: str) -> Iterator[Reply]:
        """Yield the first ok reply of each (item, slot) pair of the batch."""
        for item in self._items_of_batch.get(batch_id, []):
            yield from self.slots_by_item[(batch_id, item)].values()

    def acknowledged_items(self, batch_id: str) -> list[Reply]:
        """Return the first ok reply of each item of the batch, oldest first."""
        return [
            next(iter(self.slots_by_item[(batch_id, item)].values()))
            for item in self._items_of_batch.get(batch_id, [])
        ]

    def batch_ids(self) -> list[str]:
        return list(self._items_of_batch)

    def skipped_sentences(self) -> list[str]:
        """Return notes on the operations this index did not count."""
        notes = []
        if self.unknown_outcomes:
            count = plural(len(self.unknown_outcomes), "content or failure operation")
            notes.append(
                f"left out {count} with an unknown outcome (info), which may or may "
                "not have taken a slot"
            )
        if self.malformed:
            count = plural(len(self.malformed), "ok reply", "ok replies")
            notes.append(f"skipped {count} without a batch, item or slot id")
        return notes
