"""Invariant (reference coordinator): Redis and Postgres hold the same assignments.

The final state's batches come from ``GET /batches/{id}``. ``store_rows`` comes
from the coordinator's Postgres table, one row per assigned slot, and is
absent when the rows cannot be read, as with a user's own image.
"""

from __future__ import annotations

from typing import Any

from harness.checkers.batches import batch_ids, final_batches, mapping_differences
from harness.checkers.findings import Findings, batch_list, fact_evidence, plural
from harness.checkers.verdict import Verdict
from harness.history import History

INVARIANT = "stores-agree"

# Evidence per batch: the slots that differ, at most this many.
MAX_SLOTS_PER_BATCH = 3


def check(history: History, final_state: dict[str, Any] | None) -> Verdict:
    """Check that each batch's Postgres rows equal its assignments from GET."""
    findings = Findings(INVARIANT, history)
    batches = final_batches(final_state)
    if final_state is None or batches is None:
        findings.unknown("the final state is missing, so the stores were not compared")
        return findings.verdict("")
    store_rows = final_state.get("store_rows")
    if store_rows is None:
        # The harness stores the error that stopped it reading the rows, if any.
        unreadable_reason = final_state.get("store_rows_unreadable") or (
            "the coordinator is a user's image or its Postgres rows could not be read"
        )
        findings.unknown(
            "the final state has no store_rows, so the stores were not compared: "
            f"{unreadable_reason}"
        )
        return findings.verdict("")

    missing = []
    unread = []
    for batch_id in batch_ids(history, batches, store_rows):
        state = batches.get(batch_id)
        if state is None:
            missing.append(batch_id)
            continue
        # The reader maps every batch it queried, with no rows as {}, so an
        # absent batch was never queried rather than empty.
        rows = store_rows.get(batch_id)
        if rows is None:
            unread.append(batch_id)
            continue
        differences = mapping_differences(state.assignments, rows)
        if not differences:
            continue
        facts = [
            fact_evidence(
                f"slot {slot_id} of batch {batch_id} holds {_holder(in_get)} in GET "
                f"/batches/{batch_id} but {_holder(in_rows)} in the Postgres rows",
                batch_id=batch_id,
                slot_ids=[slot_id],
                contents=[c for c in (in_get, in_rows) if c is not None],
            )
            for slot_id, in_get, in_rows in differences[:MAX_SLOTS_PER_BATCH]
        ]
        findings.violation(
            f"batch {batch_id} differs between the stores in "
            f"{plural(len(differences), 'slot')}, e.g. {facts[0]['fact']}",
            facts,
        )
    if missing:
        findings.unknown(
            f"Postgres rows were not compared for {batch_list(missing)}, absent "
            "from the final state"
        )
    if unread:
        findings.unknown(
            f"Postgres rows were not compared for {batch_list(unread)}, absent "
            "from store_rows"
        )

    return findings.verdict(
        f"the Postgres rows of {plural(len(batches), 'batch', 'batches')} equal the "
        "assignments that GET returned"
    )


def _holder(content: str | None) -> str:
    return "nothing" if content is None else f"content {content}"
