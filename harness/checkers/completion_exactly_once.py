"""Invariant: one ``batch_ready`` entry per full batch, and none for others.

Two instances that each decide completion from their own read after the last
assignment both emit the entry. A completion recorded apart from the last
assignment can also list assignments that differ from what the batch holds.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from harness.checkers.batches import (
    BatchState,
    batch_ids,
    final_batches,
    mapping_differences,
)
from harness.checkers.findings import Findings, batch_list, plural
from harness.checkers.verdict import Verdict
from harness.history import History

INVARIANT = "completion-exactly-once"


def check(history: History, final_state: dict[str, Any] | None) -> Verdict:
    """Check the ``events:batch-ready`` entries against the final batch states.

    A batch is full when every slot is assigned or failed. A full batch needs
    exactly one entry whose assignments and failures equal the batch's. A batch
    that is not full needs none. The ``completed`` flag must agree with fullness.
    """
    findings = Findings(INVARIANT, history)
    batches = final_batches(final_state)
    if final_state is None or batches is None:
        findings.unknown(
            "the final state is missing, so the batch_ready entries could not be "
            "compared with the batches"
        )
        return findings.verdict("")
    completions = final_state.get("completions")
    if not isinstance(completions, list):
        findings.unknown(
            "the final state has no completions list, so the events:batch-ready "
            "stream was not read"
        )
        return findings.verdict("")

    entries: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for position, entry in enumerate(completions):
        batch_id = entry.get("batch_id") if isinstance(entry, dict) else None
        if not isinstance(batch_id, str):
            findings.fact_violation(
                f"the batch_ready entry at position {position} has no batch_id: "
                f"{entry!r}"
            )
            continue
        entries[batch_id].append(entry)

    missing = []
    full = 0
    for batch_id in batch_ids(history, batches, entries):
        state = batches.get(batch_id)
        if state is None:
            missing.append(batch_id)
            continue
        if state.full:
            full += 1
        _check_batch(findings, state, entries.get(batch_id, []))
    if missing:
        findings.unknown(
            f"the batch_ready entries were not checked for {batch_list(missing)}, "
            "absent from the final state"
        )

    return findings.verdict(
        "every full batch had one matching batch_ready entry and no other batch "
        f"had one ({full} full, {len(batches) - full} not full)"
    )


def _check_batch(
    findings: Findings, state: BatchState, entries: list[dict[str, Any]]
) -> None:
    batch_id = state.batch_id
    if state.completed != state.full:
        findings.fact_violation(
            f"batch {batch_id} reports completed={str(state.completed).lower()} "
            f"with {state.fill_summary()}",
            batch_id=batch_id,
        )

    if not state.full:
        if entries:
            findings.fact_violation(
                f"batch {batch_id} is not full "
                f"({state.fill_summary()}) but got "
                f"{plural(len(entries), 'batch_ready entry', 'batch_ready entries')}",
                batch_id=batch_id,
            )
        return
    if not entries:
        findings.fact_violation(
            f"batch {batch_id} is full but got no batch_ready entry", batch_id=batch_id
        )
        return
    if len(entries) > 1:
        findings.fact_violation(
            f"batch {batch_id} got {len(entries)} batch_ready entries",
            batch_id=batch_id,
        )

    for number, entry in enumerate(entries, start=1):
        for field, in_batch in (
            ("assignments", state.assignments),
            ("failures", state.failures),
        ):
            listed = entry.get(field)
            if not isinstance(listed, dict):
                findings.fact_violation(
                    f"the batch_ready entry {number} of batch {batch_id} has "
                    f"{field}={listed!r}, expected a JSON object",
                    batch_id=batch_id,
                )
                continue
            differences = mapping_differences(listed, in_batch)
            if differences:
                slot_id, in_entry, in_state = differences[0]
                holders = [h for h in (in_entry, in_state) if h is not None]
                findings.fact_violation(
                    f"the batch_ready entry {number} of batch {batch_id} differs "
                    f"from the final {field} in {plural(len(differences), 'slot')}, "
                    f"e.g. slot {slot_id} holds {_holder(in_entry)} in the entry "
                    f"and {_holder(in_state)} in the batch",
                    batch_id=batch_id,
                    slot_ids=[slot_id],
                    contents=holders if field == "assignments" else [],
                    failure_ids=holders if field == "failures" else [],
                )


def _holder(item_id: str | None) -> str:
    return "nothing" if item_id is None else item_id
