"""results.json, the exit code a run earns, and the verdict table."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.checkers.verdict import Verdict

EXIT_VALID = 0
EXIT_INVALID = 1
EXIT_BAD_INPUT = 2
EXIT_UNKNOWN = 3
EXIT_INTERRUPTED = 130


def expectation_outcome(
    verdicts: list[Verdict], expect: dict[str, list[str]]
) -> tuple[bool | None, list[str]]:
    """Tells whether the scenario's ``expect`` holds; None when it sets nothing.

    Returns the outcome and, when it does not hold, one line per broken promise.
    """
    wanted_invalid = expect.get("invalid") or []
    wanted_valid = expect.get("valid") or []
    if not wanted_invalid and not wanted_valid:
        return None, []
    status = {verdict.invariant: verdict.status for verdict in verdicts}
    misses = [
        f"{name} expected invalid, was {status.get(name, 'not checked')}"
        for name in wanted_invalid
        if status.get(name) != "invalid"
    ]
    misses += [
        f"{name} expected valid, was {status.get(name, 'not checked')}"
        for name in wanted_valid
        if status.get(name) != "valid"
    ]
    return not misses, misses


def exit_code_for(verdicts: list[Verdict], expect: dict[str, list[str]]) -> int:
    """Maps verdicts to the exit code CI gates on.

    A scenario that expects invalid verdicts (a faulty strategy's) passes when
    its expectation holds, whatever the verdicts of the invariants it does not list.
    """
    met, _ = expectation_outcome(verdicts, expect)
    if met is not None:
        return EXIT_VALID if met else EXIT_INVALID
    if any(v.status == "invalid" and v.cause != "environment" for v in verdicts):
        return EXIT_INVALID
    if any(v.status != "valid" for v in verdicts):
        return EXIT_UNKNOWN
    return EXIT_VALID


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"count": 0}
    ordered = sorted(samples)

    def at(fraction: float) -> float:
        index = min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))
        return round(ordered[index], 2)

    return {
        "count": len(ordered),
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": round(ordered[-1], 2),
    }


def write_results(path: Path, results: dict[str, Any]) -> None:
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    temporary.replace(path)


def first_sentence(text: str) -> str:
    """Cuts a reason to its first sentence; results.json keeps it whole."""
    return re.split(r"(?<=\.)\s+(?=[A-Z])", text, maxsplit=1)[0]


_STYLE = {"valid": "green", "invalid": "bold red", "unknown": "yellow"}


def verdict_table(verdicts: list[Verdict], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("invariant")
    table.add_column("verdict")
    table.add_column("cause")
    table.add_column("reason", overflow="fold")
    for verdict in verdicts:
        style = _STYLE.get(verdict.status, "")
        table.add_row(
            verdict.invariant,
            f"[{style}]{verdict.status}[/{style}]",
            verdict.cause or "",
            first_sentence(verdict.reason),
        )
    return table


def print_verdicts(console: Console, verdicts: list[Verdict], title: str) -> None:
    console.print(verdict_table(verdicts, title))
    # The table keeps the first sentence; the rest (operations left out, torn
    # lines, damage) still has to reach the reader.
    for verdict in verdicts:
        rest = verdict.reason[len(first_sentence(verdict.reason)) :].strip()
        if rest:
            console.print(f"[dim]{verdict.invariant}: {rest}[/dim]", highlight=False)
    for verdict in verdicts:
        if verdict.status != "invalid" or not verdict.evidence:
            continue
        console.print(f"[bold]{verdict.invariant}[/bold]: operations that show it")
        for item in verdict.evidence[:8]:
            console.print(
                "  " + json.dumps(item, separators=(",", ":")), soft_wrap=True
            )
