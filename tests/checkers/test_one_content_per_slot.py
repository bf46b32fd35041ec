from harness.checkers import one_content_per_slot
from harness.checkers.verdict import Verdict
from tests.checkers.builders import HistoryBuilder, batch_state, final_state

INVARIANT = "one-content-per-slot"


def test_distinct_slots_valid():
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2", "s-3"])
    h.content("b-1", "c-1", "s-1")
    h.content("b-1", "c-2", "s-2")
    h.content("b-1", "c-2", "s-2", created=False)
    h.failure("b-1", "f-1", "s-3")
    state = final_state(
        batch_state(
            "b-1", assignments={"s-1": "c-1", "s-2": "c-2"}, failures={"s-3": "f-1"}
        )
    )

    verdict = one_content_per_slot.check(h.build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="valid",
        reason=(
            "4 ok replies and the final state give every slot at most one content "
            "or failure."
        ),
    )


def test_two_contents_one_slot_invalid():
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    first = h.content("b-1", "c-1", "s-1")
    second = h.content("b-1", "c-2", "s-1")
    state = final_state(batch_state("b-1", ["s-2"], {"s-1": "c-2"}))

    verdict = one_content_per_slot.check(h.build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="invalid",
        reason="Slot s-1 of batch b-1 was given to content c-1 and content c-2.",
        cause="coordinator",
        evidence=[first.to_json(), second.to_json()],
    )


def test_content_and_failure_share_slot_invalid():
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    first = h.content("b-1", "c-1", "s-1")
    second = h.failure("b-1", "f-1", "s-1")

    verdict = one_content_per_slot.check(h.build(), None)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="invalid",
        reason=(
            "Slot s-1 of batch b-1 was given to content c-1 and failure f-1. The "
            "final state is missing, so only the replies were checked."
        ),
        cause="coordinator",
        evidence=[first.to_json(), second.to_json()],
    )


def test_slot_assigned_and_failed_in_final_state_invalid():
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    h.content("b-1", "c-1", "s-1")
    state = final_state(
        batch_state(
            "b-1",
            ["s-2"],
            assignments={"s-1": "c-1"},
            failures={"s-1": "f-1"},
            capacity=2,
        )
    )

    verdict = one_content_per_slot.check(h.build(), state)

    fact = (
        "the final state has slot s-1 of batch b-1 both assigned to content c-1 "
        "and taken by failure f-1"
    )
    assert verdict == Verdict(
        invariant=INVARIANT,
        status="invalid",
        reason=fact[0].upper() + fact[1:] + ".",
        cause="coordinator",
        evidence=[
            {
                "fact": fact,
                "batch_id": "b-1",
                "slot_id": "s-1",
                "text_storage_id": "c-1",
                "failure_id": "f-1",
            }
        ],
    )


def test_same_slot_in_two_batches_valid():
    h = HistoryBuilder()
    h.content("b-1", "c-1", "s-1")
    h.content("b-2", "c-2", "s-1")
    state = final_state(
        batch_state("b-1", assignments={"s-1": "c-1"}),
        batch_state("b-2", assignments={"s-1": "c-2"}),
    )

    verdict = one_content_per_slot.check(h.build(), state)

    assert verdict.status == "valid"


def test_missing_final_state_unknown():
    h = HistoryBuilder()
    h.content("b-1", "c-1", "s-1")

    verdict = one_content_per_slot.check(h.build(), None)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="unknown",
        reason="The final state is missing, so only the replies were checked.",
    )


def test_unknown_outcome_never_conflicts():
    # c-2's request timed out, and the final state shows it took s-2. The
    # index must not guess a slot for it from the info reply.
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    h.content("b-1", "c-1", "s-1")
    h.content("b-1", "c-2", outcome="info")
    state = final_state(batch_state("b-1", assignments={"s-1": "c-1", "s-2": "c-2"}))

    verdict = one_content_per_slot.check(h.build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="valid",
        reason=(
            "1 ok reply and the final state give every slot at most one content or "
            "failure. Left out 1 content or failure operation with an unknown "
            "outcome (info), which may or may not have taken a slot."
        ),
    )


def test_volatile_restart_before_conflict_blames_environment():
    h = HistoryBuilder(persistence="volatile")
    h.register("b-1", ["s-1", "s-2"])
    first = h.content("b-1", "c-1", "s-1")
    h.nemesis("redis-restart", "start")
    h.nemesis("redis-restart", "end")
    h.register("b-1", ["s-1", "s-2"])
    second = h.content("b-1", "c-2", "s-1")

    verdict = one_content_per_slot.check(h.build(), None)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="invalid",
        reason=(
            "Slot s-1 of batch b-1 was given to content c-1 and content c-2. Redis "
            "restarted without persistence at operation 4, before every violation, "
            "so the environment lost the data. The final state is missing, so only "
            "the replies were checked."
        ),
        cause="environment",
        evidence=[first.to_json(), second.to_json()],
    )


def test_restart_with_persistence_blames_coordinator():
    h = HistoryBuilder(persistence="aof")
    h.content("b-1", "c-1", "s-1")
    h.nemesis("redis-restart", "start")
    h.content("b-1", "c-2", "s-1")

    verdict = one_content_per_slot.check(h.build(), None)

    assert verdict.status == "invalid"
    assert verdict.cause == "coordinator"


def test_conflict_before_volatile_restart_blames_coordinator():
    h = HistoryBuilder(persistence="volatile")
    h.content("b-1", "c-1", "s-1")
    h.content("b-1", "c-2", "s-1")
    h.nemesis("redis-restart", "start")
    h.content("b-1", "c-3", "s-1")

    verdict = one_content_per_slot.check(h.build(), None)

    assert verdict.status == "invalid"
    assert verdict.cause == "coordinator"
    assert "Redis restarted" not in verdict.reason


def test_many_conflicts_are_capped():
    h = HistoryBuilder()
    replies = [h.content("b-1", f"c-{n}", "s-1") for n in range(1, 10)]

    verdict = one_content_per_slot.check(h.build(), None)

    quoted = " ".join(
        f"Slot s-1 of batch b-1 was given to content c-1 and content c-{n}."
        for n in range(2, 7)
    )
    assert verdict.reason == (
        f"{quoted} 3 more violations not quoted. The final state is missing, so "
        "only the replies were checked."
    )
    assert verdict.evidence == [reply.to_json() for reply in replies[:8]]
