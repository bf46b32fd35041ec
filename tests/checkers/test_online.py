from harness.checkers import OnlineChecker, check_all
from harness.history import Operation
from tests.checkers.builders import HistoryBuilder


def ok(index: int, batch: str, content: str, slot: str) -> Operation:
    value = {"batch_id": batch, "text_storage_id": content, "slot_id": slot}
    return Operation(index, index, index, "ok", "content", value)


def test_two_slots_for_one_content_reported_once():
    checker = OnlineChecker()

    first = checker.observe(ok(0, "b-1", "c-1", "s-1"))
    replay = checker.observe(ok(1, "b-1", "c-1", "s-1"))
    second = checker.observe(ok(2, "b-1", "c-1", "s-2"))
    again = checker.observe(ok(3, "b-1", "c-1", "s-2"))

    assert first == []
    assert replay == []
    assert second == [
        "one-slot-per-content: content c-1 of batch b-1 got slots s-1 and s-2"
    ]
    assert again == []
    assert checker.violations == {"one-slot-per-content": 1, "one-content-per-slot": 0}


def test_two_contents_for_one_slot_reported():
    checker = OnlineChecker()

    checker.observe(ok(0, "b-1", "c-1", "s-1"))
    found = checker.observe(ok(1, "b-1", "c-2", "s-1"))

    assert found == [
        "one-content-per-slot: slot s-1 of batch b-1 was given to content c-1 and "
        "content c-2"
    ]
    assert checker.violations == {"one-slot-per-content": 0, "one-content-per-slot": 1}


def test_one_reply_can_break_both():
    checker = OnlineChecker()
    checker.observe(ok(0, "b-1", "c-1", "s-1"))
    checker.observe(ok(1, "b-1", "c-2", "s-2"))

    found = checker.observe(ok(2, "b-1", "c-1", "s-2"))

    assert found == [
        "one-slot-per-content: content c-1 of batch b-1 got slots s-1 and s-2",
        "one-content-per-slot: slot s-2 of batch b-1 was given to content c-2 and "
        "content c-1",
    ]
    assert checker.violations == {"one-slot-per-content": 1, "one-content-per-slot": 1}


def test_invocation_fills_missing_reply_fields():
    checker = OnlineChecker()
    invoke = {"batch_id": "b-1", "text_storage_id": "c-1"}
    checker.observe(Operation(0, 0, 7, "invoke", "content", invoke))
    checker.observe(Operation(1, 1, 7, "ok", "content", {"slot_id": "s-1"}))

    found = checker.observe(ok(2, "b-1", "c-1", "s-2"))

    assert found == [
        "one-slot-per-content: content c-1 of batch b-1 got slots s-1 and s-2"
    ]


def test_refusals_timeouts_and_faults_ignored():
    checker = OnlineChecker()
    fail = {"batch_id": "b-1", "text_storage_id": "c-1", "error": "no_slot"}
    info = {"batch_id": "b-1", "text_storage_id": "c-2", "error": "timeout"}

    results = [
        checker.observe(Operation(0, 0, 1, "fail", "content", fail)),
        checker.observe(Operation(1, 1, 2, "info", "content", info)),
        checker.observe(Operation(2, 2, -1, "nemesis", "kill", {"phase": "start"})),
        checker.observe(ok(3, "b-1", "c-3", "s-1")),
    ]

    assert results == [[], [], [], []]
    assert checker.violations == {"one-slot-per-content": 0, "one-content-per-slot": 0}


def test_online_agrees_with_offline_checkers():
    h = HistoryBuilder()
    h.content("b-1", "c-1", "s-1")
    h.content("b-1", "c-2", "s-1")
    h.failure("b-1", "f-1", "s-2")
    h.failure("b-1", "f-1", "s-3")
    history = h.build()
    checker = OnlineChecker()

    online = [text for op in history.operations for text in checker.observe(op)]
    verdicts = {v.invariant: v for v in check_all(history, None)}

    assert online == [
        "one-content-per-slot: slot s-1 of batch b-1 was given to content c-1 and "
        "content c-2",
        "one-slot-per-content: failure f-1 of batch b-1 got slots s-2 and s-3",
    ]
    assert verdicts["one-content-per-slot"].reason.startswith(
        "Slot s-1 of batch b-1 was given to content c-1 and content c-2."
    )
    assert verdicts["one-slot-per-content"].reason.startswith(
        "Failure f-1 of batch b-1 got slots s-2 and s-3."
    )
