from harness.checkers import completion_exactly_once
from harness.checkers.verdict import Verdict
from tests.checkers.builders import HistoryBuilder, batch_state, final_state

INVARIANT = "completion-exactly-once"


def two_batches() -> HistoryBuilder:
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    h.register("b-2", ["s-1", "s-2"])
    return h


FULL = batch_state("b-1", assignments={"s-1": "c-1"}, failures={"s-2": "f-1"})
OPEN = batch_state("b-2", ["s-2"], {"s-1": "c-5"})
ENTRY = {"batch_id": "b-1", "assignments": {"s-1": "c-1"}, "failures": {"s-2": "f-1"}}


def fact_verdict(*evidence: dict) -> Verdict:
    """Return the invalid verdict whose reason quotes each fact of the evidence."""
    facts = [item["fact"] for item in evidence]
    return Verdict(
        invariant=INVARIANT,
        status="invalid",
        reason=" ".join(fact[0].upper() + fact[1:] + "." for fact in facts),
        cause="coordinator",
        evidence=list(evidence),
    )


def test_one_entry_for_full_batch_valid():
    state = final_state(FULL, OPEN, completions=[ENTRY])

    verdict = completion_exactly_once.check(two_batches().build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="valid",
        reason=(
            "Every full batch had one matching batch_ready entry and no other batch "
            "had one (1 full, 1 not full)."
        ),
    )


def test_full_batch_without_entry_invalid():
    state = final_state(FULL, OPEN, completions=[])

    verdict = completion_exactly_once.check(two_batches().build(), state)

    assert verdict == fact_verdict(
        {"fact": "batch b-1 is full but got no batch_ready entry", "batch_id": "b-1"}
    )


def test_two_entries_invalid():
    state = final_state(FULL, OPEN, completions=[ENTRY, dict(ENTRY)])

    verdict = completion_exactly_once.check(two_batches().build(), state)

    assert verdict == fact_verdict(
        {"fact": "batch b-1 got 2 batch_ready entries", "batch_id": "b-1"}
    )


def test_entry_for_open_batch_invalid():
    entry = {"batch_id": "b-2", "assignments": {"s-1": "c-5"}, "failures": {}}
    state = final_state(FULL, OPEN, completions=[ENTRY, entry])

    verdict = completion_exactly_once.check(two_batches().build(), state)

    assert verdict == fact_verdict(
        {
            "fact": "batch b-2 is not full (1 assigned + 0 failed of 2, 1 "
            "available) but got 1 batch_ready entry",
            "batch_id": "b-2",
        }
    )


def test_entry_with_other_assignments_invalid():
    entry = {"batch_id": "b-1", "assignments": {"s-1": "c-9"}, "failures": {}}
    state = final_state(FULL, OPEN, completions=[entry])

    verdict = completion_exactly_once.check(two_batches().build(), state)

    assert verdict == fact_verdict(
        {
            "fact": "the batch_ready entry 1 of batch b-1 differs from the final "
            "assignments in 1 slot, e.g. slot s-1 holds c-9 in the entry and c-1 "
            "in the batch",
            "batch_id": "b-1",
            "slot_id": "s-1",
            "text_storage_ids": ["c-9", "c-1"],
        },
        {
            "fact": "the batch_ready entry 1 of batch b-1 differs from the final "
            "failures in 1 slot, e.g. slot s-2 holds nothing in the entry and f-1 "
            "in the batch",
            "batch_id": "b-1",
            "slot_id": "s-2",
            "failure_id": "f-1",
        },
    )


def test_completed_flag_disagreeing_invalid():
    lying = batch_state("b-2", ["s-2"], {"s-1": "c-5"}, completed=True)
    state = final_state(FULL, lying, completions=[ENTRY])

    verdict = completion_exactly_once.check(two_batches().build(), state)

    assert verdict == fact_verdict(
        {
            "fact": "batch b-2 reports completed=true with 1 assigned + 0 failed of "
            "2, 1 available",
            "batch_id": "b-2",
        }
    )


def test_entry_without_batch_id_invalid():
    state = final_state(FULL, OPEN, completions=[ENTRY, {"assignments": {}}])

    verdict = completion_exactly_once.check(two_batches().build(), state)

    assert verdict == fact_verdict(
        {
            "fact": "the batch_ready entry at position 1 has no batch_id: "
            "{'assignments': {}}"
        }
    )


def test_missing_final_state_unknown():
    verdict = completion_exactly_once.check(two_batches().build(), None)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="unknown",
        reason=(
            "The final state is missing, so the batch_ready entries could not be "
            "compared with the batches."
        ),
    )


def test_missing_completions_list_unknown():
    state = final_state(FULL, OPEN)
    del state["completions"]

    verdict = completion_exactly_once.check(two_batches().build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="unknown",
        reason=(
            "The final state has no completions list, so the events:batch-ready "
            "stream was not read."
        ),
    )


def test_batch_absent_from_final_state_unknown():
    state = final_state(FULL, completions=[ENTRY])

    verdict = completion_exactly_once.check(two_batches().build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="unknown",
        reason=(
            "The batch_ready entries were not checked for batch b-2, absent from "
            "the final state."
        ),
    )


def test_exhausted_batch_is_not_full():
    # Slots popped and never recorded: none available, yet the batch is not full,
    # so no batch_ready entry is due.
    drained = batch_state("b-2", [], {"s-1": "c-5"}, capacity=2)
    state = final_state(FULL, drained, completions=[ENTRY])

    verdict = completion_exactly_once.check(two_batches().build(), state)

    assert verdict.status == "valid"
