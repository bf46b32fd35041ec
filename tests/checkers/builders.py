"""Builders for literal histories and final states in checker tests."""

from __future__ import annotations

from typing import Any

from harness.history import FORMAT, FORMAT_VERSION, History, Operation


class HistoryBuilder:
    """Appends operations with consecutive indexes and a fresh process per call.

    A fresh process per operation matches the history rule that a process
    never has two operations open, and keeps the tests free of process ids.
    """

    def __init__(self, persistence: str = "aof") -> None:
        self.header: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "scenario": {"name": "literal", "redis_persistence": persistence},
            "seed": 7,
        }
        self.operations: list[Operation] = []
        self._next_process = 0

    def append(
        self, process: int, type_: str, f: str, value: dict[str, Any]
    ) -> Operation:
        op = Operation(
            index=len(self.operations),
            time_ns=1_000 * len(self.operations),
            process=process,
            type=type_,
            f=f,
            value=value,
            instance="i-1",
        )
        self.operations.append(op)
        return op

    def invoke(self, f: str, value: dict[str, Any]) -> int:
        process = self._next_process
        self._next_process += 1
        self.append(process, "invoke", f, value)
        return process

    def register(self, batch_id: str, slot_ids: list[str], outcome: str = "ok") -> None:
        value = {"batch_id": batch_id, "slot_ids": slot_ids}
        process = self.invoke("register", value)
        reply = {"batch_id": batch_id}
        if outcome != "ok":
            reply["error"] = "conflict" if outcome == "fail" else "timeout"
        self.append(process, outcome, "register", reply)

    def content(
        self,
        batch_id: str,
        content: str,
        slot_id: str | None = None,
        outcome: str | None = "ok",
        created: bool = True,
    ) -> Operation:
        """Append a content invocation and its completion (none if outcome is None)."""
        return self._item(
            "content", "text_storage_id", batch_id, content, slot_id, outcome, created
        )

    def failure(
        self,
        batch_id: str,
        failure_id: str,
        slot_id: str | None = None,
        outcome: str | None = "ok",
    ) -> Operation:
        return self._item(
            "failure", "failure_id", batch_id, failure_id, slot_id, outcome, True
        )

    def _item(
        self,
        f: str,
        id_field: str,
        batch_id: str,
        item_id: str,
        slot_id: str | None,
        outcome: str | None,
        created: bool,
    ) -> Operation:
        value = {"batch_id": batch_id, id_field: item_id}
        process = self.invoke(f, value)
        if outcome is None:
            return self.operations[-1]
        reply = dict(value)
        if outcome == "ok":
            reply.update({"slot_id": slot_id, "created": created})
        elif outcome == "fail":
            reply["error"] = "no_slot"
        else:
            reply["error"] = "timeout"
        return self.append(process, outcome, f, reply)

    def nemesis(self, kind: str, phase: str, targets: list[str] | None = None) -> None:
        value = {"phase": phase, "targets": targets or ["redis"]}
        self.append(-1, "nemesis", kind, value)

    def build(self, torn_lines: list[int] | None = None) -> History:
        """Builds the history; the given torn lines end the file, as a kill leaves."""
        torn = list(torn_lines or [])
        return History(
            header=self.header,
            operations=list(self.operations),
            torn_lines=torn,
            line_count=max(torn, default=len(self.operations) + 1),
        )


def batch_state(
    batch_id: str,
    available: list[str] | None = None,
    assignments: dict[str, str] | None = None,
    failures: dict[str, str] | None = None,
    capacity: int | None = None,
    completed: bool | None = None,
) -> dict[str, Any]:
    """Return a GET /batches/{id} body whose capacity and completed fit the slots."""
    available = available or []
    assignments = assignments or {}
    failures = failures or {}
    if capacity is None:
        capacity = len(available) + len(assignments) + len(failures)
    if completed is None:
        completed = len(assignments) + len(failures) >= capacity
    return {
        "batch_id": batch_id,
        "capacity": capacity,
        "available": available,
        "assignments": assignments,
        "failures": failures,
        "completed": completed,
    }


def final_state(
    *states: dict[str, Any],
    completions: list[dict[str, Any]] | None = None,
    store_rows: dict[str, dict[str, str]] | None = None,
    with_store_rows: bool = True,
) -> dict[str, Any]:
    """Return a final state holding the given batch states.

    Unless given, the completions and Postgres rows are those of a correct run:
    one matching completion per full batch, and rows equal to the assignments.
    """
    if completions is None:
        completions = [
            {
                "batch_id": state["batch_id"],
                "assignments": dict(state["assignments"]),
                "failures": dict(state["failures"]),
            }
            for state in states
            if not state["available"]
        ]
    result: dict[str, Any] = {
        "batches": {state["batch_id"]: state for state in states},
        "completions": completions,
    }
    if with_store_rows:
        if store_rows is None:
            store_rows = {s["batch_id"]: dict(s["assignments"]) for s in states}
        result["store_rows"] = store_rows
    return result
