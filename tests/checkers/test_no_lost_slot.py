import pytest

from harness.checkers import no_lost_slot
from harness.checkers.verdict import Verdict
from tests.checkers.builders import HistoryBuilder, batch_state, final_state

INVARIANT = "no-lost-slot"


def registered_history() -> HistoryBuilder:
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2", "s-3"])
    return h


def fact_verdict(*evidence: dict) -> Verdict:
    """Return the invalid verdict whose reason quotes each fact of the evidence."""
    facts = [item["fact"] for item in evidence if "fact" in item]
    return Verdict(
        invariant=INVARIANT,
        status="invalid",
        reason=" ".join(fact[0].upper() + fact[1:] + "." for fact in facts),
        cause="coordinator",
        evidence=list(evidence),
    )


def test_every_slot_accounted_valid():
    h = registered_history()
    h.content("b-1", "c-1", "s-1")
    h.failure("b-1", "f-1", "s-2")
    state = final_state(
        batch_state("b-1", ["s-3"], {"s-1": "c-1"}, failures={"s-2": "f-1"})
    )

    verdict = no_lost_slot.check(h.build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="valid",
        reason=(
            "Every slot of 1 batch is available, assigned or failed exactly once, "
            "and the final state contains every acknowledged slot (2 ok replies)."
        ),
    )


def test_missing_slot_invalid():
    h = registered_history()
    state = final_state(batch_state("b-1", ["s-1"], {"s-2": "c-9"}, capacity=3))

    verdict = no_lost_slot.check(h.build(), state)

    assert verdict == fact_verdict(
        {
            "fact": "batch b-1 lost slot s-3: the final state shows it neither "
            "available, assigned nor failed",
            "batch_id": "b-1",
            "slot_id": "s-3",
        }
    )


def test_two_missing_slots_named_together():
    h = registered_history()
    state = final_state(batch_state("b-1", ["s-1"], capacity=3))

    verdict = no_lost_slot.check(h.build(), state)

    assert verdict == fact_verdict(
        {
            "fact": "batch b-1 lost slots s-2 and s-3: the final state shows them "
            "neither available, assigned nor failed",
            "batch_id": "b-1",
            "slot_ids": ["s-2", "s-3"],
        }
    )


def test_many_lost_slots_name_ten():
    h = HistoryBuilder()
    slots = [f"s-{n}" for n in range(1, 13)]
    h.register("b-1", slots)
    state = final_state(batch_state("b-1", capacity=12))

    verdict = no_lost_slot.check(h.build(), state)

    assert verdict == fact_verdict(
        {
            "fact": "batch b-1 lost slots s-1, s-2, s-3, s-4, s-5 and 7 more: the "
            "final state shows them neither available, assigned nor failed",
            "batch_id": "b-1",
            "slot_ids": slots[:10],
        }
    )


def test_slot_available_and_assigned_invalid():
    h = registered_history()
    state = final_state(batch_state("b-1", ["s-1", "s-2", "s-3"], {"s-1": "c-1"}))

    verdict = no_lost_slot.check(h.build(), state)

    assert verdict == fact_verdict(
        {
            "fact": "slot s-1 of batch b-1 is counted more than once: available "
            "and assigned to content c-1",
            "batch_id": "b-1",
            "slot_id": "s-1",
            "text_storage_id": "c-1",
        },
        {
            "fact": "batch b-1 reports capacity 4 but was registered with 3 slots",
            "batch_id": "b-1",
        },
    )


def test_slot_listed_twice_as_available_invalid():
    h = registered_history()
    state = final_state(batch_state("b-1", ["s-1", "s-1", "s-2", "s-3"], capacity=3))

    verdict = no_lost_slot.check(h.build(), state)

    assert verdict == fact_verdict(
        {
            "fact": "slot s-1 of batch b-1 is counted more than once: available 2 "
            "times",
            "batch_id": "b-1",
            "slot_id": "s-1",
        }
    )


def test_unregistered_slot_invalid():
    h = registered_history()
    state = final_state(batch_state("b-1", ["s-1", "s-2", "s-3", "s-9"], capacity=3))

    verdict = no_lost_slot.check(h.build(), state)

    assert verdict == fact_verdict(
        {
            "fact": "batch b-1 holds unregistered slot s-9 in the final state",
            "batch_id": "b-1",
            "slot_id": "s-9",
        }
    )


def test_acknowledged_content_missing_invalid():
    h = registered_history()
    reply = h.content("b-1", "c-1", "s-1")
    state = final_state(batch_state("b-1", ["s-1", "s-2", "s-3"]))

    verdict = no_lost_slot.check(h.build(), state)

    fact = {
        "fact": "content c-1 of batch b-1 was acknowledged with slot s-1, but in "
        "the final state that slot is available",
        "batch_id": "b-1",
        "slot_id": "s-1",
        "text_storage_id": "c-1",
    }
    assert verdict == fact_verdict(reply.to_json(), fact)


def test_acknowledged_failure_replaced_invalid():
    h = registered_history()
    reply = h.failure("b-1", "f-1", "s-2")
    state = final_state(batch_state("b-1", ["s-1", "s-3"], {"s-2": "c-4"}))

    verdict = no_lost_slot.check(h.build(), state)

    fact = {
        "fact": "failure f-1 of batch b-1 was acknowledged with slot s-2, but in "
        "the final state that slot is assigned to content c-4",
        "batch_id": "b-1",
        "slot_id": "s-2",
        "failure_id": "f-1",
    }
    assert verdict == fact_verdict(reply.to_json(), fact)


@pytest.mark.parametrize(
    "assignments",
    [{"s-1": "c-1", "s-2": "c-2"}, {"s-1": "c-1"}],
    ids=["applied", "not-applied"],
)
def test_unknown_outcome_alone_keeps_valid(assignments):
    # A timed-out request may or may not have taken a slot, and both final
    # states are correct: the slot is then assigned or still available.
    h = registered_history()
    h.content("b-1", "c-1", "s-1")
    h.content("b-1", "c-2", outcome="info")
    available = [s for s in ("s-1", "s-2", "s-3") if s not in assignments]
    state = final_state(batch_state("b-1", available, assignments))

    verdict = no_lost_slot.check(h.build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="valid",
        reason=(
            "Every slot of 1 batch is available, assigned or failed exactly once, "
            "and the final state contains every acknowledged slot (1 ok reply). "
            "Left out 1 content or failure operation with an unknown outcome "
            "(info), which may or may not have taken a slot."
        ),
    )


def test_missing_final_state_unknown():
    h = registered_history()
    h.content("b-1", "c-1", "s-1")

    verdict = no_lost_slot.check(h.build(), None)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="unknown",
        reason=(
            "The final state is missing, so slot conservation and acknowledged "
            "replies could not be checked."
        ),
    )


def test_batch_absent_from_final_state_unknown():
    h = registered_history()
    h.register("b-2", ["s-1"])
    state = final_state(batch_state("b-1", ["s-1", "s-2", "s-3"]))

    verdict = no_lost_slot.check(h.build(), state)

    assert verdict == Verdict(
        invariant=INVARIANT,
        status="unknown",
        reason="Slots were not checked for batch b-2, absent from the final state.",
    )


def test_unregistered_batch_checked_by_count():
    # The history lost the registration, so only the capacity is known.
    h = HistoryBuilder()
    state = final_state(batch_state("b-1", ["s-1"], {"s-2": "c-1"}, capacity=3))

    verdict = no_lost_slot.check(h.build(), state)

    assert verdict == fact_verdict(
        {
            "fact": "batch b-1 has capacity 3 but its available, assigned and "
            "failed slots count 2",
            "batch_id": "b-1",
        }
    )


def test_volatile_restart_loss_blames_environment():
    h = HistoryBuilder(persistence="volatile")
    h.register("b-1", ["s-1", "s-2"])
    reply = h.content("b-1", "c-1", "s-1")
    h.nemesis("redis-restart", "start", ["redis"])
    h.nemesis("redis-restart", "end", ["redis"])
    state = final_state(batch_state("b-1", ["s-1", "s-2"]))

    verdict = no_lost_slot.check(h.build(), state)

    fact = (
        "content c-1 of batch b-1 was acknowledged with slot s-1, but in the final "
        "state that slot is available"
    )
    assert verdict == Verdict(
        invariant=INVARIANT,
        status="invalid",
        reason=(
            "Content c-1 of batch b-1 was acknowledged with slot s-1, but in the "
            "final state that slot is available. Redis restarted without "
            "persistence at operation 4, before every violation, so the "
            "environment lost the data."
        ),
        cause="environment",
        evidence=[
            reply.to_json(),
            {
                "fact": fact,
                "batch_id": "b-1",
                "slot_id": "s-1",
                "text_storage_id": "c-1",
            },
        ],
    )
