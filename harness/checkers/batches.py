"""Views of the batches a run registered and of the final state it read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError
from harness.history import History


class FinalStateError(HarnessError):
    """A final state whose shape does not match ``GET /batches/{id}``."""


@dataclass(frozen=True)
class BatchState:
    """One batch as ``GET /batches/{id}`` returned it after the settle time."""

    batch_id: str
    capacity: int
    available: list[str]
    assignments: dict[str, str]
    failures: dict[str, str]
    completed: bool

    @property
    def full(self) -> bool:
        """Every slot is assigned or failed.

        An empty available set is not enough: a batch whose slots were popped
        and never recorded has none available and is still not full.
        """
        return len(self.assignments) + len(self.failures) >= self.capacity

    def fill_summary(self) -> str:
        return (
            f"{len(self.assignments)} assigned + {len(self.failures)} failed of "
            f"{self.capacity}, {len(self.available)} available"
        )

    @classmethod
    def from_json(cls, batch_id: str, body: Any) -> BatchState:
        if not isinstance(body, dict):
            raise FinalStateError(
                f"final state of batch {batch_id!r} is {body!r}, expected the JSON "
                "object of GET /batches/{id}"
            )
        return cls(
            batch_id=batch_id,
            capacity=_field(batch_id, body, "capacity", int),
            available=list(_field(batch_id, body, "available", list)),
            assignments=dict(_field(batch_id, body, "assignments", dict)),
            failures=dict(_field(batch_id, body, "failures", dict)),
            completed=_field(batch_id, body, "completed", bool),
        )

    def place_of(self, slot_id: str) -> str:
        """Describe where the final state has ``slot_id``, for messages."""
        places = []
        if slot_id in self.available:
            places.append("available")
        if slot_id in self.assignments:
            places.append(f"assigned to content {self.assignments[slot_id]}")
        if slot_id in self.failures:
            places.append(f"taken by failure {self.failures[slot_id]}")
        if not places:
            return "missing"
        return " and ".join(places)


def _field(batch_id: str, body: dict[str, Any], name: str, kind: type) -> Any:
    if name not in body:
        raise FinalStateError(
            f"final state of batch {batch_id!r} has no {name!r} field, which the "
            "coordinator's GET /batches/{id} reply must contain"
        )
    value = body[name]
    # bool is a subclass of int, so a capacity of true would pass isinstance.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise FinalStateError(
            f"final state of batch {batch_id!r} has {name}={value!r}, expected a "
            f"JSON {kind.__name__}"
        )
    return value


def final_batches(
    final_state: Mapping[str, Any] | None,
) -> dict[str, BatchState] | None:
    """Parse the batches of the final state, or return None without a final state.

    A batch absent from the final state (its read failed) is absent from the
    result, so callers report its checks as unknown.
    """
    if final_state is None:
        return None
    raw = final_state.get("batches") or {}
    return {
        batch_id: BatchState.from_json(batch_id, body) for batch_id, body in raw.items()
    }


def registered_slots(history: History) -> dict[str, list[str]]:
    """Map each registered batch id to the slot ids the harness registered.

    An ok registration wins. Without one, a registration whose outcome is
    unknown or missing is used, because the batch may exist all the same. A
    refused registration (409 conflict) never counts.
    """
    definite: dict[str, list[str]] = {}
    possible: dict[str, list[str]] = {}
    for invoke, completion in history.pairs():
        if invoke.f != "register":
            continue
        batch_id = invoke.value.get("batch_id")
        slot_ids = invoke.value.get("slot_ids")
        if batch_id is None or not isinstance(slot_ids, list):
            continue
        if completion is not None and completion.type == "ok":
            definite.setdefault(batch_id, list(slot_ids))
        elif completion is None or completion.type == "info":
            possible.setdefault(batch_id, list(slot_ids))
    return {**possible, **definite}


def batch_ids(history: History, *more: Iterable[str]) -> list[str]:
    """Return every batch id the history and ``more`` mention, in first-seen order."""
    seen: dict[str, None] = {}
    for op in history.operations:
        if op.type != "nemesis":
            batch_id = op.value.get("batch_id")
            if isinstance(batch_id, str):
                seen.setdefault(batch_id, None)
    for ids in more:
        for batch_id in ids:
            seen.setdefault(batch_id, None)
    return list(seen)


def capacity_of(
    batch_id: str,
    registered: Mapping[str, list[str]],
    batches: Mapping[str, BatchState] | None,
) -> int | None:
    """Return the batch's slot count: registered slots first, else the final state."""
    if batch_id in registered:
        return len(registered[batch_id])
    if batches is not None and batch_id in batches:
        return batches[batch_id].capacity
    return None


def mapping_differences(
    left: Mapping[str, Any], right: Mapping[str, Any]
) -> list[tuple[str, Any, Any]]:
    """Return ``(key, left value, right value)`` for every key whose values differ.

    A key missing on one side shows None on that side.
    """
    keys = list(dict.fromkeys([*left, *right]))
    return [
        (key, left.get(key), right.get(key))
        for key in keys
        if left.get(key) != right.get(key)
    ]
