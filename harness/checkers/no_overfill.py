"""Invariant: a batch never acknowledges more items than it has slots.

Counts distinct contents and distinct failure ids with an ok reply. Replies
alone decide it, so it needs no final state except to learn the capacity of a
batch whose registration the history lacks.
"""

from __future__ import annotations

from typing import Any

from harness.checkers.batches import (
    batch_ids,
    capacity_of,
    final_batches,
    registered_slots,
)
from harness.checkers.findings import Findings, batch_list, plural
from harness.checkers.replies import ReplyIndex
from harness.checkers.verdict import Verdict
from harness.history import History

INVARIANT = "no-overfill"


def check(history: History, final_state: dict[str, Any] | None) -> Verdict:
    """Check that ok contents plus ok failure ids never exceed a batch's capacity."""
    findings = Findings(INVARIANT, history)
    replies = ReplyIndex.from_history(history)
    registered = registered_slots(history)
    batches = final_batches(final_state)

    unsized = []
    checked = 0
    for batch_id in batch_ids(history, replies.batch_ids()):
        acknowledged = replies.acknowledged_items(batch_id)
        capacity = capacity_of(batch_id, registered, batches)
        if capacity is None:
            if acknowledged:
                unsized.append(batch_id)
            continue
        checked += 1
        if len(acknowledged) <= capacity:
            continue

        contents = sum(1 for reply in acknowledged if reply.item.kind == "content")
        failures = len(acknowledged) - contents
        overflow = acknowledged[capacity:]
        findings.violation(
            f"batch {batch_id} acknowledged {plural(contents, 'content')} and "
            f"{plural(failures, 'failure')}, more than its "
            f"{plural(capacity, 'slot')}",
            [reply.op.to_json() for reply in overflow],
            # The reply that first went past the capacity shows the overfill.
            index=overflow[0].op.index,
        )

    for sentence in replies.skipped_sentences():
        findings.note(sentence)
    if unsized:
        findings.unknown(
            f"the capacity of {batch_list(unsized)} is unknown because neither a "
            "registration nor the final state shows it"
        )
    return findings.verdict(
        f"no batch acknowledged more contents and failures than its slots "
        f"({plural(checked, 'batch', 'batches')} checked)"
    )
