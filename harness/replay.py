"""Running a saved run again, with its scenario and seed, to reproduce its verdict.

The seed fixes the workload and the fault schedule, but not the machine's
timing, so a race may take more than one try: a replay runs up to ``tries``
times and stops at the first that matches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from harness.errors import HarnessError
from harness.report.results import EXIT_INVALID, EXIT_VALID
from harness.run import check_run_dir, execute_run
from harness.scenario import Scenario, load_scenario
from harness.topology import DockerCluster


@dataclass(frozen=True)
class ReplayPlan:
    run_dir: Path
    scenario: Scenario
    original: dict[str, str]  # invariant -> status of the saved run
    coordinator_image: str | None
    runtime_image: str | None

    @property
    def invalid(self) -> list[str]:
        return sorted(i for i, status in self.original.items() if status == "invalid")


def load_replay(run_dir: Path) -> ReplayPlan:
    """Reads the saved scenario and checks the saved history for its verdicts.

    The verdicts come from checking the history again rather than from
    results.json, so a run that was killed before writing its results can
    be replayed too.
    """
    if not run_dir.is_dir():
        raise HarnessError(
            f"run folder {str(run_dir)!r} not found; pass a folder that "
            "`harness run` wrote under reports/"
        )
    scenario_path = run_dir / "scenario.yaml"
    if not scenario_path.is_file():
        raise HarnessError(
            f"{scenario_path} is missing, so the run cannot be replayed; pass a "
            "folder that `harness run` wrote"
        )
    scenario = load_scenario(scenario_path)
    verdicts, _header = check_run_dir(run_dir)
    original = {v.invariant: v.status for v in verdicts}
    coordinator_image, runtime_image = _saved_images(run_dir / "results.json")
    return ReplayPlan(run_dir, scenario, original, coordinator_image, runtime_image)


def _saved_images(path: Path) -> tuple[str | None, str | None]:
    """Returns (the user's coordinator image or None, the runtime image then)."""
    try:
        versions = json.loads(path.read_text(encoding="utf-8")).get("versions") or {}
    except (OSError, ValueError, AttributeError):
        return None, None
    runtime = versions.get("runtime_image")
    coordinator = versions.get("coordinator_image")
    # The reference coordinator runs from the runtime image, so only a user's
    # own image must be the same again.
    return (coordinator if coordinator and coordinator != runtime else None), runtime


def matches(original: dict[str, str], replayed: dict[str, str]) -> bool:
    """Tells whether a replay shows the saved verdict.

    Every invariant invalid in the saved run must be invalid again; a saved
    run with nothing invalid must again have nothing invalid. Other verdicts
    may differ, as a race can break a second invariant on one try and not
    on another.
    """
    invalid = {i for i, status in original.items() if status == "invalid"}
    again = {i for i, status in replayed.items() if status == "invalid"}
    if not invalid:
        return not again
    return invalid <= again


async def replay_run(
    plan: ReplayPlan,
    tries: int,
    reports_dir: Path,
    console: Console,
    runtime_image: str,
    cluster: DockerCluster | None = None,
) -> int:
    """Runs the scenario up to ``tries`` times and returns 0 at the first match.

    With ``cluster`` (the test session's), every try runs on it after a state
    reset; otherwise each try starts and removes its own.
    """
    wanted = ", ".join(plan.invalid) or "every invariant valid"
    console.print(
        f"replaying {plan.run_dir.name}: seed {plan.scenario.seed}, strategy "
        f"{plan.scenario.strategy}; the saved verdict: {wanted}"
    )
    if plan.runtime_image and plan.runtime_image != runtime_image:
        console.print(
            f"[yellow]the harness or reference coordinator changed since that run "
            f"(image {plan.runtime_image}, now {runtime_image})[/yellow]"
        )
    for attempt in range(1, tries + 1):
        console.rule(f"try {attempt} of {tries}")
        outcome = await execute_run(
            plan.scenario,
            reports_dir,
            console,
            runtime_image=runtime_image,
            coordinator_image=plan.coordinator_image,
            cluster=cluster,
        )
        replayed = {v.invariant: v.status for v in outcome.verdicts}
        if matches(plan.original, replayed):
            console.print(
                f"[green]reproduced on try {attempt} of {tries}[/green]: {wanted}; "
                f"run folder {outcome.run_dir}"
            )
            return EXIT_VALID
    console.print(
        f"[red]not reproduced in {tries} tries[/red]: the saved verdict was {wanted}; "
        "try more with --tries, or compare the run folders"
    )
    return EXIT_INVALID
