"""Invariant: every content item (and failure id) occupies exactly one slot.

This is the bug of a dedup read outside the atomic step: two instances both
see the content as new and each gives it a slot.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from harness.checkers.batches import BatchState, batch_ids, final_batches
from harness.checkers.findings import Findings, batch_list, id_list, plural
from harness.checkers.replies import ONE_SLOT_PER_CONTENT, ReplyIndex
from harness.checkers.verdict import Verdict
from harness.history import History

INVARIANT = ONE_SLOT_PER_CONTENT


def check(history: History, final_state: dict[str, Any] | None) -> Verdict:
    """Check that ok replies and the final state give each item a single slot.

    A conflict among the replies is enough for invalid, so this works without
    a final state. With no conflict and no final state, the verdict is unknown.
    """
    findings = Findings(INVARIANT, history)
    replies = ReplyIndex.from_history(history)

    # Replies: an item given two different slots.
    for conflict in replies.conflicts_of(INVARIANT):
        findings.violation(
            conflict.describe(),
            [conflict.first.op.to_json(), conflict.second.op.to_json()],
            index=conflict.second.op.index,
        )
    for sentence in replies.skipped_sentences():
        findings.note(sentence)

    # Final state: an item held in two slots.
    batches = final_batches(final_state)
    if batches is None:
        findings.unknown("the final state is missing, so only the replies were checked")
    else:
        missing = []
        for batch_id in batch_ids(history, batches):
            if batch_id not in batches:
                missing.append(batch_id)
                continue
            _check_final_state(findings, batches[batch_id])
        if missing:
            findings.unknown(
                f"only the replies were checked for {batch_list(missing)}, absent "
                "from the final state"
            )

    return findings.verdict(
        f"{plural(replies.ok_count, 'ok reply', 'ok replies')} and the final state "
        "give every content and failure id one slot"
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
            findings.violation(fact, [{"fact": fact}])
