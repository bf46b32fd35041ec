"""Invariant: no slot is given to two different items.

This is the bug of per-instance state: two instances each pick the same free
slot for different contents, or a failure takes a slot a content holds.
"""

from __future__ import annotations

from typing import Any

from harness.checkers.batches import BatchState, batch_ids, final_batches
from harness.checkers.findings import Findings, batch_list, plural
from harness.checkers.replies import ONE_CONTENT_PER_SLOT, ReplyIndex
from harness.checkers.verdict import Verdict
from harness.history import History

INVARIANT = ONE_CONTENT_PER_SLOT


def check(history: History, final_state: dict[str, Any] | None) -> Verdict:
    """Check that ok replies and the final state give each slot a single item.

    Items are contents and failure ids, so a content and a failure given the
    same slot is a violation too.
    """
    findings = Findings(INVARIANT, history)
    replies = ReplyIndex.from_history(history)

    # Replies: a slot given to two different items.
    for conflict in replies.conflicts_of(INVARIANT):
        findings.violation(
            conflict.describe(),
            [conflict.first.op.to_json(), conflict.second.op.to_json()],
            index=conflict.second.op.index,
        )
    for sentence in replies.skipped_sentences():
        findings.note(sentence)

    # Final state: a slot both assigned and failed.
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
        "give every slot at most one content or failure"
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
        findings.violation(fact, [{"fact": fact}])
