"""Operation records of a run, written as JSON Lines while the run goes.

The first line is a header (format version, scenario, seed, versions). Every
later line is one operation: an ``invoke`` followed by its completion (``ok``,
``fail`` or ``info``), or a ``nemesis`` line for a fault window. A process
whose operation ended in ``info`` (outcome unknown) is retired, and a new
process id continues, so one process never has two operations open at once.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.errors import HarnessError

FORMAT = "slot-harness-history"
FORMAT_VERSION = 1

OpType = Literal["invoke", "ok", "fail", "info", "nemesis"]
COMPLETION_TYPES = ("ok", "fail", "info")


@dataclass(frozen=True)
class Operation:
    """One history line: an invocation, a completion or a fault phase."""

    index: int
    time_ns: int
    process: int | str
    type: OpType
    f: str
    value: dict[str, Any]
    instance: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "time_ns": self.time_ns,
            "process": self.process,
            "type": self.type,
            "f": self.f,
            "value": self.value,
            "instance": self.instance,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Operation:
        return cls(
            index=int(data["index"]),
            time_ns=int(data["time_ns"]),
            process=data["process"],
            type=data["type"],
            f=data["f"],
            value=dict(data.get("value") or {}),
            instance=data.get("instance"),
        )


@dataclass
class History:
    """A loaded history: its header, its operations and what could not be read."""

    header: dict[str, Any]
    operations: list[Operation]
    torn_lines: list[int] = field(default_factory=list)
    # Number of the file's last line, so a torn last line can be distinguished
    # from damage inside the file.
    line_count: int = 0

    def completions(self) -> list[Operation]:
        return [op for op in self.operations if op.type in COMPLETION_TYPES]

    def pairs(self) -> list[tuple[Operation, Operation | None]]:
        """Pairs each invocation with its completion, or None when it has none."""
        open_ops: dict[int | str, Operation] = {}
        result: list[tuple[Operation, Operation | None]] = []
        slot_of: dict[int, int] = {}
        for op in self.operations:
            if op.type == "invoke":
                open_ops[op.process] = op
                slot_of[op.index] = len(result)
                result.append((op, None))
            elif op.type in COMPLETION_TYPES and op.process in open_ops:
                invoke = open_ops.pop(op.process)
                result[slot_of[invoke.index]] = (invoke, op)
        return result


class HistoryWriter:
    """Appends operations to ``history.jsonl`` and flushes each line.

    Thread-safe, so the workload and the fault schedule can share one writer.
    Flushing every line means a harness killed mid-run leaves a history that can
    still be checked, with at most its last line torn.
    """

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._index = 0
        self._start_ns = time.monotonic_ns()
        self._file = path.open("a", encoding="utf-8")
        self._write_line({"format": FORMAT, "format_version": FORMAT_VERSION, **header})

    def elapsed_ns(self) -> int:
        return time.monotonic_ns() - self._start_ns

    def append(
        self,
        process: int | str,
        type_: OpType,
        f: str,
        value: dict[str, Any],
        instance: str | None = None,
    ) -> Operation:
        with self._lock:
            op = Operation(
                index=self._index,
                time_ns=self.elapsed_ns(),
                process=process,
                type=type_,
                f=f,
                value=value,
                instance=instance,
            )
            self._index += 1
            self._write_line(op.to_json())
            return op

    def _write_line(self, data: dict[str, Any]) -> None:
        self._file.write(json.dumps(data, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def load_history(path: Path) -> History:
    """Reads a history file, skipping (and recording) lines that do not parse.

    A torn last line is what a killed harness leaves; a torn line elsewhere is
    recorded the same way so that the checkers can report the damage.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise HarnessError(
            f"history file {str(path)!r} not found; pass a run folder written by "
            "`harness run`"
        ) from err

    lines = text.splitlines()
    if not lines:
        raise HarnessError(
            f"history file {str(path)!r} is empty; the run wrote nothing"
        )
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError as err:
        raise HarnessError(
            f"history file {str(path)!r} has no readable header line: {err}"
        ) from err
    if (
        header.get("format") == FORMAT
        and header.get("format_version") != FORMAT_VERSION
    ):
        raise HarnessError(
            f"{str(path)!r} is history format version "
            f"{header.get('format_version')!r}; this harness reads version "
            f"{FORMAT_VERSION}: check it with the harness version that wrote it"
        )
    if header.get("format") != FORMAT:
        raise HarnessError(
            f"{str(path)!r} is not a slot-harness history (format "
            f"{header.get('format')!r}, expected {FORMAT!r})"
        )

    operations: list[Operation] = []
    torn: list[int] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            operations.append(Operation.from_json(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            torn.append(number)
    return History(
        header=header, operations=operations, torn_lines=torn, line_count=len(lines)
    )
