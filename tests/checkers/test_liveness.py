from harness.checkers import liveness
from harness.checkers.verdict import Verdict
from tests.checkers.builders import HistoryBuilder, batch_state, final_state

INVARIANT = "liveness"


def test_reached_batch_complete_valid():
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    h.content("b-1", "c-1", "s-1")
    h.failure("b-1", "f-1", "s-2")
    h.content("b-1", "c-2", outcome="fail")
    state = final_state(batch_state("b-1", [], {"s-1": "c-1"}, {"s-2": "f-1"}))

    verdict = liveness.check(h.build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="valid",
        reason=(
            "Every reached batch is complete (1 batch), and every operation completed."
        ),
    )


def test_reached_batch_incomplete_invalid():
    # The bug of an aborted transaction read as a full batch: every content
    # is refused while slots vanish.
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    h.content("b-1", "c-1", outcome="fail")
    h.content("b-1", "c-2", outcome="fail")
    h.content("b-1", "c-3", outcome="fail")
    state = final_state(batch_state("b-1", ["s-2"], capacity=2))

    verdict = liveness.check(h.build(), state)

    fact = (
        "batch b-1 is not complete (0 assigned + 0 failed of 2, 1 available), "
        "although 3 contents and "
        "0 failure ids were sent for its 2 slots"
    )
    assert verdict == Verdict(
        invariant=INVARIANT,
        status="invalid",
        reason=fact[0].upper() + fact[1:] + ".",
        cause="coordinator",
        evidence=[{"fact": fact, "batch_id": "b-1"}],
    )


def test_unreached_batch_may_stay_open():
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2", "s-3"])
    h.content("b-1", "c-1", "s-1")
    h.content("b-1", "c-1", "s-1", created=False)
    h.content("b-1", "c-2", "s-2")
    state = final_state(batch_state("b-1", ["s-3"], {"s-1": "c-1", "s-2": "c-2"}))

    verdict = liveness.check(h.build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="valid",
        reason=(
            "Every reached batch is complete (0 batches), and every operation "
            "completed."
        ),
    )


def test_unknown_outcome_counts_toward_reached():
    # The redelivery phase resends c-2, so the batch must fill even though
    # the first attempt timed out.
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    h.content("b-1", "c-1", "s-1")
    h.content("b-1", "c-2", outcome="info")
    state = final_state(batch_state("b-1", ["s-2"], {"s-1": "c-1"}))

    verdict = liveness.check(h.build(), state)

    fact = (
        "batch b-1 is not complete (1 assigned + 0 failed of 2, 1 available), "
        "although 2 contents and "
        "0 failure ids were sent for its 2 slots"
    )
    assert verdict == Verdict(
        invariant=INVARIANT,
        status="invalid",
        reason=(
            fact[0].upper() + fact[1:] + ". Reached batches count every invoked "
            "event, including 1 operation with an unknown outcome (info)."
        ),
        cause="coordinator",
        evidence=[{"fact": fact, "batch_id": "b-1"}],
    )


def test_operation_without_completion_unknown():
    # The client times out every request, so an open invocation means the
    # history was cut short, not that the coordinator hung.
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    h.content("b-1", "c-1", outcome=None)
    state = final_state(batch_state("b-1", ["s-1", "s-2"]))

    verdict = liveness.check(h.build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="unknown",
        reason=(
            "1 operation never completed (the first is operation 2, content by "
            "process 1), so the history was cut short."
        ),
    )


def test_many_unfinished_operations_are_counted():
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2", "s-3", "s-4", "s-5", "s-6"])
    for n in range(1, 6):
        h.content("b-1", f"c-{n}", outcome=None)
    state = final_state(batch_state("b-1", ["s-1", "s-2", "s-3", "s-4", "s-5", "s-6"]))

    verdict = liveness.check(h.build(), state)

    assert verdict.status == "unknown"
    assert verdict.reason.startswith("5 operations never completed (the first is ")


def test_unfinished_operation_with_torn_lines_unknown():
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    h.content("b-1", "c-1", outcome=None)
    state = final_state(batch_state("b-1", ["s-1", "s-2"]))

    verdict = liveness.check(h.build(torn_lines=[5]), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="unknown",
        reason=(
            "1 operation never completed (the first is operation 2, content by "
            "process 1), so the history was cut short, and the torn lines may have "
            "held their completions. History has 1 torn line."
        ),
    )


def test_missing_final_state_unknown():
    h = HistoryBuilder()
    h.register("b-1", ["s-1"])
    h.content("b-1", "c-1", outcome=None)

    verdict = liveness.check(h.build(), None)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="unknown",
        reason=(
            "The final state is missing, so completion of reached batches could not "
            "be checked. 1 operation never completed, which a harness killed "
            "before the final read also leaves."
        ),
    )


def test_reached_batch_absent_from_final_state_unknown():
    h = HistoryBuilder()
    h.register("b-1", ["s-1"])
    h.content("b-1", "c-1", "s-1")
    state = final_state()

    verdict = liveness.check(h.build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="unknown",
        reason=(
            "Completion was not checked for batch b-1, absent from the final state."
        ),
    )


def test_batch_without_registration_or_state_unknown():
    h = HistoryBuilder()
    h.content("b-1", "c-1", "s-1")

    verdict = liveness.check(h.build(), final_state())

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="unknown",
        reason=(
            "Completion was not checked for batch b-1, absent from the final state."
        ),
    )
