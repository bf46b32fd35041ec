"""results.json, the exit code a run earns, and the verdict table."""

from __future__ import annotations

import json
import os
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
# A prefix shared by every batch id of a counterexample is cut when at least
# this long, so the rows fit in 120 columns.
MIN_BATCH_PREFIX = 10


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
    # Invariants broken by the same operations share one table, so that
    # several verdicts on one lost slot still fit on a screen.
    first_shown_by: dict[str, str] = {}
    for verdict in verdicts:
        if verdict.status != "invalid":
            continue
        if verdict.counterexample is not None:
            key = _shown_key(verdict.counterexample)
            if key in first_shown_by:
                console.print(
                    f"[bold]{verdict.invariant}[/bold]: counterexample with the "
                    f"same operations as {first_shown_by[key]} above",
                    highlight=False,
                )
                continue
            first_shown_by[key] = verdict.invariant
            console.print(counterexample_table(verdict.counterexample))
            for note in counterexample_notes(verdict.counterexample):
                console.print(f"  {note}", highlight=False)
            continue
        if not verdict.evidence:
            continue
        # Verdicts checked without their history have no counterexample.
        console.print(f"[bold]{verdict.invariant}[/bold]: operations that show it")
        for item in verdict.evidence[:8]:
            console.print(
                "  " + json.dumps(item, separators=(",", ":")), soft_wrap=True
            )


def counterexample_table(counterexample: dict[str, Any]) -> Table:
    """Build the table of a counterexample's operations and fault windows by time.

    Takes the JSON of ``harness.report.counterexample.Counterexample``, as
    results.json keeps it. Each fault window gives a row for its start and
    one for its end, marked ``fault <kind> <phase>``.
    """
    operations = counterexample.get("operations") or []
    batch_prefix = _batch_prefix(operations)
    table = Table(
        title=f"{counterexample.get('invariant', '')}: counterexample",
        title_justify="left",
    )
    table.add_column("time s", justify="right")
    table.add_column("instance")
    table.add_column("process", justify="right")
    table.add_column("operation")
    table.add_column("what", overflow="fold")
    table.add_column("reply or error", overflow="fold")

    rows: list[tuple[int, int, list[str], str]] = []
    for op in operations:
        row = [
            _seconds(op["time_ns"]),
            op.get("instance") or "",
            str(op["process"]),
            f"{op['f']} {op['type']}",
            _subject(op["value"], batch_prefix),
            _reply(op["type"], op["value"]),
        ]
        rows.append((op["time_ns"], op["index"], row, ""))
    for window in counterexample.get("windows") or []:
        targets = ", ".join(window.get("targets") or [])
        for phase_name in ("start", "end"):
            phase = window.get(phase_name)
            if phase is None:
                continue
            row = [
                _seconds(phase["time_ns"]),
                "",
                "",
                f"fault {window['f']} {phase_name}",
                targets,
                _detail(phase.get("detail") or {}),
            ]
            rows.append((phase["time_ns"], phase["index"], row, "yellow"))
    for _time_ns, _index, row, style in sorted(rows, key=lambda r: (r[0], r[1])):
        table.add_row(*row, style=style or None)
    return table


def counterexample_notes(counterexample: dict[str, Any]) -> list[str]:
    """Return the lines printed under a counterexample's table.

    They are the facts it shows, how many related operations it left out, and
    the batch id prefix the table cut.
    """
    operations = counterexample.get("operations") or []
    related = counterexample.get("related_operations", len(operations))
    notes = list(counterexample.get("facts") or [])
    notes.append(f"{len(operations)} of {related} related operations shown")
    batch_prefix = _batch_prefix(operations)
    if batch_prefix:
        notes.append(f"batch ids are shown without their prefix {batch_prefix}")
    return notes


def _shown_key(counterexample: dict[str, Any]) -> str:
    operations = [op["index"] for op in counterexample.get("operations") or []]
    windows = counterexample.get("windows") or []
    return json.dumps([operations, windows], sort_keys=True)


def _seconds(time_ns: int) -> str:
    return f"{time_ns / 1e9:.3f}"


def _subject(value: dict[str, Any], batch_prefix: str) -> str:
    """Name the batch, without ``batch_prefix``, and the content or failure id."""
    parts = []
    if "batch_id" in value:
        parts.append(str(value["batch_id"]).removeprefix(batch_prefix))
    for field in ("text_storage_id", "failure_id"):
        if field in value:
            parts.append(str(value[field]))
    return " ".join(parts)


def _batch_prefix(operations: list[dict[str, Any]]) -> str:
    """Return the prefix every batch id shares, up to a dash, if it is long.

    The harness names batches ``<run id>-b000``, so in one run's table the
    run id repeats on every row and would wrap the column.
    """
    batch_ids = {
        str(op["value"]["batch_id"]) for op in operations if "batch_id" in op["value"]
    }
    prefix = os.path.commonprefix(sorted(batch_ids))
    prefix = prefix[: prefix.rfind("-") + 1]
    if len(prefix) < MIN_BATCH_PREFIX:
        return ""
    return prefix


def _reply(type_: str, value: dict[str, Any]) -> str:
    if type_ == "ok":
        if "slot_id" not in value:
            return "ok"
        replay = ", replay" if value.get("created") is False else ""
        return f"slot {value['slot_id']}{replay}"
    if type_ in ("fail", "info"):
        error = str(value.get("error", type_))
        return f"{error} ({value['status']})" if "status" in value else error
    return ""


def _detail(detail: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in detail.items())
