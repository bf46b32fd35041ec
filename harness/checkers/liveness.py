"""Invariant: batches that enough events reached complete, and every operation ends.

This is the bug of an aborted transaction mistaken for a full batch: every
content gets "no slot", slots vanish, and the batch never completes.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from harness.checkers.batches import (
    BatchState,
    batch_ids,
    capacity_of,
    final_batches,
    registered_slots,
)
from harness.checkers.findings import Findings, batch_list, plural
from harness.checkers.replies import ITEM_ID_FIELDS
from harness.checkers.verdict import Verdict
from harness.history import History, Operation

INVARIANT = "liveness"

# Maximum number of unfinished operations quoted one by one. The rest are counted.
MAX_QUOTED_OPEN = 3


def check(history: History, final_state: dict[str, Any] | None) -> Verdict:
    """Check that every reached batch is complete and every invocation completed.

    A batch is reached when its distinct invoked contents plus distinct invoked
    failure ids are at least its capacity, whatever their outcome. A correct
    coordinator then fills it, because the redelivery phase resends every event
    whose outcome was unknown.
    """
    findings = Findings(INVARIANT, history)
    batches = final_batches(final_state)
    unfinished = [
        invoke for invoke, completion in history.pairs() if completion is None
    ]

    if batches is None:
        findings.unknown(
            "the final state is missing, so completion of reached batches could not "
            "be checked"
        )
        if unfinished:
            findings.unknown(
                f"{plural(len(unfinished), 'operation')} never completed, which a "
                "harness killed before the final read also leaves"
            )
        return findings.verdict("")

    reached = _check_reached(findings, history, batches)
    _check_unfinished(findings, history, unfinished)
    return findings.verdict(
        f"every reached batch is complete ({plural(reached, 'batch', 'batches')}), "
        "and every operation completed"
    )


def _check_reached(
    findings: Findings, history: History, batches: dict[str, BatchState]
) -> int:
    invoked: dict[str, set[tuple[str, str]]] = defaultdict(set)
    unknown_outcomes = 0
    for invoke, completion in history.pairs():
        if invoke.f not in ITEM_ID_FIELDS:
            continue
        item_id = invoke.value.get(ITEM_ID_FIELDS[invoke.f])
        batch_id = invoke.value.get("batch_id")
        if item_id is None or batch_id is None:
            continue
        invoked[batch_id].add((invoke.f, item_id))
        if completion is not None and completion.type == "info":
            unknown_outcomes += 1
    if unknown_outcomes:
        findings.note(
            "reached batches count every invoked event, including "
            f"{plural(unknown_outcomes, 'operation')} with an unknown outcome (info)"
        )

    registered = registered_slots(history)
    reached = 0
    missing = []
    for batch_id in batch_ids(history, batches):
        capacity = capacity_of(batch_id, registered, batches)
        items = invoked.get(batch_id, set())
        if capacity is None:
            # Neither registered nor read, so whether it was reached is unknown.
            missing.append(batch_id)
            continue
        if len(items) < capacity:
            continue
        reached += 1
        state = batches.get(batch_id)
        if state is None:
            missing.append(batch_id)
            continue
        if state.full:
            continue
        contents = sum(1 for kind, _id in items if kind == "content")
        fact = (
            f"batch {batch_id} is not complete ({state.fill_summary()}), although "
            f"{plural(contents, 'content')} and "
            f"{plural(len(items) - contents, 'failure id')} were sent for its "
            f"{capacity} slots"
        )
        findings.fact_violation(fact, batch_id=batch_id)
    if missing:
        findings.unknown(
            f"completion was not checked for {batch_list(missing)}, absent from "
            "the final state"
        )
    return reached


def _check_unfinished(
    findings: Findings, history: History, unfinished: list[Operation]
) -> None:
    """Reports invocations with no completion as unknown, never as invalid.

    The harness gives every request a client timeout, after which it records
    ``info``, so a coordinator that hangs still yields completions. An
    invocation with none means the history itself was cut short (a torn or
    truncated file, a harness stopped mid-request). That is no evidence against
    the coordinator.
    """
    if not unfinished:
        return
    first = unfinished[0]
    reason = (
        f"{plural(len(unfinished), 'operation')} never completed (the first is "
        f"operation {first.index}, {first.f} by process {first.process}), so the "
        "history was cut short"
    )
    if history.torn_lines:
        reason += ", and the torn lines may have held their completions"
    findings.unknown(reason)
