"""Invariant: every slot is available, assigned or failed, and no ok reply is lost.

This catches the bug of popping a slot and recording its holder in two round
trips: a kill between them removes the slot from the available set, and no
assignment records it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from harness.checkers.batches import (
    BatchState,
    batch_ids,
    final_batches,
    registered_slots,
)
from harness.checkers.findings import (
    Findings,
    batch_list,
    fact_evidence,
    plural,
    slot_list,
)
from harness.checkers.replies import ReplyIndex
from harness.checkers.verdict import Verdict
from harness.history import History

INVARIANT = "no-lost-slot"


def check(history: History, final_state: dict[str, Any] | None) -> Verdict:
    """Check slot conservation in the final state and that every ok reply is in it.

    Operations with an unknown outcome are left out: the final state alone
    shows whether they took a slot, and conservation covers that slot either way.
    """
    findings = Findings(INVARIANT, history)
    replies = ReplyIndex.from_history(history)
    for sentence in replies.skipped_sentences():
        findings.note(sentence)

    batches = final_batches(final_state)
    if batches is None:
        findings.unknown(
            "the final state is missing, so slot conservation and acknowledged "
            "replies could not be checked"
        )
        return findings.verdict("")

    registered = registered_slots(history)
    missing = []
    for batch_id in batch_ids(history, batches):
        state = batches.get(batch_id)
        if state is None:
            missing.append(batch_id)
            continue
        _check_conservation(findings, state, registered.get(batch_id))
        _check_acknowledged(findings, state, replies)
    if missing:
        findings.unknown(
            f"slots were not checked for {batch_list(missing)}, absent from the "
            "final state"
        )

    return findings.verdict(
        f"every slot of {plural(len(batches), 'batch', 'batches')} is available, "
        "assigned or failed exactly once, and the final state contains every "
        "acknowledged slot "
        f"({plural(replies.ok_count, 'ok reply', 'ok replies')})"
    )


def _check_conservation(
    findings: Findings, state: BatchState, registered: list[str] | None
) -> None:
    places: dict[str, list[str]] = defaultdict(list)
    for slot_id in state.available:
        places[slot_id].append("available")
    for slot_id, content in state.assignments.items():
        places[slot_id].append(f"assigned to content {content}")
    for slot_id, failure_id in state.failures.items():
        places[slot_id].append(f"taken by failure {failure_id}")

    batch_id = state.batch_id
    for slot_id, where in places.items():
        if len(where) > 1:
            findings.fact_violation(
                f"slot {slot_id} of batch {batch_id} is counted more than once: "
                + _describe_places(where),
                batch_id=batch_id,
                slot_ids=[slot_id],
                contents=_present(state.assignments.get(slot_id)),
                failure_ids=_present(state.failures.get(slot_id)),
            )

    if registered is None:
        # Without the registration only the count can be checked.
        counted = len(state.available) + len(state.assignments) + len(state.failures)
        if counted != state.capacity:
            findings.fact_violation(
                f"batch {batch_id} has capacity {state.capacity} but its available, "
                f"assigned and failed slots count {counted}",
                batch_id=batch_id,
            )
        return

    if state.capacity != len(registered):
        findings.fact_violation(
            f"batch {batch_id} reports capacity {state.capacity} but was "
            f"registered with {len(registered)} slots",
            batch_id=batch_id,
        )
    lost = [slot_id for slot_id in registered if slot_id not in places]
    if lost:
        findings.fact_violation(
            f"batch {batch_id} lost {slot_list(lost)}: the final state shows "
            f"{'it' if len(lost) == 1 else 'them'} neither available, assigned "
            "nor failed",
            batch_id=batch_id,
            slot_ids=lost,
        )
    unregistered = [slot_id for slot_id in places if slot_id not in registered]
    if unregistered:
        findings.fact_violation(
            f"batch {batch_id} holds unregistered {slot_list(unregistered)} in "
            "the final state",
            batch_id=batch_id,
            slot_ids=unregistered,
        )


def _check_acknowledged(
    findings: Findings, state: BatchState, replies: ReplyIndex
) -> None:
    for reply in replies.acknowledged(state.batch_id):
        holders = state.assignments if reply.item.kind == "content" else state.failures
        if holders.get(reply.slot_id) == reply.item.id:
            continue
        fact = (
            f"{reply.item} of batch {state.batch_id} was acknowledged with slot "
            f"{reply.slot_id}, but in the final state that slot is "
            f"{state.place_of(reply.slot_id)}"
        )
        evidence = fact_evidence(
            fact,
            batch_id=state.batch_id,
            slot_ids=[reply.slot_id],
            contents=[reply.item.id] if reply.item.kind == "content" else [],
            failure_ids=[reply.item.id] if reply.item.kind == "failure" else [],
        )
        findings.violation(fact, [reply.op.to_json(), evidence])


def _describe_places(places: list[str]) -> str:
    counts = Counter(places)
    return " and ".join(
        place if count == 1 else f"{place} {count} times"
        for place, count in counts.items()
    )


def _present(item_id: str | None) -> list[str]:
    return [] if item_id is None else [item_id]
