"""The three-state verdict every checker returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["valid", "invalid", "unknown"]
Cause = Literal["coordinator", "environment"]


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one invariant over a run.

    ``evidence`` contains the few operations (``Operation.to_json()``) and
    final-state facts that show an invalid verdict, never the whole history. A
    fact is ``{"fact": sentence}`` plus the ids it names: ``batch_id``, and
    ``slot_id``, ``text_storage_id`` or ``failure_id`` (lists under the plural
    names when there are several). ``cause`` is set on invalid verdicts only:
    ``environment`` when a fault destroyed data the scenario declared volatile,
    else ``coordinator``. ``counterexample`` is set by the report after the
    checks, on invalid verdicts only: the JSON of
    ``harness.report.counterexample.Counterexample``.
    """

    invariant: str
    status: Status
    reason: str
    cause: Cause | None = None
    evidence: list[dict[str, Any]] = field(default_factory=list)
    counterexample: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
