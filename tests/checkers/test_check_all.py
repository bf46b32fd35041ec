import json
import logging

import pytest

from harness.checkers import INVARIANTS, check_all, no_overfill
from harness.checkers.verdict import Verdict
from harness.errors import HarnessError
from harness.history import HistoryWriter, load_history
from tests.checkers.builders import HistoryBuilder, batch_state, final_state


def correct_run() -> tuple[HistoryBuilder, dict]:
    h = HistoryBuilder()
    h.register("b-1", ["s-1", "s-2"])
    h.content("b-1", "c-1", "s-1")
    h.failure("b-1", "f-1", "s-2")
    h.content("b-1", "c-2", outcome="fail")
    state = final_state(batch_state("b-1", [], {"s-1": "c-1"}, {"s-2": "f-1"}))
    return h, state


def test_invariants_in_order():
    assert INVARIANTS == (
        "one-slot-per-content",
        "one-content-per-slot",
        "no-lost-slot",
        "no-overfill",
        "completion-exactly-once",
        "liveness",
        "no-hang",
        "stores-agree",
    )


def test_correct_run_all_valid():
    h, state = correct_run()

    verdicts = check_all(h.build(), state)

    assert [v.invariant for v in verdicts] == list(INVARIANTS)
    assert [v.status for v in verdicts] == ["valid"] * 8
    assert [v.cause for v in verdicts] == [None] * 8
    assert [v.evidence for v in verdicts] == [[]] * 8


def test_missing_final_state_only_reply_checks_decide():
    h, _state = correct_run()

    verdicts = check_all(h.build(), None)

    assert {v.invariant: v.status for v in verdicts} == {
        "one-slot-per-content": "unknown",
        "one-content-per-slot": "unknown",
        "no-lost-slot": "unknown",
        "no-overfill": "valid",
        "completion-exactly-once": "unknown",
        "liveness": "unknown",
        "no-hang": "valid",
        "stores-agree": "unknown",
    }


def test_checker_crash_becomes_unknown(monkeypatch, caplog):
    def crash(history, final_state):
        raise RuntimeError("index out of range in batch b-1")

    monkeypatch.setattr(no_overfill, "check", crash)
    h, state = correct_run()

    with caplog.at_level(logging.ERROR, logger="harness.checkers"):
        verdicts = check_all(h.build(), state)

    assert verdicts[3] == Verdict(
        invariant="no-overfill",
        status="unknown",
        reason="The checker failed with RuntimeError: index out of range in batch b-1",
    )
    assert [v.status for v in verdicts] == ["valid"] * 3 + ["unknown"] + ["valid"] * 4
    assert [r.getMessage() for r in caplog.records] == ["checker no-overfill failed"]


def test_malformed_final_state_unknown_not_valid():
    h, state = correct_run()
    state["batches"]["b-1"]["capacity"] = "2"

    verdicts = check_all(h.build(), state)

    reason = (
        "The checker failed with FinalStateError: final state of batch 'b-1' has "
        "capacity='2', expected a JSON int"
    )
    # no-hang reads only the replies, so the damaged final state does not stop it.
    assert [v for v in verdicts if v.invariant != "no-hang"] == [
        Verdict(invariant=name, status="unknown", reason=reason)
        for name in INVARIANTS
        if name != "no-hang"
    ]
    assert verdicts[6].status == "valid"


def test_torn_last_line_loaded_and_reported(tmp_path):
    path = tmp_path / "history.jsonl"
    writer = HistoryWriter(path, {"scenario": {"redis_persistence": "aof"}, "seed": 3})
    writer.append(
        0, "invoke", "register", {"batch_id": "b-1", "slot_ids": ["s-1", "s-2"]}
    )
    writer.append(0, "ok", "register", {"batch_id": "b-1"})
    writer.append(1, "invoke", "content", {"batch_id": "b-1", "text_storage_id": "c-1"})
    writer.close()
    # A harness killed mid-write leaves half a line and no newline.
    completion = {"index": 3, "time_ns": 9, "process": 1, "type": "ok"}
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(completion)[:30])

    history = load_history(path)
    state = final_state(batch_state("b-1", ["s-2"], {"s-1": "c-1"}))
    verdicts = check_all(history, state)

    assert history.torn_lines == [5]
    assert [op.index for op in history.operations] == [0, 1, 2]
    assert {v.invariant: v.status for v in verdicts} == {
        "one-slot-per-content": "valid",
        "one-content-per-slot": "valid",
        "no-lost-slot": "valid",
        "no-overfill": "valid",
        "completion-exactly-once": "valid",
        "liveness": "unknown",
        "no-hang": "unknown",
        "stores-agree": "valid",
    }
    assert verdicts[5].reason == (
        "1 operation never completed (the first is operation 2, content by "
        "process 1), so the history was cut short, and the torn lines may have "
        "held their completions. History has 1 torn line."
    )
    assert all(v.reason.endswith(" History has 1 torn line.") for v in verdicts)


def test_history_without_events_unknown():
    h = HistoryBuilder()
    h.register("b-1", ["s-1"])
    state = final_state(batch_state("b-1", ["s-1"]))

    verdicts = check_all(h.build(), state)

    assert {v.status for v in verdicts} == {"unknown"}
    assert verdicts[0].reason.startswith(
        "The history has no content or failure operations, so nothing was tested."
    )


def test_torn_inner_line_makes_valid_unknown(tmp_path):
    path = tmp_path / "history.jsonl"
    writer = HistoryWriter(path, {"scenario": {"redis_persistence": "aof"}, "seed": 3})
    writer.append(0, "invoke", "register", {"batch_id": "b-1", "slot_ids": ["s-1"]})
    writer.append(0, "ok", "register", {"batch_id": "b-1"})
    writer.append(1, "invoke", "content", {"batch_id": "b-1", "text_storage_id": "c"})
    writer.append(1, "ok", "content", {"batch_id": "b-1", "text_storage_id": "c"})
    writer.close()
    lines = path.read_text().splitlines()
    lines.insert(2, "{{{garbage")
    path.write_text("\n".join(lines) + "\n")

    history = load_history(path)
    verdicts = check_all(history, final_state(batch_state("b-1", ["s-1"])))

    assert history.torn_lines == [3]
    assert all(v.status != "valid" for v in verdicts)
    assert "damaged at line 3, before its end" in verdicts[3].reason


def test_unknown_format_version_rejected(tmp_path):
    path = tmp_path / "history.jsonl"
    header = {"format": "slot-harness-history", "format_version": 99}
    path.write_text(json.dumps(header) + "\n")

    with pytest.raises(HarnessError) as caught:
        load_history(path)

    assert "format version 99" in str(caught.value)
