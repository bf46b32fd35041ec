"""Fault windows of a history: when each fault began and ended, and on what."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.history import History


@dataclass(frozen=True)
class WindowPhase:
    """The history line that starts or ends a fault window."""

    index: int
    time_ns: int
    # The line's value without ``phase`` and ``targets``, e.g. a kill's method.
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "time_ns": self.time_ns, "detail": self.detail}


@dataclass(frozen=True)
class FaultWindow:
    """A fault in effect from ``start`` to ``end``, as its nemesis lines record it.

    ``start`` is None for an end line with no start before it, and ``end`` is
    None for a fault that never ended in the history (a run cut short). A
    nemesis line whose phase is neither ``start`` nor ``end`` is a window of
    one instant, with the same line as start and end.
    """

    f: str
    targets: tuple[str, ...]
    start: WindowPhase | None
    end: WindowPhase | None

    def span_ns(self, history_end_ns: int) -> tuple[int, int]:
        """Return the window's first and last nanosecond, open ends filled in."""
        start = self.start.time_ns if self.start is not None else 0
        end = self.end.time_ns if self.end is not None else history_end_ns
        return start, end

    def to_json(self) -> dict[str, Any]:
        return {
            "f": self.f,
            "targets": list(self.targets),
            "start": self.start.to_json() if self.start is not None else None,
            "end": self.end.to_json() if self.end is not None else None,
        }


def fault_windows(history: History) -> list[FaultWindow]:
    """Pair the nemesis lines of a history into fault windows, by first line.

    An end line closes the oldest open window of the same fault kind and
    targets, or else the oldest open window of the same kind, because a fault
    may record its targets on one phase only.
    """
    windows: list[FaultWindow] = []
    # Each open window with its position in ``windows``.
    open_windows: list[tuple[int, FaultWindow]] = []
    for op in history.operations:
        if op.type != "nemesis":
            continue
        phase_name = op.value.get("phase")
        targets = _targets(op.value.get("targets"))
        detail = {
            key: value
            for key, value in op.value.items()
            if key not in ("phase", "targets")
        }
        phase = WindowPhase(op.index, op.time_ns, detail)
        if phase_name == "start":
            open_windows.append((len(windows), FaultWindow(op.f, targets, phase, None)))
            windows.append(open_windows[-1][1])
        elif phase_name == "end":
            position = _open_window_position(open_windows, op.f, targets)
            if position is None:
                windows.append(FaultWindow(op.f, targets, None, phase))
                continue
            window_position, started = open_windows.pop(position)
            windows[window_position] = dataclasses.replace(
                started, targets=started.targets or targets, end=phase
            )
        else:
            windows.append(FaultWindow(op.f, targets, phase, phase))
    return windows


def _targets(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list | tuple):
        return tuple(str(target) for target in raw)
    return (str(raw),)


def _open_window_position(
    open_windows: Sequence[tuple[int, FaultWindow]], f: str, targets: tuple[str, ...]
) -> int | None:
    same_kind = [
        position
        for position, (_window_position, window) in enumerate(open_windows)
        if window.f == f
    ]
    for position in same_kind:
        if open_windows[position][1].targets == targets:
            return position
    return same_kind[0] if same_kind else None
