"""Invariant: every request is answered within the client timeout.

This is the silent hang of a coordinator that retries a failed transaction
forever: a WATCH that always aborts, retried with no bound, never replies, and
the event pipeline behind it stalls with no error anywhere. A correct
coordinator gives up and says so (503 contention) instead.

A fault that stops an instance or a store from answering (a kill, a pause,
a partition, added latency, a store restart: harness.faults.BLOCKING_KINDS)
excuses the timeouts of requests in flight during it, and shortly after it,
on any instance: a paused instance may hold a lock another one waits for.
"""

from __future__ import annotations

from typing import Any

from harness.checkers.findings import Findings, plural
from harness.checkers.verdict import Verdict
from harness.checkers.windows import fault_windows
from harness.faults import BLOCKING_KINDS
from harness.history import History, Operation

INVARIANT = "no-hang"

# After a blocking fault heals, connections come back with some delay: TCP
# retransmission backs off during a partition, clients reconnect to a
# restarted store, and a thawed instance works through the requests that
# piled up. Requests sent within this grace, or within one client timeout if
# that is longer, are excused too.
GRACE_NS = 3_000_000_000


def check(history: History, final_state: dict[str, Any] | None) -> Verdict:
    """Flags every request that timed out while no blocking fault explains it.

    The final state is not needed: the replies alone show a hang.
    """
    findings = Findings(INVARIANT, history)
    grace_ns = _grace_ns(history)
    history_end_ns = max((op.time_ns for op in history.operations), default=0)
    blocking = [
        window.span_ns(history_end_ns)
        for window in fault_windows(history)
        if window.f in BLOCKING_KINDS
    ]
    timeouts = 0
    excused = 0
    unfinished = 0
    for invoke, completion in history.pairs():
        if completion is None:
            unfinished += 1
            continue
        if completion.type != "info" or completion.value.get("error") != "timeout":
            continue
        timeouts += 1
        excuse = _excuse(blocking, invoke, completion, grace_ns)
        if excuse is not None:
            excused += 1
            continue
        findings.violation(
            _describe(invoke, completion),
            [invoke.to_json(), completion.to_json()],
            index=completion.index,
        )
    if excused:
        findings.note(
            f"{plural(excused, 'timeout')} overlapped a fault that blocks instances "
            "or stores, and were not counted"
        )
    if unfinished:
        findings.unknown(
            f"{plural(unfinished, 'operation')} never completed, so whether they "
            "hung is unknown (the history was cut short)"
        )
    return findings.verdict(
        f"no request went unanswered past the client timeout outside a blocking "
        f"fault ({plural(timeouts, 'timeout')} in all)"
    )


def _grace_ns(history: History) -> int:
    scenario = history.header.get("scenario") or {}
    timeout_s = scenario.get("request_timeout_s")
    if isinstance(timeout_s, int | float) and timeout_s > 0:
        return max(GRACE_NS, int(timeout_s * 1e9))
    return GRACE_NS


def _excuse(
    windows: list[tuple[int, int]],
    invoke: Operation,
    completion: Operation,
    grace_ns: int,
) -> tuple[int, int] | None:
    """Returns a blocking window the request overlapped, grace included, if any."""
    for start_ns, end_ns in windows:
        if completion.time_ns >= start_ns and invoke.time_ns <= end_ns + grace_ns:
            return start_ns, end_ns
    return None


def _describe(invoke: Operation, completion: Operation) -> str:
    waited_s = (completion.time_ns - invoke.time_ns) / 1e9
    what = invoke.value.get("text_storage_id") or invoke.value.get("failure_id")
    return (
        f"{invoke.f} {what} of batch {invoke.value.get('batch_id')} sent to "
        f"{invoke.instance} at {invoke.time_ns / 1e9:.3f} s had no reply after "
        f"{waited_s:.1f} s (operation {completion.index}), with no blocking fault "
        "in effect"
    )
