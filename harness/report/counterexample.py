"""Counterexamples: the few operations and fault windows that show an invalid verdict.

A verdict's evidence contains the operations that broke an invariant and the
final-state facts that show it. A fact names its batch and, where known, its
slots and contents, but not the operations that led there. This module picks
those operations from the history, with the fault windows around them, so a
report shows a dozen lines instead of the whole run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.checkers.replies import ITEM_ID_FIELDS
from harness.checkers.verdict import Verdict
from harness.checkers.windows import FaultWindow, fault_windows
from harness.history import History, Operation

# A counterexample shows at most this many operations, so it fits on a screen.
MAX_OPERATIONS = 10
# Fault windows shown per counterexample, the nearest to its operations first.
MAX_WINDOWS = 3
# A fault window is shown when it overlaps a shown operation or comes this close.
WINDOW_MARGIN_NS = 2_000_000_000
# Fact sentences quoted per counterexample. The verdict's reason quotes them all.
MAX_FACTS = 3

# The fact fields that name ids, per kind, as one id or as a list of several.
_ID_FIELDS = {
    "slot": ("slot_id", "slot_ids"),
    "content": ("text_storage_id", "text_storage_ids"),
    "failure": ("failure_id", "failure_ids"),
}


@dataclass(frozen=True)
class Counterexample:
    """The operations and fault windows that show one invalid verdict.

    ``operations`` and ``windows`` are sorted by time. ``related_operations``
    counts every operation the evidence points at, shown or not.
    """

    invariant: str
    facts: tuple[str, ...]
    operations: tuple[Operation, ...]
    windows: tuple[FaultWindow, ...]
    related_operations: int

    def to_json(self) -> dict[str, Any]:
        return {
            "invariant": self.invariant,
            "facts": list(self.facts),
            "operations": [op.to_json() for op in self.operations],
            "windows": [window.to_json() for window in self.windows],
            "related_operations": self.related_operations,
        }


@dataclass(frozen=True)
class _Request:
    """A content or failure invocation with its completion, None if it has none."""

    invoke: Operation
    completion: Operation | None

    @property
    def operations(self) -> list[Operation]:
        if self.completion is None:
            return [self.invoke]
        return [self.invoke, self.completion]

    @property
    def last_index(self) -> int:
        return (self.completion or self.invoke).index

    @property
    def unknown(self) -> bool:
        return self.completion is None or self.completion.type == "info"

    @property
    def took_slot(self) -> bool:
        """An ok reply that did not call itself a replay (``created: false``)."""
        completion = self.completion
        return (
            completion is not None
            and completion.type == "ok"
            and completion.value.get("created") is not False
        )

    def names(self, kind: str, item_id: str) -> bool:
        """Tell whether the request names this slot, content or failure id."""
        if kind == "slot":
            completion = self.completion
            return (
                completion is not None
                and completion.type == "ok"
                and completion.value.get("slot_id") == item_id
            )
        if kind != self.invoke.f:
            return False
        return self.invoke.value.get(ITEM_ID_FIELDS[kind]) == item_id


class _HistoryIndex:
    """Lookups over one history, built once for all verdicts of a run."""

    def __init__(self, history: History) -> None:
        self.by_index = {op.index: op for op in history.operations}
        self.invocation_of: dict[int, Operation] = {}
        self.requests_by_batch: dict[str, list[_Request]] = {}
        for invoke, completion in history.pairs():
            if completion is not None:
                self.invocation_of[completion.index] = invoke
            batch_id = invoke.value.get("batch_id")
            if invoke.f in ITEM_ID_FIELDS and isinstance(batch_id, str):
                request = _Request(invoke, completion)
                self.requests_by_batch.setdefault(batch_id, []).append(request)
        self.windows = fault_windows(history)
        self.end_ns = max((op.time_ns for op in history.operations), default=0)


def select_counterexample(history: History, verdict: Verdict) -> Counterexample:
    """Select the operations and fault windows that show an invalid verdict.

    The evidence operations come first, then their invocations. Each fact
    then adds the requests of its batch that name its slots or contents (ok
    replies naming a slot, invocations and completions of a content or
    failure id), or every request of its batch when none names them. Among
    those, requests invoked after the first evidence operation rank last.
    Then unknown outcomes (``info``) rank first, then ok replies that took a
    slot, then the latest. At most ``MAX_OPERATIONS`` are selected. Fault
    windows that overlap a selected operation or come within
    ``WINDOW_MARGIN_NS`` of one are added, nearest first.
    """
    return _select(_HistoryIndex(history), verdict)


def attach_counterexamples(history: History, verdicts: list[Verdict]) -> list[Verdict]:
    """Return the verdicts with the JSON of a counterexample on each invalid one."""
    if all(verdict.status != "invalid" for verdict in verdicts):
        return verdicts
    index = _HistoryIndex(history)
    return [
        dataclasses.replace(verdict, counterexample=_select(index, verdict).to_json())
        if verdict.status == "invalid"
        else verdict
        for verdict in verdicts
    ]


def _select(index: _HistoryIndex, verdict: Verdict) -> Counterexample:
    evidence_ops = _evidence_operations(index, verdict.evidence)
    facts = [item for item in verdict.evidence if isinstance(item.get("fact"), str)]
    # The first evidence operation is where the violation first showed. A fact
    # alone is read from the final state, after every operation.
    cutoff = min((op.index for op in evidence_ops), default=None)

    chosen: dict[int, Operation] = {}

    def add(operations: Iterable[Operation]) -> None:
        new = [op for op in operations if op.index not in chosen]
        if len(chosen) + len(new) <= MAX_OPERATIONS:
            chosen.update((op.index, op) for op in new)

    for op in evidence_ops:
        add([op])
    for op in evidence_ops:
        invoke = index.invocation_of.get(op.index)
        if invoke is not None:
            add([invoke])

    related = {op.index for op in evidence_ops}
    related.update(
        index.invocation_of[op.index].index
        for op in evidence_ops
        if op.index in index.invocation_of
    )
    for request in _rank_fact_requests(index, facts, cutoff, related):
        add(request.operations)

    operations = sorted(chosen.values(), key=lambda op: (op.time_ns, op.index))
    return Counterexample(
        invariant=verdict.invariant,
        facts=tuple(item["fact"] for item in facts[:MAX_FACTS]),
        operations=tuple(operations),
        windows=tuple(_nearby_windows(index, operations)),
        related_operations=len(related),
    )


def _evidence_operations(
    index: _HistoryIndex, evidence: Sequence[dict[str, Any]]
) -> list[Operation]:
    operations = []
    for item in evidence:
        if "index" not in item or "type" not in item:
            continue
        op = index.by_index.get(item["index"])
        # An evidence operation missing from the history still shows itself.
        operations.append(op if op is not None else Operation.from_json(item))
    return operations


def _rank_fact_requests(
    index: _HistoryIndex,
    facts: Sequence[dict[str, Any]],
    cutoff: int | None,
    related: set[int],
) -> list[_Request]:
    """Return the facts' requests in the order they are worth showing.

    First the best request for each id a fact names (so a content in two
    slots shows a reply naming each slot), fact by fact, then the rest by
    rank. ``related`` gains the index of every operation of every request.
    """

    def rank(request: _Request) -> tuple[bool, bool, bool, int]:
        after_cutoff = cutoff is not None and request.invoke.index > cutoff
        return (
            after_cutoff,
            not request.unknown,
            not request.took_slot,
            -request.last_index,
        )

    leaders: list[_Request] = []
    followers: list[_Request] = []
    for item in facts:
        batch_id = item.get("batch_id")
        if not isinstance(batch_id, str):
            continue
        in_batch = index.requests_by_batch.get(batch_id, [])
        ids = [
            (kind, item_id)
            for kind, fields in _ID_FIELDS.items()
            for item_id in _fact_ids(item, *fields)
        ]
        named = [r for r in in_batch if any(r.names(k, i) for k, i in ids)]
        candidates = sorted(named or in_batch, key=rank)
        for request in candidates:
            related.update(op.index for op in request.operations)
        for kind, item_id in ids or [("batch", batch_id)]:
            best = next(
                (r for r in candidates if kind == "batch" or r.names(kind, item_id)),
                None,
            )
            if best is not None:
                leaders.append(best)
        followers.extend(candidates)

    ordered: dict[int, _Request] = {}
    for request in leaders + followers:
        ordered.setdefault(request.invoke.index, request)
    return list(ordered.values())


def _fact_ids(item: dict[str, Any], single_field: str, list_field: str) -> list[str]:
    ids = []
    if isinstance(item.get(single_field), str):
        ids.append(item[single_field])
    if isinstance(item.get(list_field), list):
        ids.extend(str(item_id) for item_id in item[list_field])
    return ids


def _nearby_windows(
    index: _HistoryIndex, operations: Sequence[Operation]
) -> list[FaultWindow]:
    if not operations:
        return []
    near: list[tuple[int, int]] = []
    for position, window in enumerate(index.windows):
        start, end = window.span_ns(index.end_ns)
        distance = min(_gap_ns(op.time_ns, start, end) for op in operations)
        if distance <= WINDOW_MARGIN_NS:
            near.append((distance, position))
    nearest = sorted(near)[:MAX_WINDOWS]
    # Back to the history's order for the report.
    return [
        index.windows[position]
        for _distance, position in sorted(nearest, key=lambda n: n[1])
    ]


def _gap_ns(time_ns: int, start: int, end: int) -> int:
    if time_ns < start:
        return start - time_ns
    if time_ns > end:
        return time_ns - end
    return 0
