"""The three-state verdict every checker returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["valid", "invalid", "unknown"]
Cause = Literal["coordinator", "environment"]


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one invariant over a run.

    ``evidence`` contains the few operations (or final-state facts) that show an
    invalid verdict, never the whole history. ``cause`` is set on invalid
    verdicts only: ``environment`` when a fault destroyed data the scenario
    declared volatile, else ``coordinator``.
    """

    invariant: str
    status: Status
    reason: str
    cause: Cause | None = None
    evidence: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
