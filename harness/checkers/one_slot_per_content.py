"""Invariant: every content item (and failure id) occupies exactly one slot.

This is the bug of a dedup read outside the atomic step: two instances both
see the content as new and each gives it a slot.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from harness.checkers.batches import BatchState
from harness.checkers.findings import Findings, id_list
from harness.checkers.pairing import check_pairing
from harness.checkers.replies import ONE_SLOT_PER_CONTENT
from harness.checkers.verdict import Verdict
from harness.history import History

INVARIANT = ONE_SLOT_PER_CONTENT


def check(history: History, final_state: dict[str, Any] | None) -> Verdict:
    """Check that ok replies and the final state give each item a single slot.

    A conflict among the replies is enough for invalid, so this works without
    a final state. With no conflict and no final state, the verdict is unknown.
    """
    return check_pairing(
        INVARIANT,
        history,
        final_state,
        _check_final_state,
        "give every content and failure id one slot",
    )


def _check_final_state(findings: Findings, state: BatchState) -> None:
    for kind, holders in (("content", state.assignments), ("failure", state.failures)):
        slots_by_item: dict[str, list[str]] = defaultdict(list)
        for slot_id, item_id in holders.items():
            slots_by_item[item_id].append(slot_id)
        for item_id, slots in slots_by_item.items():
            if len(slots) < 2:
                continue
            fact = (
                f"the final state holds {kind} {item_id} of batch {state.batch_id} "
                f"in slots {id_list(slots, limit=len(slots))}"
            )
            findings.fact_violation(
                fact,
                batch_id=state.batch_id,
                slot_ids=slots,
                contents=[item_id] if kind == "content" else [],
                failure_ids=[item_id] if kind == "failure" else [],
            )
