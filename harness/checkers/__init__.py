"""Invariant checkers: pure functions from a history and a final state to verdicts.

Each module checks one invariant with ``check(history, final_state)``.
``check_all`` runs them all in the order of ``INVARIANTS``.
"""

from __future__ import annotations

import logging
from typing import Any

from harness.checkers import (
    completion_exactly_once,
    liveness,
    no_hang,
    no_lost_slot,
    no_overfill,
    one_content_per_slot,
    one_slot_per_content,
    stores_agree,
)
from harness.checkers.online import OnlineChecker
from harness.checkers.verdict import Verdict
from harness.history import History

__all__ = ["CHECKERS", "INVARIANTS", "OnlineChecker", "Verdict", "check_all"]

logger = logging.getLogger(__name__)

CHECKERS = (
    one_slot_per_content,
    one_content_per_slot,
    no_lost_slot,
    no_overfill,
    completion_exactly_once,
    liveness,
    no_hang,
    stores_agree,
)
INVARIANTS: tuple[str, ...] = tuple(module.INVARIANT for module in CHECKERS)


def check_all(history: History, final_state: dict[str, Any] | None) -> list[Verdict]:
    """Run every checker, turning a checker that raises into an unknown verdict.

    A crash never passes silently: its verdict is unknown and its reason
    carries the exception's type and text.
    """
    verdicts = []
    for module in CHECKERS:
        try:
            verdict = module.check(history, final_state)
        except Exception as err:  # any checker bug must become unknown, never a pass
            logger.exception("checker %s failed", module.INVARIANT)
            verdict = Verdict(
                invariant=module.INVARIANT,
                status="unknown",
                reason=f"The checker failed with {type(err).__name__}: {err}",
            )
        verdicts.append(verdict)
    distrust = _untrusted_history(history)
    if distrust:
        verdicts = [_downgrade(verdict, distrust) for verdict in verdicts]
    return verdicts


def _untrusted_history(history: History) -> str | None:
    """Says why no verdict of this history may be valid, or returns None.

    A history with no content or failure operation tested nothing, and a torn
    line before the last one means the file was damaged after the run wrote
    it: the harness only ever tears the line it was writing when it died.
    """
    if not any(op.f in ("content", "failure") for op in history.operations):
        return (
            "The history has no content or failure operations, so nothing was tested."
        )
    inner = [line for line in history.torn_lines if line != history.line_count]
    if inner:
        lines = ", ".join(str(line) for line in inner[:5])
        return (
            f"The history is damaged at line {lines}, before its end, so its "
            "operations cannot be trusted."
        )
    return None


def _downgrade(verdict: Verdict, reason: str) -> Verdict:
    if verdict.status != "valid":
        return verdict
    return Verdict(
        invariant=verdict.invariant,
        status="unknown",
        reason=f"{reason} {verdict.reason}",
    )
