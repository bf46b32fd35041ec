"""Fault windows of a history: when each fault began and ended, and on what."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.history import History


@dataclass(frozen=True)
class FaultWindow:
    """One occurrence of a fault; ``end_ns`` is None if the history has no end line.

    A missing end means the harness stopped while the fault was in effect, so
    the window lasts to the end of the history.
    """

    kind: str
    targets: tuple[str, ...]
    start_ns: int
    end_ns: int | None
    start_index: int
    value: dict[str, Any]

    def overlaps(self, start_ns: int, end_ns: int, grace_ns: int = 0) -> bool:
        """Whether [start_ns, end_ns] meets this window extended by ``grace_ns``."""
        if end_ns < self.start_ns:
            return False
        return self.end_ns is None or start_ns <= self.end_ns + grace_ns


def fault_windows(history: History) -> list[FaultWindow]:
    """Pairs each fault's start line with its end line, in order of start."""
    open_windows: dict[tuple[str, tuple[str, ...]], list[Any]] = {}
    windows: list[FaultWindow] = []
    for op in history.operations:
        if op.type != "nemesis":
            continue
        targets = tuple(str(t) for t in op.value.get("targets") or ())
        key = (op.f, targets)
        if op.value.get("phase") == "start":
            open_windows.setdefault(key, []).append(op)
        elif op.value.get("phase") == "end" and open_windows.get(key):
            start = open_windows[key].pop(0)
            windows.append(_window(start, targets, op.time_ns))
    for (_, targets), starts in open_windows.items():
        windows.extend(_window(start, targets, None) for start in starts)
    return sorted(windows, key=lambda window: window.start_ns)


def _window(start, targets: tuple[str, ...], end_ns: int | None) -> FaultWindow:
    value = {k: v for k, v in start.value.items() if k not in ("phase", "targets")}
    return FaultWindow(
        kind=start.f,
        targets=targets,
        start_ns=start.time_ns,
        end_ns=end_ns,
        start_index=start.index,
        value=value,
    )
