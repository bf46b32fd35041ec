"""Collect one checker's violations, unknown parts and notes into a verdict."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.checkers.verdict import Verdict
from harness.history import History

# Evidence stays short so that a report shows what broke, not the whole run.
MAX_EVIDENCE = 8
# Reasons quote at most this many violations and count the rest.
MAX_QUOTED_VIOLATIONS = 5
# A fact names at most this many ids per field, and its sentence counts them all.
MAX_FACT_IDS = 10


@dataclass(frozen=True)
class Violation:
    """One broken instance of an invariant.

    ``index`` is the history index of the operation that made the violation
    visible, or None when only the final state shows it (read after the run).
    """

    sentence: str
    evidence: tuple[dict[str, Any], ...]
    index: int | None


class Findings:
    """Violations, unknown parts and notes of one invariant over one run."""

    def __init__(self, invariant: str, history: History) -> None:
        self.invariant = invariant
        self.history = history
        self.violations: list[Violation] = []
        self.unknowns: list[str] = []
        self.notes: list[str] = []

    def violation(
        self,
        sentence: str,
        evidence: Iterable[dict[str, Any]] = (),
        index: int | None = None,
    ) -> None:
        self.violations.append(Violation(sentence, tuple(evidence), index))

    def fact_violation(
        self,
        sentence: str,
        batch_id: str | None = None,
        slot_ids: Iterable[str] = (),
        contents: Iterable[str] = (),
        failure_ids: Iterable[str] = (),
    ) -> None:
        """Record a violation that only the final state shows, with its ids."""
        evidence = fact_evidence(sentence, batch_id, slot_ids, contents, failure_ids)
        self.violation(sentence, [evidence])

    def unknown(self, sentence: str) -> None:
        self.unknowns.append(sentence)

    def note(self, sentence: str) -> None:
        self.notes.append(sentence)

    def verdict(self, valid_reason: str) -> Verdict:
        """Build the verdict: invalid beats unknown, and unknown beats valid."""
        notes = list(self.notes)
        if self.history.torn_lines:
            notes.append(
                f"history has {plural(len(self.history.torn_lines), 'torn line')}"
            )

        if self.violations:
            cause, cause_note = _cause(self.history, self.violations)
            sentences = [v.sentence for v in self.violations[:MAX_QUOTED_VIOLATIONS]]
            hidden = len(self.violations) - MAX_QUOTED_VIOLATIONS
            if hidden > 0:
                sentences.append(f"{plural(hidden, 'more violation')} not quoted")
            if cause_note:
                sentences.append(cause_note)
            return Verdict(
                invariant=self.invariant,
                status="invalid",
                reason=_sentences(sentences + self.unknowns + notes),
                cause=cause,
                evidence=_evidence(self.violations),
            )
        if self.unknowns:
            return Verdict(
                invariant=self.invariant,
                status="unknown",
                reason=_sentences(self.unknowns + notes),
            )
        return Verdict(
            invariant=self.invariant,
            status="valid",
            reason=_sentences([valid_reason, *notes]),
        )


def fact_evidence(
    sentence: str,
    batch_id: str | None = None,
    slot_ids: Iterable[str] = (),
    contents: Iterable[str] = (),
    failure_ids: Iterable[str] = (),
) -> dict[str, Any]:
    """Build the evidence item of a final-state fact: its sentence and its ids.

    The ids take the field names of history operations, so a reader can find
    the operations that name them: ``slot_id``, ``text_storage_id`` and
    ``failure_id`` for one id, and the lists ``slot_ids``, ``text_storage_ids``
    and ``failure_ids`` for several. A field with no id is left out.
    """
    item: dict[str, Any] = {"fact": sentence}
    if batch_id is not None:
        item["batch_id"] = batch_id
    for name, ids in (
        ("slot_id", slot_ids),
        ("text_storage_id", contents),
        ("failure_id", failure_ids),
    ):
        distinct = list(dict.fromkeys(ids))[:MAX_FACT_IDS]
        if len(distinct) == 1:
            item[name] = distinct[0]
        elif distinct:
            item[name + "s"] = distinct
    return item


def volatile_restart_index(history: History) -> int | None:
    """Return the index of the first Redis restart that lost data by design.

    That is a ``redis-restart`` fault that deleted Redis's files (its window
    says ``data_lost``), or any restart in a scenario that runs Redis without
    persistence, so the restart empties it. Otherwise return None.
    """
    scenario = history.header.get("scenario") or {}
    volatile = scenario.get("redis_persistence") == "volatile"
    for op in history.operations:
        if (
            op.type == "nemesis"
            and op.f == "redis-restart"
            and op.value.get("phase") == "start"
            and (volatile or op.value.get("data_lost") is True)
        ):
            return op.index
    return None


def _cause(history: History, violations: Sequence[Violation]) -> tuple[str, str | None]:
    # A violation seen only in the final state was read after every fault, so
    # any volatile restart came before it.
    restart = volatile_restart_index(history)
    if restart is None:
        return "coordinator", None
    for violation in violations:
        if violation.index is not None and violation.index < restart:
            return "coordinator", None
    note = (
        f"Redis restarted without persistence at operation {restart}, before every "
        "violation, so the environment lost the data"
    )
    return "environment", note


def _evidence(violations: Sequence[Violation]) -> list[dict[str, Any]]:
    evidence: list[dict[str, Any]] = []
    for violation in violations:
        for item in violation.evidence:
            if item not in evidence:
                evidence.append(item)
            if len(evidence) == MAX_EVIDENCE:
                return evidence
    return evidence


def _sentences(parts: Sequence[str]) -> str:
    return " ".join(part[0].upper() + part[1:] + "." for part in parts if part)


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """Return ``count`` with the noun, in the plural form unless count is 1."""
    if count == 1:
        return f"1 {noun}"
    return f"{count} {plural_noun or noun + 's'}"


def id_list(ids: Sequence[str], limit: int = 5) -> str:
    """Return the ids as a readable list, counting those past ``limit``."""
    shown = list(ids[:limit])
    if len(ids) > limit:
        shown.append(f"{len(ids) - limit} more")
    if len(shown) == 1:
        return shown[0]
    return ", ".join(shown[:-1]) + " and " + shown[-1]


def named_list(noun: str, plural_noun: str, ids: Sequence[str]) -> str:
    """Return e.g. "slot s-1" or "slots s-1 and s-2", counting those past five."""
    return f"{noun if len(ids) == 1 else plural_noun} {id_list(ids)}"


def batch_list(batch_ids: Sequence[str]) -> str:
    return named_list("batch", "batches", batch_ids)


def slot_list(slot_ids: Sequence[str]) -> str:
    return named_list("slot", "slots", slot_ids)
