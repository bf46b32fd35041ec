"""Invariant: no slot is given to two different items.

This is the bug of per-instance state: two instances each pick the same free
slot for different contents, or a failure takes a slot a content holds.
"""

from __future__ import annotations

from typing import Any

from harness.checkers.batches import BatchState
from harness.checkers.findings import Findings
from harness.checkers.pairing import check_pairing
from harness.checkers.replies import ONE_CONTENT_PER_SLOT
from harness.checkers.verdict import Verdict
from harness.history import History

INVARIANT = ONE_CONTENT_PER_SLOT


def check(history: History, final_state: dict[str, Any] | None) -> Verdict:
    """Check that ok replies and the final state give each slot a single item.

    Items are contents and failure ids, so a content and a failure given the
    same slot is a violation too.
    """
    return check_pairing(
        INVARIANT,
        history,
        final_state,
        _check_final_state,
        "give every slot at most one content or failure",
    )


def _check_final_state(findings: Findings, state: BatchState) -> None:
    for slot_id in state.assignments:
        if slot_id not in state.failures:
            continue
        fact = (
            f"the final state has slot {slot_id} of batch {state.batch_id} both "
            f"assigned to content {state.assignments[slot_id]} and taken by "
            f"failure {state.failures[slot_id]}"
        )
        findings.fact_violation(
            fact,
            batch_id=state.batch_id,
            slot_ids=[slot_id],
            contents=[state.assignments[slot_id]],
            failure_ids=[state.failures[slot_id]],
        )
