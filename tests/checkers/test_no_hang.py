import dataclasses

from harness.checkers import no_hang
from harness.history import History
from tests.checkers.builders import HistoryBuilder

INVARIANT = "no-hang"


def one_second_apart(history: History) -> History:
    """Spaces the operations one second apart, so grace periods can be tested."""
    operations = [
        dataclasses.replace(op, time_ns=op.index * 1_000_000_000)
        for op in history.operations
    ]
    return dataclasses.replace(history, operations=operations)


def test_timeout_without_fault_invalid():
    h = HistoryBuilder()
    h.register("b-1", ["s-1"])
    h.content("b-1", "c-1", outcome="info")

    verdict = no_hang.check(one_second_apart(h.build()), None)

    assert verdict.status == "invalid"
    assert verdict.cause == "coordinator"
    assert verdict.reason.startswith(
        "Content c-1 of batch b-1 sent to i-1 at 2.000 s had no reply after 1.0 s "
        "(operation 3), with no blocking fault in effect."
    )
    assert [e["index"] for e in verdict.evidence] == [2, 3]


def test_timeout_during_pause_excused():
    h = HistoryBuilder()
    h.register("b-1", ["s-1"])
    h.nemesis("pause", "start", ["i-1"])
    h.content("b-1", "c-1", outcome="info")
    h.nemesis("pause", "end", ["i-1"])

    verdict = no_hang.check(one_second_apart(h.build()), None)

    assert verdict.status == "valid"
    assert "1 timeout overlapped a fault" in verdict.reason


def test_timeout_during_watch_conflict_not_excused():
    # A WATCH conflict is answered by a correct coordinator with 503
    # contention; only one that retries forever stays silent.
    h = HistoryBuilder()
    h.register("b-1", ["s-1"])
    h.nemesis("watch-conflict", "start", ["redis-proxy"])
    h.content("b-1", "c-1", outcome="info")
    h.nemesis("watch-conflict", "end", ["redis-proxy"])

    verdict = no_hang.check(one_second_apart(h.build()), None)

    assert verdict.status == "invalid"


def test_timeout_long_after_fault_not_excused():
    h = HistoryBuilder()
    h.nemesis("kill", "start", ["i-1"])
    h.nemesis("kill", "end", ["i-1"])
    h.register("b-1", ["s-1"])
    h.register("b-2", ["s-1"])
    h.content("b-1", "c-1", outcome="info")

    verdict = no_hang.check(one_second_apart(h.build()), None)

    # c-1 is sent at 6 s, 5 s after the kill ended: past the 3 s grace.
    assert verdict.status == "invalid"


def test_timeout_just_after_fault_excused():
    h = HistoryBuilder()
    h.nemesis("redis-restart", "start", ["redis"])
    h.nemesis("redis-restart", "end", ["redis"])
    h.content("b-1", "c-1", outcome="info")

    verdict = no_hang.check(one_second_apart(h.build()), None)

    assert verdict.status == "valid"


def test_fault_with_no_end_excuses_to_the_end():
    h = HistoryBuilder()
    h.nemesis("partition", "start", ["i-1"])
    for number in range(5):
        h.register(f"b-{number}", ["s-1"])
    h.content("b-1", "c-1", outcome="info")

    verdict = no_hang.check(one_second_apart(h.build()), None)

    assert verdict.status == "valid"


def test_quick_503_is_not_a_hang():
    h = HistoryBuilder()
    h.register("b-1", ["s-1"])
    process = h.invoke("content", {"batch_id": "b-1", "text_storage_id": "c-1"})
    h.append(process, "info", "content", {"error": "contention"})

    verdict = no_hang.check(one_second_apart(h.build()), None)

    assert verdict.status == "valid"
    assert "0 timeouts in all" in verdict.reason


def test_unfinished_operation_unknown():
    h = HistoryBuilder()
    h.register("b-1", ["s-1"])
    h.content("b-1", "c-1", outcome=None)

    verdict = no_hang.check(one_second_apart(h.build()), None)

    assert verdict.status == "unknown"
    assert "1 operation never completed" in verdict.reason


def test_grace_is_one_client_timeout_when_longer():
    h = HistoryBuilder()
    h.header["scenario"]["request_timeout_s"] = 5
    h.nemesis("pause", "start", ["i-1"])
    h.nemesis("pause", "end", ["i-1"])
    h.register("b-1", ["s-1"])
    h.register("b-2", ["s-1"])
    h.content("b-1", "c-1", outcome="info")

    verdict = no_hang.check(one_second_apart(h.build()), None)

    # c-1 is sent at 6 s, 5 s after the pause ended: past the 3 s grace but
    # within the 5 s client timeout.
    assert verdict.status == "valid"
