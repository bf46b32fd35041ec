"""Counterexamples selected from literal histories, and how they print."""

from __future__ import annotations

import io
import json
from typing import Any

from rich.console import Console

from harness.checkers import (
    completion_exactly_once,
    liveness,
    no_lost_slot,
    no_overfill,
    one_content_per_slot,
    one_slot_per_content,
)
from harness.checkers.verdict import Verdict
from harness.history import History, Operation
from harness.report.counterexample import (
    MAX_OPERATIONS,
    attach_counterexamples,
    fault_windows,
    select_counterexample,
)
from harness.report.results import (
    counterexample_notes,
    counterexample_table,
    print_verdicts,
)
from tests.checkers.builders import HistoryBuilder, batch_state, final_state

# Seconds from the invocation of a request to its completion, unless given.
DURATION_S = 0.05
CONTENT_C1 = {"batch_id": "b-1", "text_storage_id": "c-1"}


class Timeline:
    """Builds a history whose operations carry times and instances set by the test.

    Operations are appended in the order of the calls, which must follow their
    times, as the harness writes them. Each request gets a fresh process.
    """

    def __init__(self) -> None:
        self.operations: list[Operation] = []
        self._next_process = 0

    def append(
        self,
        time_s: float,
        process: int | str,
        type_: str,
        f: str,
        value: dict[str, Any],
        instance: str | None,
    ) -> Operation:
        time_ns = round(time_s * 1e9)
        if self.operations:
            assert time_ns >= self.operations[-1].time_ns, "append in time order"
        op = Operation(
            index=len(self.operations),
            time_ns=time_ns,
            process=process,
            type=type_,
            f=f,
            value=value,
            instance=instance,
        )
        self.operations.append(op)
        return op

    def invoke(self, time_s: float, f: str, value: dict[str, Any], instance: str):
        process = self._next_process
        self._next_process += 1
        return self.append(time_s, process, "invoke", f, value, instance)

    def complete(
        self, time_s: float, invoke: Operation, type_: str, **reply: Any
    ) -> Operation:
        value = {**invoke.value, **reply}
        return self.append(
            time_s, invoke.process, type_, invoke.f, value, invoke.instance
        )

    def register(self, time_s: float, batch_id: str, slot_ids: list[str]) -> None:
        value = {"batch_id": batch_id, "slot_ids": slot_ids}
        invoke = self.invoke(time_s, "register", value, "coordinator-1")
        self.complete(time_s + DURATION_S, invoke, "ok", status=201)

    def content(
        self,
        time_s: float,
        batch_id: str,
        content: str,
        instance: str,
        type_: str,
        **reply: Any,
    ) -> tuple[Operation, Operation]:
        """Append a content request and its completion, ``DURATION_S`` later."""
        value = {"batch_id": batch_id, "text_storage_id": content}
        invoke = self.invoke(time_s, "content", value, instance)
        return invoke, self.complete(time_s + DURATION_S, invoke, type_, **reply)

    def failure(
        self, time_s: float, batch_id: str, failure_id: str, instance: str, **reply: Any
    ) -> tuple[Operation, Operation]:
        value = {"batch_id": batch_id, "failure_id": failure_id}
        invoke = self.invoke(time_s, "failure", value, instance)
        return invoke, self.complete(time_s + DURATION_S, invoke, "ok", **reply)

    def nemesis(
        self, time_s: float, kind: str, phase: str, targets: list[str], **detail: Any
    ) -> Operation:
        value = {"phase": phase, "targets": targets, **detail}
        return self.append(time_s, "nemesis", "nemesis", kind, value, None)

    def build(self) -> History:
        return History(
            header=HistoryBuilder().header,
            operations=list(self.operations),
            line_count=len(self.operations) + 1,
        )


def ok(slot_id: str, created: bool = True) -> dict[str, Any]:
    return {"status": 200, "slot_id": slot_id, "created": created}


def window(
    kind: str, targets: list[str], start: Operation, end: Operation
) -> dict[str, Any]:
    """Return the JSON a counterexample gives a fault window with both phases."""
    return {
        "f": kind,
        "targets": targets,
        "start": phase_json(start),
        "end": phase_json(end),
    }


def phase_json(line: Operation) -> dict[str, Any]:
    detail = {k: v for k, v in line.value.items() if k not in ("phase", "targets")}
    return {"index": line.index, "time_ns": line.time_ns, "detail": detail}


def lost_slot_run() -> tuple[Timeline, dict[str, Any]]:
    """A pop-then-record run: a kill lands in c-3's request and s-3 is lost."""
    t = Timeline()
    t.register(0.1, "b-1", ["s-1", "s-2", "s-3"])
    t.content(1.0, "b-1", "c-1", "coordinator-1", "ok", **ok("s-1"))
    t.content(2.0, "b-1", "c-2", "coordinator-2", "ok", **ok("s-2"))
    t.content(4.0, "b-1", "c-1", "coordinator-3", "ok", **ok("s-1", created=False))
    t.content(6.0, "b-1", "c-2", "coordinator-1", "ok", **ok("s-2", created=False))
    t.nemesis(10.0, "kill", "start", ["coordinator-2"], after_new_event="b-1")
    t.content(10.002, "b-1", "c-3", "coordinator-2", "info", error="disconnected")
    t.nemesis(12.0, "kill", "end", ["coordinator-2"], method="signal")
    t.content(20.0, "b-1", "c-3", "coordinator-1", "fail", status=409, error="no_slot")
    t.content(22.0, "b-1", "c-4", "coordinator-3", "fail", status=409, error="no_slot")
    t.content(25.0, "b-1", "c-1", "coordinator-3", "ok", **ok("s-1", created=False))
    t.nemesis(26.5, "pause", "start", ["coordinator-1"])
    t.nemesis(27.0, "pause", "end", ["coordinator-1"])
    t.nemesis(28.0, "partition", "start", ["coordinator-3"])
    t.nemesis(29.0, "partition", "end", ["coordinator-3"])
    state = final_state(
        batch_state("b-1", [], {"s-1": "c-1", "s-2": "c-2"}, capacity=3)
    )
    return t, state


def test_lost_slot_shows_kill_and_last_requests():
    t, state = lost_slot_run()
    history = t.build()
    verdict = no_lost_slot.check(history, state)
    ops = t.operations

    counterexample = select_counterexample(history, verdict)

    # No operation names the lost slot, so the batch's requests stand in:
    # the unknown outcome first, then those that took a slot, then the latest.
    # The replays at 4 s and 6 s and the refusal at 20 s do not fit.
    assert [op.index for op in counterexample.operations] == [
        2, 3, 4, 5, 11, 12, 16, 17, 18, 19
    ]  # fmt: skip
    assert [op.time_ns for op in counterexample.operations][4] == 10_002_000_000
    assert counterexample.operations[5].value["error"] == "disconnected"
    # The kill overlaps c-3's request and the pause begins 1.45 s after the last
    # request ends. The partition begins 2.95 s after it, too far to show.
    assert [w.to_json() for w in counterexample.windows] == [
        window("kill", ["coordinator-2"], ops[10], ops[13]),
        window("pause", ["coordinator-1"], ops[20], ops[21]),
    ]
    assert counterexample.facts == (
        "batch b-1 lost slot s-3: the final state shows it neither available, "
        "assigned nor failed",
    )
    assert counterexample.related_operations == 16


def test_lost_slot_table_rows():
    t, state = lost_slot_run()
    history = t.build()
    verdict = no_lost_slot.check(history, state)

    table = counterexample_table(select_counterexample(history, verdict).to_json())

    rows = list(zip(*(column.cells for column in table.columns), strict=True))
    assert rows[4:9] == [
        ("10.000", "", "", "fault kill start", "coordinator-2", "after_new_event=b-1"),
        ("10.002", "coordinator-2", "5", "content invoke", "b-1 c-3", ""),
        (
            "10.052",
            "coordinator-2",
            "5",
            "content info",
            "b-1 c-3",
            "disconnected",
        ),
        ("12.000", "", "", "fault kill end", "coordinator-2", "method=signal"),
        ("22.000", "coordinator-3", "7", "content invoke", "b-1 c-4", ""),
    ]
    assert rows[0] == (
        "1.000",
        "coordinator-1",
        "1",
        "content invoke",
        "b-1 c-1",
        "",
    )
    assert rows[3][5] == "slot s-2"
    assert rows[9][5] == "no_slot (409)"
    assert rows[11][5] == "slot s-1, replay"
    assert len(rows) == 14


def test_lost_slot_notes():
    t, state = lost_slot_run()
    history = t.build()
    verdict = no_lost_slot.check(history, state)

    notes = counterexample_notes(select_counterexample(history, verdict).to_json())

    assert notes == [
        "batch b-1 lost slot s-3: the final state shows it neither available, "
        "assigned nor failed",
        "10 of 16 related operations shown",
    ]


def test_table_cuts_long_batch_prefix():
    # The harness names batches after the run, so every row repeats the run id.
    t = Timeline()
    batch_ids = ["smoke-20261204-182946-2355-b000", "smoke-20261204-182946-2355-b001"]
    for time_s, batch_id in zip((1.0, 2.0), batch_ids, strict=True):
        t.register(time_s, batch_id, ["s-1"])
        t.content(time_s + 0.1, batch_id, "c-1", "coordinator-1", "info")
    state = final_state(
        batch_state(batch_ids[0], ["s-1"]), batch_state(batch_ids[1], ["s-1"])
    )
    history = t.build()
    verdict = liveness.check(history, state)
    counterexample = select_counterexample(history, verdict).to_json()

    table = counterexample_table(counterexample)
    notes = counterexample_notes(counterexample)

    what = list(table.columns[4].cells)
    assert what == ["b000 c-1", "b000 c-1", "b001 c-1", "b001 c-1"]
    assert notes[-1] == (
        "batch ids are shown without their prefix smoke-20261204-182946-2355-"
    )


def test_content_in_two_slots_shows_race():
    # check-then-act: two instances both see c-1 as new and each gives it a slot.
    t = Timeline()
    t.register(0.1, "b-1", ["s-1", "s-2", "s-3"])
    early_invoke, early = t.content(
        1.0, "b-1", "c-1", "coordinator-3", "info", error="timeout"
    )
    first_invoke = t.invoke(3.0, "content", CONTENT_C1, "coordinator-1")
    second_invoke = t.invoke(3.001, "content", CONTENT_C1, "coordinator-2")
    first = t.complete(3.010, first_invoke, "ok", **ok("s-1"))
    second = t.complete(3.012, second_invoke, "ok", **ok("s-2"))
    t.content(4.0, "b-1", "c-2", "coordinator-3", "ok", **ok("s-3"))
    for time_s in (5.0, 6.0):
        t.content(time_s, "b-1", "c-1", "coordinator-3", "ok", **ok("s-1", False))
    late = [
        t.content(time_s, "b-1", "c-1", "coordinator-2", "info", error="timeout")
        for time_s in (7.0, 8.0, 9.0)
    ]
    state = final_state(
        batch_state("b-1", [], {"s-1": "c-1", "s-2": "c-1", "s-3": "c-2"})
    )
    history = t.build()
    verdict = one_slot_per_content.check(history, state)

    counterexample = select_counterexample(history, verdict)

    # The two replies that conflict and their invocations, then the unknown
    # outcome before them, then the latest unknown outcomes after them. c-2
    # names neither the content nor its slots.
    assert list(counterexample.operations) == [
        early_invoke,
        early,
        first_invoke,
        second_invoke,
        first,
        second,
        *late[1],
        *late[2],
    ]
    assert counterexample.windows == ()
    assert counterexample.related_operations == 16


def test_slot_of_content_and_failure_shows_both():
    # Six timeouts of c-1 would fill the counterexample, but f-1 must still show.
    t = Timeline()
    t.register(0.1, "b-1", ["s-1", "s-2"])
    failure = t.failure(1.0, "b-1", "f-1", "coordinator-2", **ok("s-1"))
    timeouts = [
        t.content(2.0 + n, "b-1", "c-1", "coordinator-1", "info", error="timeout")
        for n in range(6)
    ]
    state = final_state(
        batch_state("b-1", ["s-2"], {"s-1": "c-1"}, failures={"s-1": "f-1"}, capacity=2)
    )
    history = t.build()
    verdict = one_content_per_slot.check(history, state)

    counterexample = select_counterexample(history, verdict)

    assert list(counterexample.operations) == [
        *failure,
        *timeouts[2],
        *timeouts[3],
        *timeouts[4],
        *timeouts[5],
    ]


def test_double_completion_shows_last_slots_taken():
    # double-completion: c-2 and c-3 take the last two slots on two instances,
    # and each instance then reads a full batch and emits batch_ready.
    t = Timeline()
    t.register(0.1, "b-1", ["s-1", "s-2", "s-3"])
    watch_start = t.nemesis(0.5, "watch-conflict", "start", ["redis-proxy"])
    c1 = t.content(1.0, "b-1", "c-1", "coordinator-1", "ok", **ok("s-1"))
    c2_invoke = t.invoke(
        5.0, "content", {"batch_id": "b-1", "text_storage_id": "c-2"}, "coordinator-1"
    )
    c3_invoke = t.invoke(
        5.001, "content", {"batch_id": "b-1", "text_storage_id": "c-3"}, "coordinator-2"
    )
    c2 = t.complete(5.010, c2_invoke, "ok", **ok("s-2"))
    c3 = t.complete(5.012, c3_invoke, "ok", **ok("s-3"))
    replays = [
        t.content(time_s, "b-1", content, "coordinator-3", "ok", **ok(slot, False))
        for time_s, content, slot in (
            (6.0, "c-1", "s-1"),
            (7.0, "c-2", "s-2"),
            (8.0, "c-3", "s-3"),
            (9.0, "c-1", "s-1"),
        )
    ]
    refused = t.content(
        9.5, "b-1", "c-4", "coordinator-2", "fail", status=409, error="no_slot"
    )
    watch_end = t.nemesis(10.0, "watch-conflict", "end", ["redis-proxy"], injected=3)
    t.nemesis(20.0, "kill", "start", ["coordinator-1"])
    t.nemesis(21.0, "kill", "end", ["coordinator-1"])
    full = batch_state("b-1", [], {"s-1": "c-1", "s-2": "c-2", "s-3": "c-3"})
    entry = {"batch_id": "b-1", "assignments": full["assignments"], "failures": {}}
    state = final_state(full, completions=[entry, dict(entry)])
    history = t.build()
    verdict = completion_exactly_once.check(history, state)

    counterexample = select_counterexample(history, verdict)

    # The fact names only the batch: the requests that took a slot come first,
    # latest first, then the latest of the others.
    assert verdict.evidence == [
        {"fact": "batch b-1 got 2 batch_ready entries", "batch_id": "b-1"}
    ]
    assert list(counterexample.operations) == [
        *c1,
        c2_invoke,
        c3_invoke,
        c2,
        c3,
        *replays[3],
        *refused,
    ]
    assert [w.to_json() for w in counterexample.windows] == [
        window("watch-conflict", ["redis-proxy"], watch_start, watch_end)
    ]


def test_long_history_stays_short():
    # 5,000 requests make 10,000 operations, with a kill every 20 s.
    t = Timeline()
    t.register(0.0, "b-1", [f"s-{n}" for n in range(1, 41)])
    for n in range(4_999):
        time_s = 0.1 + n * 0.1
        if n % 200 == 100:
            t.nemesis(time_s, "kill", "start", [f"coordinator-{n % 3 + 1}"])
        if n % 200 == 150:
            t.nemesis(time_s, "kill", "end", [f"coordinator-{n % 3 + 1}"])
        content = f"c-{n % 45 + 1}"
        if n % 45 < 40:
            reply = ok(f"s-{n % 45 + 1}", created=n < 45)
            t.content(time_s, "b-1", content, "coordinator-1", "ok", **reply)
        else:
            t.content(time_s, "b-1", content, "coordinator-2", "fail", error="no_slot")
    history = t.build()
    # The final state lost s-40, which content c-40 was given.
    assignments = {f"s-{n}": f"c-{n}" for n in range(1, 40)}
    state = final_state(batch_state("b-1", [], assignments, capacity=40))
    verdict = no_lost_slot.check(history, state)
    output = io.StringIO()
    console = Console(file=output, width=120, color_system=None)

    [shown] = attach_counterexamples(history, [verdict])
    print_verdicts(console, [shown], "verdicts")

    assert len(history.operations) > 10_000
    counterexample = shown.counterexample
    assert counterexample is not None
    assert len(counterexample["operations"]) == MAX_OPERATIONS
    assert len(counterexample["windows"]) == 1
    assert counterexample["related_operations"] == 222
    assert len(json.dumps(counterexample)) < 5_000
    assert len(output.getvalue().splitlines()) <= 40


def test_shared_counterexample_printed_once():
    t, state = lost_slot_run()
    history = t.build()
    verdicts = attach_counterexamples(
        history, [no_lost_slot.check(history, state), liveness.check(history, state)]
    )
    output = io.StringIO()

    print_verdicts(Console(file=output, width=120), verdicts, "verdicts")

    text = output.getvalue()
    assert [v.status for v in verdicts] == ["invalid", "invalid"]
    assert verdicts[0].counterexample != verdicts[1].counterexample
    assert text.count("fault kill start") == 1
    assert text.splitlines()[-1] == (
        "liveness: counterexample with the same operations as no-lost-slot above"
    )


def test_invalid_verdicts_alone_get_counterexamples():
    t, state = lost_slot_run()
    history = t.build()
    valid = Verdict("no-overfill", "valid", "No batch acknowledged too much.")
    invalid = no_lost_slot.check(history, state)

    shown = attach_counterexamples(history, [valid, invalid])

    assert shown[0] == valid
    assert shown[1].counterexample == select_counterexample(history, invalid).to_json()
    saved = json.loads(json.dumps([verdict.to_json() for verdict in shown]))
    assert saved[0]["counterexample"] is None
    assert saved[1]["counterexample"] == shown[1].counterexample


def test_overfill_shows_reply_and_nearest_windows():
    t = Timeline()
    t.register(0.1, "b-1", ["s-1"])
    t.content(1.0, "b-1", "c-1", "coordinator-1", "ok", **ok("s-1"))
    windows = [
        (t.nemesis(start_s, kind, "start", [target]), start_s, kind, target)
        for start_s, kind, target in (
            (3.0, "latency", "redis"),
            (3.4, "pause", "coordinator-2"),
            (3.9, "partition", "coordinator-3"),
        )
    ]
    extra_invoke, extra = t.content(
        4.0, "b-1", "c-2", "coordinator-2", "ok", **ok("s-9")
    )
    ends = [
        t.nemesis(end_s, kind, "end", [target])
        for end_s, kind, target in (
            (4.2, "partition", "coordinator-3"),
            (4.5, "latency", "redis"),
            (5.4, "pause", "coordinator-2"),
        )
    ]
    late_kill = t.nemesis(5.5, "kill", "start", ["coordinator-1"])
    history = t.build()
    verdict = no_overfill.check(history, None)

    counterexample = select_counterexample(history, verdict)

    # The reply past the capacity, with its invocation. Four windows come
    # within 2 s of it, and the kill, 1.45 s after it ends, is the farthest.
    assert verdict.evidence == [extra.to_json()]
    assert list(counterexample.operations) == [extra_invoke, extra]
    assert [w.to_json() for w in counterexample.windows] == [
        window("latency", ["redis"], windows[0][0], ends[1]),
        window("pause", ["coordinator-2"], windows[1][0], ends[2]),
        window("partition", ["coordinator-3"], windows[2][0], ends[0]),
    ]
    assert late_kill.time_ns - extra.time_ns == 1_450_000_000


def test_fault_windows_pair_any_kind():
    t = Timeline()
    t.nemesis(1.0, "end-only", "end", ["redis"])
    t.nemesis(2.0, "latency", "start", ["coordinator-1"], delay_ms=200)
    t.nemesis(2.5, "kill", "start", ["coordinator-1"])
    t.nemesis(2.6, "kill", "start", ["coordinator-2"])
    t.nemesis(3.0, "kill", "end", ["coordinator-2"])
    t.nemesis(3.5, "script-flush", "at", ["redis"])
    t.nemesis(4.0, "kill", "end", ["coordinator-1"])
    t.nemesis(5.0, "partition", "start", ["coordinator-3"])
    t.nemesis(6.0, "partition", "end", [])
    ops = t.operations

    windows = [w.to_json() for w in fault_windows(t.build())]

    assert windows == [
        {
            "f": "end-only",
            "targets": ["redis"],
            "start": None,
            "end": phase_json(ops[0]),
        },
        {
            "f": "latency",
            "targets": ["coordinator-1"],
            "start": phase_json(ops[1]),
            "end": None,
        },
        window("kill", ["coordinator-1"], ops[2], ops[6]),
        window("kill", ["coordinator-2"], ops[3], ops[4]),
        window("script-flush", ["redis"], ops[5], ops[5]),
        # The end line names no targets, so it closes the open partition.
        window("partition", ["coordinator-3"], ops[7], ops[8]),
    ]
