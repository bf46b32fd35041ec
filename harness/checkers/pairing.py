"""The shared shape of the two pairing invariants: replies, then final state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.checkers.batches import BatchState, batch_ids, final_batches
from harness.checkers.findings import Findings, batch_list, plural
from harness.checkers.replies import ReplyIndex
from harness.checkers.verdict import Verdict
from harness.history import History


def check_pairing(
    invariant: str,
    history: History,
    final_state: dict[str, Any] | None,
    check_final_state: Callable[[Findings, BatchState], None],
    summary: str,
    check_history: Callable[[Findings, dict[str, BatchState] | None], None]
    | None = None,
) -> Verdict:
    """Checks the ok replies for conflicts, then each batch of the final state.

    A conflict among the replies is enough for invalid, so this works without
    a final state. With no conflict and no final state, the verdict is unknown.
    """
    findings = Findings(invariant, history)
    replies = ReplyIndex.from_history(history)

    # Replies: two ok replies that break the pairing.
    for conflict in replies.conflicts_of(invariant):
        findings.violation(
            conflict.describe(),
            [conflict.first.op.to_json(), conflict.second.op.to_json()],
            index=conflict.second.op.index,
        )
    for sentence in replies.skipped_sentences():
        findings.note(sentence)

    # Final state: each batch read after settling.
    batches = final_batches(final_state)
    if check_history is not None:
        check_history(findings, batches)
    if batches is None:
        findings.unknown("the final state is missing, so only the replies were checked")
    else:
        missing = []
        for batch_id in batch_ids(history, batches):
            if batch_id not in batches:
                missing.append(batch_id)
                continue
            check_final_state(findings, batches[batch_id])
        if missing:
            findings.unknown(
                f"only the replies were checked for {batch_list(missing)}, absent "
                "from the final state"
            )

    return findings.verdict(
        f"{plural(replies.ok_count, 'ok reply', 'ok replies')} and the final state "
        f"{summary}"
    )
