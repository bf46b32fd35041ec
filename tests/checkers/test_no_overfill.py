from harness.checkers import no_overfill
from harness.checkers.verdict import Verdict
from tests.checkers.builders import HistoryBuilder, batch_state, final_state

INVARIANT = "no-overfill"


def test_full_batch_with_refusals_valid():
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    h.content("b-1", "c-1", "s-1")
    h.content("b-1", "c-1", "s-1", created=False)
    h.failure("b-1", "f-1", "s-2")
    h.content("b-1", "c-2", outcome="fail")

    verdict = no_overfill.check(h.build(), None)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="valid",
        reason=(
            "No batch acknowledged more contents and failures than its slots "
            "(1 batch checked)."
        ),
    )


def test_more_items_than_slots_invalid():
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    h.content("b-1", "c-1", "s-1")
    h.content("b-1", "c-2", "s-2")
    h.content("b-1", "c-1", "s-1", created=False)
    third = h.failure("b-1", "f-1", "s-2")

    verdict = no_overfill.check(h.build(), None)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="invalid",
        reason=(
            "Batch b-1 acknowledged 2 contents and 1 failure, more than its 2 slots."
        ),
        cause="coordinator",
        evidence=[third.to_json()],
    )


def test_unknown_outcomes_not_counted():
    # Three requests for two slots: the timed-out one may have been refused.
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    h.content("b-1", "c-1", "s-1")
    h.content("b-1", "c-2", "s-2")
    h.content("b-1", "c-3", outcome="info")

    verdict = no_overfill.check(h.build(), None)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="valid",
        reason=(
            "No batch acknowledged more contents and failures than its slots "
            "(1 batch checked). Left out 1 content or failure operation with an "
            "unknown outcome (info), which may or may not have taken a slot."
        ),
    )


def test_capacity_from_final_state_without_registration():
    h = HistoryBuilder()
    h.content("b-1", "c-1", "s-1")
    second = h.content("b-1", "c-2", "s-1")
    state = final_state(batch_state("b-1", assignments={"s-1": "c-2"}))

    verdict = no_overfill.check(h.build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="invalid",
        reason=(
            "Batch b-1 acknowledged 2 contents and 0 failures, more than its 1 slot."
        ),
        cause="coordinator",
        evidence=[second.to_json()],
    )


def test_unknown_capacity_unknown():
    h = HistoryBuilder()
    h.content("b-1", "c-1", "s-1")

    verdict = no_overfill.check(h.build(), None)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="unknown",
        reason=(
            "The capacity of batch b-1 is unknown because neither a registration "
            "nor the final state shows it."
        ),
    )


def test_refused_registration_not_used_for_capacity():
    # The 409 reply means the batch was registered with other slots, so this
    # slot list is not its capacity.
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"], outcome="fail")
    h.content("b-1", "c-1", "s-1")

    verdict = no_overfill.check(h.build(), None)

    assert verdict.status == "unknown"
