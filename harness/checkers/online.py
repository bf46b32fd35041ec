"""Reply-level checks that run during a run, so an alert can fire before the end.

They see ok replies only, so they catch two slots for one content and two
contents for one slot. Checks that need the final state run after the run.
"""

from __future__ import annotations

from harness.checkers.replies import (
    ONE_CONTENT_PER_SLOT,
    ONE_SLOT_PER_CONTENT,
    ReplyIndex,
)
from harness.history import Operation


class OnlineChecker:
    """Checks operations as they complete and counts violations per invariant.

    Uses the same ``ReplyIndex`` as the offline checkers, so online and offline
    verdicts agree on the replies. Memory grows with the distinct (item, slot)
    pairs seen, not with the number of replies.
    """

    def __init__(self) -> None:
        self._index = ReplyIndex()
        self.violations: dict[str, int] = {
            ONE_SLOT_PER_CONTENT: 0,
            ONE_CONTENT_PER_SLOT: 0,
        }

    def observe(self, op: Operation) -> list[str]:
        """Record one operation and return a description of each new violation.

        Each description starts with the invariant name and a colon, for example
        ``"one-slot-per-content: content c-1 of batch b-1 got slots s-1 and s-2"``.
        Feed operations in history order. Invocations may be fed too, and then
        fill fields that a completion lacks.
        """
        conflicts = self._index.observe(op)
        for conflict in conflicts:
            self.violations[conflict.invariant] += 1
        return [f"{c.invariant}: {c.describe()}" for c in conflicts]
