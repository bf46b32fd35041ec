"""Invariant: every content item (and failure id) occupies exactly one slot.

This is the bug of a dedup read outside the atomic step: two instances both
see the content as new and each gives it a slot. It also covers the opposite
answer: a content refused as "no slot" while it holds one, as a coordinator
does when it reports a unique violation (a copy of the content committed
first) as a refusal. The event's sender then drops a content that the batch
went on to count.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from harness.checkers.batches import BatchState
from harness.checkers.findings import Findings, id_list
from harness.checkers.pairing import check_pairing
from harness.checkers.replies import ITEM_ID_FIELDS, ONE_SLOT_PER_CONTENT
from harness.checkers.verdict import Verdict
from harness.history import History, Operation

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
        _check_refusals,
    )


def _check_refusals(findings: Findings, batches: dict[str, BatchState] | None) -> None:
    """Flags an item refused with no_slot that an ok reply or the final state
    gives a slot.

    A correct coordinator refuses an item only when the batch is full and the
    item has no slot, and a full batch never frees a slot, so the item can
    never hold one afterwards either.
    """
    refusals: dict[tuple[str, str, str], Operation] = {}
    slots: dict[tuple[str, str, str], tuple[str, Operation | None]] = {}
    for invoke, completion in findings.history.pairs():
        if completion is None or invoke.f not in ITEM_ID_FIELDS:
            continue
        key = (
            invoke.f,
            str(invoke.value.get("batch_id")),
            str(invoke.value.get(ITEM_ID_FIELDS[invoke.f])),
        )
        if completion.type == "fail" and completion.value.get("error") == "no_slot":
            refusals.setdefault(key, completion)
        elif completion.type == "ok" and completion.value.get("slot_id") is not None:
            slots.setdefault(key, (str(completion.value["slot_id"]), completion))
    for key, refusal in refusals.items():
        kind, batch_id, item_id = key
        held = slots.get(key) or _final_slot(batches, kind, batch_id, item_id)
        if held is None:
            continue
        slot_id, reply = held
        where = (
            f"an ok reply (operation {reply.index})"
            if reply is not None
            else "the final state"
        )
        sentence = (
            f"{kind} {item_id} of batch {batch_id} was refused as no_slot by "
            f"{refusal.instance} (operation {refusal.index}) but holds slot "
            f"{slot_id} in {where}"
        )
        evidence = [refusal.to_json()]
        if reply is not None:
            evidence.append(reply.to_json())
        findings.violation(sentence, evidence, index=refusal.index)


def _final_slot(
    batches: dict[str, BatchState] | None, kind: str, batch_id: str, item_id: str
) -> tuple[str, None] | None:
    state = (batches or {}).get(batch_id)
    if state is None:
        return None
    holders = state.assignments if kind == "content" else state.failures
    for slot_id, holder in holders.items():
        if holder == item_id:
            return slot_id, None
    return None


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
