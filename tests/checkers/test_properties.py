"""Property tests: runs of a correct sequential model always check valid."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from harness.checkers import INVARIANTS, OnlineChecker, check_all, no_lost_slot
from tests.checkers.builders import HistoryBuilder, batch_state, final_state

# Ways a request can end: applied with a reply, or timed out after or before
# it took effect (the reply is info either way).
DELIVERIES = ("reply", "info-applied", "info-lost")


@dataclass
class ModelBatch:
    """A batch of the sequential model that the reference coordinator implements."""

    batch_id: str
    available: list[str]
    assignments: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def take(self, kind: str, item_id: str, pick: int) -> tuple[str | None, bool]:
        """Return (slot, created) for the item, or (None, False) when full."""
        holders = self.assignments if kind == "content" else self.failures
        for slot_id, holder in holders.items():
            if holder == item_id:
                return slot_id, False
        if not self.available:
            return None, False
        slot_id = self.available.pop(pick % len(self.available))
        holders[slot_id] = item_id
        return slot_id, True


@dataclass
class CorrectRun:
    builder: HistoryBuilder
    batches: dict[str, ModelBatch]
    completions: list[dict[str, Any]]

    def final_state(self) -> dict[str, Any]:
        states = [
            batch_state(b.batch_id, b.available, b.assignments, b.failures)
            for b in self.batches.values()
        ]
        return final_state(*states, completions=self.completions)


def send(
    run: CorrectRun, batch_id: str, kind: str, item_id: str, pick: int, delivery: str
):
    batch = run.batches[batch_id]
    was_full = not batch.available
    if delivery == "info-lost":
        slot_id, created = None, False
    else:
        slot_id, created = batch.take(kind, item_id, pick)
    if not was_full and not batch.available:
        run.completions.append(
            {
                "batch_id": batch_id,
                "assignments": dict(batch.assignments),
                "failures": dict(batch.failures),
            }
        )

    if delivery != "reply":
        outcome = "info"
    elif slot_id is None:
        outcome = "fail"
    else:
        outcome = "ok"
    if kind == "content":
        run.builder.content(batch_id, item_id, slot_id, outcome, created)
    else:
        run.builder.failure(batch_id, item_id, slot_id, outcome)


@st.composite
def correct_runs(draw: st.DrawFn) -> CorrectRun:
    builder = HistoryBuilder(persistence=draw(st.sampled_from(["aof", "volatile"])))
    # The timeouts of the model come from a lossy network that lasts the
    # whole run; a correct coordinator may time out there (no-hang excuses it).
    builder.nemesis("packet-loss", "start", ["i-1"])
    batches = {}
    for number in range(draw(st.integers(1, 3))):
        batch_id = f"b-{number}"
        slot_ids = [f"s-{n}" for n in range(draw(st.integers(1, 4)))]
        builder.register(batch_id, slot_ids)
        batches[batch_id] = ModelBatch(batch_id, list(slot_ids))
    run = CorrectRun(builder, batches, [])

    events = draw(
        st.lists(
            st.tuples(
                st.sampled_from(sorted(batches)),
                st.sampled_from(["content", "failure"]),
                st.integers(0, 5),
                st.integers(0, 3),
                st.sampled_from(DELIVERIES),
                st.booleans(),
            ),
            min_size=1,
            max_size=30,
        )
    )
    unknown = []
    for batch_id, kind, number, pick, delivery, fault in events:
        item_id = f"{kind[0]}-{number}"
        if fault:
            builder.nemesis("kill", "start", ["i-1"])
        send(run, batch_id, kind, item_id, pick, delivery)
        if delivery != "reply":
            unknown.append((batch_id, kind, item_id, pick))

    # Redelivery: an at-least-once broker resends every event whose outcome
    # was unknown, and now it gets a reply.
    for batch_id, kind, item_id, pick in unknown:
        send(run, batch_id, kind, item_id, pick, "reply")
    return run


@settings(max_examples=150, deadline=None)
@given(correct_runs())
def test_correct_model_runs_are_valid(run):
    history = run.builder.build()

    verdicts = check_all(history, run.final_state())

    assert {v.invariant: v.status for v in verdicts} == dict.fromkeys(
        INVARIANTS, "valid"
    )


@settings(max_examples=100, deadline=None)
@given(correct_runs())
def test_correct_model_runs_raise_no_online_violation(run):
    checker = OnlineChecker()

    found = [text for op in run.builder.operations for text in checker.observe(op)]

    assert found == []
    assert checker.violations == {"one-slot-per-content": 0, "one-content-per-slot": 0}


@settings(max_examples=100, deadline=None)
@given(correct_runs(), st.integers(0, 100))
def test_dropped_acknowledged_assignment_is_lost_slot(run, choice):
    acknowledged = [
        (op.value["batch_id"], op.value["slot_id"])
        for op in run.builder.operations
        if op.type == "ok" and op.f == "content"
    ]
    assume(acknowledged)
    batch_id, slot_id = acknowledged[choice % len(acknowledged)]
    state = run.final_state()
    # Lose the assignment the way pop-then-record does: slot gone from both sets.
    del state["batches"][batch_id]["assignments"][slot_id]

    verdict = no_lost_slot.check(run.builder.build(), state)

    assert verdict.status == "invalid"
    assert verdict.cause == "coordinator"
