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
    return verdicts
