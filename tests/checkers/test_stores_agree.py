from harness.checkers import stores_agree
from harness.checkers.verdict import Verdict
from tests.checkers.builders import HistoryBuilder, batch_state, final_state

INVARIANT = "stores-agree"


def registered() -> HistoryBuilder:
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2", "s-3"])
    return h


STATE = batch_state("b-1", ["s-3"], {"s-1": "c-1", "s-2": "c-2"})


def test_equal_rows_valid():
    verdict = stores_agree.check(registered().build(), final_state(STATE))

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="valid",
        reason="The Postgres rows of 1 batch equal the assignments that GET returned.",
    )


def test_different_rows_invalid():
    rows = {"b-1": {"s-1": "c-1", "s-2": "c-7", "s-3": "c-3"}}
    state = final_state(STATE, store_rows=rows)

    verdict = stores_agree.check(registered().build(), state)

    facts = [
        "slot s-2 of batch b-1 holds content c-2 in GET /batches/b-1 but content "
        "c-7 in the Postgres rows",
        "slot s-3 of batch b-1 holds nothing in GET /batches/b-1 but content c-3 in "
        "the Postgres rows",
    ]
    assert verdict == Verdict(
        invariant=INVARIANT,
        status="invalid",
        reason=f"Batch b-1 differs between the stores in 2 slots, e.g. {facts[0]}.",
        cause="coordinator",
        evidence=[
            {
                "fact": facts[0],
                "batch_id": "b-1",
                "slot_id": "s-2",
                "text_storage_ids": ["c-2", "c-7"],
            },
            {
                "fact": facts[1],
                "batch_id": "b-1",
                "slot_id": "s-3",
                "text_storage_id": "c-3",
            },
        ],
    )


def test_batch_with_no_rows_invalid():
    state = final_state(STATE, store_rows={"b-1": {}})

    verdict = stores_agree.check(registered().build(), state)

    assert verdict.status == "invalid"
    assert verdict.reason == (
        "Batch b-1 differs between the stores in 2 slots, e.g. slot s-1 of batch "
        "b-1 holds content c-1 in GET /batches/b-1 but nothing in the Postgres rows."
    )


def test_batch_absent_from_store_rows_unknown():
    state = final_state(STATE, store_rows={})

    verdict = stores_agree.check(registered().build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="unknown",
        reason="Postgres rows were not compared for batch b-1, absent from store_rows.",
    )


def test_missing_store_rows_unknown():
    state = final_state(STATE, with_store_rows=False)

    verdict = stores_agree.check(registered().build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="unknown",
        reason=(
            "The final state has no store_rows, so the stores were not compared: "
            "the coordinator is a user's image or its Postgres rows could not be "
            "read."
        ),
    )


def test_unreadable_rows_reason_is_quoted():
    state = final_state(STATE, with_store_rows=False)
    state["store_rows_unreadable"] = (
        "the coordinator keeps no slot_assignments table in Postgres"
    )

    verdict = stores_agree.check(registered().build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="unknown",
        reason=(
            "The final state has no store_rows, so the stores were not compared: "
            "the coordinator keeps no slot_assignments table in Postgres."
        ),
    )


def test_missing_final_state_unknown():
    verdict = stores_agree.check(registered().build(), None)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="unknown",
        reason="The final state is missing, so the stores were not compared.",
    )


def test_batch_absent_from_final_state_unknown():
    state = final_state(store_rows={"b-1": {"s-1": "c-1"}})

    verdict = stores_agree.check(registered().build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="unknown",
        reason=(
            "Postgres rows were not compared for batch b-1, absent from the final "
            "state."
        ),
    )
