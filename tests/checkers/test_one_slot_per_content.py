from harness.checkers import one_slot_per_content
from harness.checkers.verdict import Verdict
from tests.checkers.builders import HistoryBuilder, batch_state, final_state

INVARIANT = "one-slot-per-content"


def test_replayed_content_same_slot_valid():
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    h.content("b-1", "c-1", "s-1")
    h.content("b-1", "c-1", "s-1", created=False)
    h.failure("b-1", "f-1", "s-2")
    state = final_state(
        batch_state("b-1", assignments={"s-1": "c-1"}, failures={"s-2": "f-1"})
    )

    verdict = one_slot_per_content.check(h.build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="valid",
        reason=(
            "3 ok replies and the final state give every content and failure id "
            "one slot."
        ),
    )


def test_content_given_two_slots_invalid():
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    first = h.content("b-1", "c-1", "s-1")
    second = h.content("b-1", "c-1", "s-2")
    state = final_state(batch_state("b-1", ["s-2"], {"s-1": "c-1"}))

    verdict = one_slot_per_content.check(h.build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="invalid",
        reason="Content c-1 of batch b-1 got slots s-1 and s-2.",
        cause="coordinator",
        evidence=[first.to_json(), second.to_json()],
    )


def test_reply_conflict_invalid_without_final_state():
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2", "s-3"])
    first = h.content("b-1", "c-1", "s-1")
    h.content("b-1", "c-1", "s-1", created=False)
    second = h.content("b-1", "c-1", "s-3")

    verdict = one_slot_per_content.check(h.build(), None)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="invalid",
        reason=(
            "Content c-1 of batch b-1 got slots s-1 and s-3. The final state is "
            "missing, so only the replies were checked."
        ),
        cause="coordinator",
        evidence=[first.to_json(), second.to_json()],
    )


def test_each_further_slot_is_one_violation():
    h = HistoryBuilder()
    first = h.content("b-1", "c-1", "s-1")
    second = h.content("b-1", "c-1", "s-2")
    third = h.content("b-1", "c-1", "s-3")

    verdict = one_slot_per_content.check(h.build(), None)

    assert verdict.status == "invalid"
    assert verdict.reason.startswith(
        "Content c-1 of batch b-1 got slots s-1 and s-2. "
        "Content c-1 of batch b-1 got slots s-1 and s-3. "
    )
    assert verdict.evidence == [first.to_json(), second.to_json(), third.to_json()]


def test_failure_id_given_two_slots_invalid():
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    first = h.failure("b-1", "f-1", "s-1")
    second = h.failure("b-1", "f-1", "s-2")
    state = final_state(batch_state("b-1", failures={"s-1": "f-1", "s-2": "f-1"}))

    verdict = one_slot_per_content.check(h.build(), state)

    fact = "the final state holds failure f-1 of batch b-1 in slots s-1 and s-2"
    assert verdict == Verdict(
        invariant=INVARIANT,
        status="invalid",
        reason=(
            "Failure f-1 of batch b-1 got slots s-1 and s-2. The final state holds "
            "failure f-1 of batch b-1 in slots s-1 and s-2."
        ),
        cause="coordinator",
        evidence=[
            first.to_json(),
            second.to_json(),
            {
                "fact": fact,
                "batch_id": "b-1",
                "slot_ids": ["s-1", "s-2"],
                "failure_id": "f-1",
            },
        ],
    )


def test_final_state_two_slots_invalid():
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    h.content("b-1", "c-1", "s-1")
    state = final_state(batch_state("b-1", assignments={"s-1": "c-1", "s-2": "c-1"}))

    verdict = one_slot_per_content.check(h.build(), state)

    fact = "the final state holds content c-1 of batch b-1 in slots s-1 and s-2"
    assert verdict == Verdict(
        invariant=INVARIANT,
        status="invalid",
        reason="The final state holds content c-1 of batch b-1 in slots s-1 and s-2.",
        cause="coordinator",
        evidence=[
            {
                "fact": fact,
                "batch_id": "b-1",
                "slot_ids": ["s-1", "s-2"],
                "text_storage_id": "c-1",
            }
        ],
    )


def test_missing_final_state_unknown():
    h = HistoryBuilder()
    h.register("b-1", ["s-1"])
    h.content("b-1", "c-1", "s-1")

    verdict = one_slot_per_content.check(h.build(), None)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="unknown",
        reason="The final state is missing, so only the replies were checked.",
    )


def test_batch_absent_from_final_state_unknown():
    h = HistoryBuilder()
    h.register("b-1", ["s-1"])
    h.register("b-2", ["s-1"])
    h.content("b-1", "c-1", "s-1")
    h.content("b-2", "c-1", "s-1")
    state = final_state(batch_state("b-1", assignments={"s-1": "c-1"}))

    verdict = one_slot_per_content.check(h.build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="unknown",
        reason=(
            "Only the replies were checked for batch b-2, absent from the final state."
        ),
    )


def test_unknown_outcome_is_left_out_and_said():
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    h.content("b-1", "c-1", "s-1")
    h.content("b-1", "c-2", outcome="info")
    state = final_state(batch_state("b-1", assignments={"s-1": "c-1", "s-2": "c-2"}))

    verdict = one_slot_per_content.check(h.build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="valid",
        reason=(
            "1 ok reply and the final state give every content and failure id one "
            "slot. Left out 1 content or failure operation with an unknown outcome "
            "(info), which may or may not have taken a slot."
        ),
    )


def test_same_content_in_two_batches_valid():
    h = HistoryBuilder()
    h.content("b-1", "c-1", "s-1")
    h.content("b-2", "c-1", "s-2")
    state = final_state(
        batch_state("b-1", assignments={"s-1": "c-1"}),
        batch_state("b-2", assignments={"s-2": "c-1"}),
    )

    verdict = one_slot_per_content.check(h.build(), state)

    assert verdict.status == "valid"


def test_ok_reply_without_slot_is_skipped_and_said():
    h = HistoryBuilder()
    h.content("b-1", "c-1", None)
    state = final_state(batch_state("b-1", ["s-1"]))

    verdict = one_slot_per_content.check(h.build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="valid",
        reason=(
            "0 ok replies and the final state give every content and failure id one "
            "slot. Skipped 1 ok reply without a batch, item or slot id."
        ),
    )


def test_torn_lines_are_named_in_reason():
    h = HistoryBuilder()
    h.content("b-1", "c-1", "s-1")
    state = final_state(batch_state("b-1", assignments={"s-1": "c-1"}))

    verdict = one_slot_per_content.check(h.build(torn_lines=[4]), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="valid",
        reason=(
            "1 ok reply and the final state give every content and failure id one "
            "slot. History has 1 torn line."
        ),
    )


def test_content_refused_while_a_copy_holds_a_slot_invalid():
    # A unique violation from a copy that committed first, reported as
    # "no slot": the sender drops a content the batch went on to count.
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    taken = h.content("b-1", "c-1", "s-1")
    refused = h.content("b-1", "c-1", outcome="fail")
    state = final_state(batch_state("b-1", ["s-2"], {"s-1": "c-1"}))

    verdict = one_slot_per_content.check(h.build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="invalid",
        reason=(
            "Content c-1 of batch b-1 was refused as no_slot by i-1 (operation 5) "
            "but holds slot s-1 in an ok reply (operation 3)."
        ),
        cause="coordinator",
        evidence=[refused.to_json(), taken.to_json()],
    )


def test_refused_content_holding_slot_only_in_final_state_invalid():
    h = HistoryBuilder()
    h.register("b-1", ["s-1"])
    h.content("b-1", "c-1", outcome="info")
    h.content("b-1", "c-1", outcome="fail")
    state = final_state(batch_state("b-1", [], {"s-1": "c-1"}))

    verdict = one_slot_per_content.check(h.build(), state)

    assert verdict.status == "invalid"
    assert verdict.reason.startswith(
        "Content c-1 of batch b-1 was refused as no_slot by i-1 (operation 5) but "
        "holds slot s-1 in the final state."
    )


def test_refused_content_of_a_full_batch_valid():
    h = HistoryBuilder()
    h.register("b-1", ["s-1"])
    h.content("b-1", "c-1", "s-1")
    h.content("b-1", "c-2", outcome="fail")
    state = final_state(batch_state("b-1", [], {"s-1": "c-1"}))

    verdict = one_slot_per_content.check(h.build(), state)

    assert verdict.status == "valid"
