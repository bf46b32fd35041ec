"""Exit codes from verdicts and expectations, and latency percentiles."""

from __future__ import annotations

from harness.checkers.verdict import Verdict
from harness.report.results import (
    exit_code_for,
    expectation_outcome,
    first_sentence,
    percentiles,
)


def verdicts(**statuses: str) -> list[Verdict]:
    return [
        Verdict(
            invariant=name.replace("_", "-"),
            status=status,
            reason="r",
            cause="coordinator" if status == "invalid" else None,
        )
        for name, status in statuses.items()
    ]


def test_all_valid_exits_0():
    assert exit_code_for(verdicts(liveness="valid", no_overfill="valid"), {}) == 0


def test_invalid_exits_1():
    assert exit_code_for(verdicts(liveness="invalid", no_overfill="unknown"), {}) == 1


def test_unknown_exits_3():
    assert exit_code_for(verdicts(liveness="valid", no_overfill="unknown"), {}) == 3


def test_environment_cause_does_not_fail():
    lost = Verdict("no-lost-slot", "invalid", "volatile Redis", "environment")

    assert exit_code_for([lost], {}) == 3


def test_expectation_met_exits_0():
    found = verdicts(liveness="invalid", no_lost_slot="invalid", no_overfill="valid")

    assert exit_code_for(found, {"invalid": ["liveness", "no-lost-slot"]}) == 0


def test_expectation_missed_exits_1():
    found = verdicts(liveness="invalid", no_lost_slot="valid")

    met, misses = expectation_outcome(found, {"invalid": ["no-lost-slot"]})

    assert met is False
    assert misses == ["no-lost-slot expected invalid, was valid"]
    assert exit_code_for(found, {"invalid": ["no-lost-slot"]}) == 1


def test_no_expectation_is_none():
    assert expectation_outcome(verdicts(liveness="valid"), {}) == (None, [])


def test_percentiles_exact():
    samples = [float(n) for n in range(1, 101)]

    assert percentiles(samples) == {
        "count": 100,
        "p50": 51.0,
        "p95": 95.0,
        "p99": 99.0,
        "max": 100.0,
    }
    assert percentiles([]) == {"count": 0}


def test_first_sentence_keeps_abbreviations():
    text = "Slot s-1 differs, e.g. slot s-2 holds c-1. Left out 3 operations."

    assert first_sentence(text) == "Slot s-1 differs, e.g. slot s-2 holds c-1."


def test_run_summary_counts_by_type():
    from harness.run import run_summary

    results = {
        "counts": {"content:ok": 5, "content:info": 2, "read:ok": 1, "failure:fail": 3},
        "faults": {"kill": 9, "watch-conflict": 478},
    }

    assert run_summary(results) == (
        "operations: 11 (ok 6, fail 3, info 2); faults: kill x9, watch-conflict x478 "
        "(watch-conflict counts injected conflicts)"
    )
