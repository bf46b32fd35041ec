"""The ``harness`` command: parses options, calls the library, sets exit codes.

Exit codes:
  0    every invariant valid, or the scenario's expectation met
  1    an invariant invalid by the coordinator's fault, or an expectation not met
  2    bad input or broken infrastructure, with what to do
  3    nothing invalid, but something unknown
  130  interrupted, after teardown
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from harness.console import console, err_console
from harness.console import fail as _fail
from harness.coordinator.strategies import STRATEGY_NAMES
from harness.dashboards import app as dashboards_app
from harness.errors import HarnessError
from harness.report.results import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    exit_code_for,
    print_verdicts,
)
from harness.scenario import load_scenario, scenario_schema
from harness.stack import app as stack_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="A test harness for distributed slot coordination.",
)
images_app = typer.Typer(
    no_args_is_help=True, help="Build, list and prune the project's images."
)
scenario_app = typer.Typer(no_args_is_help=True, help="Scenario file tools.")
app.add_typer(images_app, name="images")
app.add_typer(scenario_app, name="scenario")
app.add_typer(
    dashboards_app,
    name="dashboards",
    help="Build the Grafana dashboards in dashboards/ into Grafana JSON.",
)
app.add_typer(
    stack_app,
    name="stack",
    help="A long-running Compose stack with Prometheus, for watching a cluster live.",
)


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log debug lines.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def run(
    scenario_file: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    strategy: Annotated[
        str | None,
        typer.Option(
            help=f"Override the strategy: one of {', '.join(STRATEGY_NAMES)}."
        ),
    ] = None,
    instances: Annotated[
        int | None, typer.Option(help="Override the number of coordinator instances.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Override the seed.")] = None,
    coordinator_image: Annotated[
        str | None,
        typer.Option(
            help="Test your own coordinator image (already in this Docker Engine) "
            "in place of the reference coordinator."
        ),
    ] = None,
    reports: Annotated[Path, typer.Option(help="Folder for run folders.")] = Path(
        "reports"
    ),
    observe: Annotated[
        bool,
        typer.Option(
            help="Run a Prometheus that scrapes the harness and every coordinator, "
            "with the alert rules; its data stays in the run folder."
        ),
    ] = False,
    metrics_port: Annotated[
        int,
        typer.Option(
            min=0,
            max=65535,
            help="Port on 127.0.0.1 for the harness's /metrics; 0 picks a free one.",
        ),
    ] = 0,
    prometheus_port: Annotated[
        int,
        typer.Option(
            min=0,
            max=65535,
            help="Port on 127.0.0.1 for Prometheus with --observe; 0 picks one.",
        ),
    ] = 0,
) -> None:
    """Runs a scenario on Docker and checks every invariant."""
    from harness.observe import ObserveOptions
    from harness.run import check_docker, execute_run

    try:
        scenario = load_scenario(scenario_file).with_overrides(
            strategy, instances, seed, coordinator_image
        )
        client = check_docker()
        if scenario.coordinator_image:
            _require_local_image(client, scenario.coordinator_image)
        _check_observe_ports(observe, metrics_port, prometheus_port)
        runtime_image = _ensure_images()
        options = ObserveOptions(
            prometheus_image=_prometheus_image() if observe else None,
            metrics_port=metrics_port,
            prometheus_port=prometheus_port,
        )
    except HarnessError as err:
        raise _fail(err) from err

    outcome = _run_until_interrupted(
        lambda: execute_run(
            scenario,
            reports,
            console,
            runtime_image=runtime_image,
            coordinator_image=scenario.coordinator_image,
            observe=options,
        ),
        "the run folder keeps what ran",
    )
    console.print(f"run folder: {outcome.run_dir}")
    raise typer.Exit(outcome.exit_code)


def _run_until_interrupted(make_coroutine, kept: str):
    """Runs the coroutine. Ctrl-C and SIGTERM tear down and exit with 130.

    A CI runner stopping the job sends SIGTERM, which cancels the task just as
    Ctrl-C does, so containers are removed either way.
    """

    async def main_task():
        task = asyncio.current_task()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await make_coroutine()

    try:
        return asyncio.run(main_task())
    except (asyncio.CancelledError, KeyboardInterrupt) as err:
        what = (
            "terminated" if isinstance(err, asyncio.CancelledError) else "interrupted"
        )
        err_console.print(f"{what}; containers removed, {kept}")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except HarnessError as err:
        raise _fail(err) from err


def _require_local_image(client, image: str) -> None:
    """Fails before anything starts when the image is not in this engine.

    Docker would otherwise try to pull it from a registry when the first
    container starts, after Redis and Postgres are already up.
    """
    import docker.errors

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound as err:
        raise HarnessError(
            f"coordinator image {image!r} is not in this Docker Engine; build it "
            "here (docker build -t ...) or load it (docker load -i ...), then run "
            "again"
        ) from err
    except docker.errors.APIError as err:
        raise HarnessError(
            f"coordinator image {image!r} is not a valid image reference "
            f"({err.explanation or err}); use a name such as my-coordinator:1.4"
        ) from err


def _ensure_images() -> str:
    from harness.images import build_images, images_present, required_runtime_tag

    if images_present():
        return required_runtime_tag()
    console.print("images missing or out of date: building them (first time: ~2 min)")
    image_set = build_images(progress=lambda msg: console.print(f"  {msg}"))
    return image_set.runtime


def _check_observe_ports(
    observe: bool, metrics_port: int, prometheus_port: int
) -> None:
    """Reject port options that cannot work, before any container starts."""
    from harness.observe import require_free_port

    if prometheus_port and not observe:
        raise HarnessError(
            f"--prometheus-port {prometheus_port} needs --observe, which starts "
            "Prometheus; add --observe or drop the option"
        )
    if metrics_port and metrics_port == prometheus_port:
        raise HarnessError(
            f"--metrics-port and --prometheus-port are both {metrics_port}; the "
            "harness and Prometheus each need their own port"
        )
    require_free_port(metrics_port, "--metrics-port")
    if observe:
        require_free_port(prometheus_port, "--prometheus-port")


def _prometheus_image() -> str:
    from harness.images import ensure_prometheus_image

    return ensure_prometheus_image(progress=lambda msg: console.print(f"  {msg}"))


@app.command()
def observe(
    run_dir: Annotated[
        Path, typer.Argument(help="The folder of a run made with --observe.")
    ],
    port: Annotated[
        int,
        typer.Option(
            min=0, max=65535, help="Port on 127.0.0.1 for Prometheus; 0 picks one."
        ),
    ] = 0,
) -> None:
    """Serves an observed run's saved Prometheus data again, until Ctrl-C."""
    from harness.observe import (
        observed_range,
        range_from_files,
        require_free_port,
        require_saved_data,
        serve_saved,
    )

    try:
        require_saved_data(run_dir)
        try:
            start, end = observed_range(run_dir)
        except HarnessError as err:
            # The data is what matters; the saved range only helps to query it.
            start, end = range_from_files(run_dir)
            err_console.print(
                f"[yellow]{escape(str(err))}; the range below is estimated from "
                "history.jsonl and the data files[/yellow]",
                highlight=False,
            )
        require_free_port(port, "--port")
        server = serve_saved(run_dir, _prometheus_image(), port)
    except HarnessError as err:
        raise _fail(err) from err
    console.print(
        f"prometheus: {server.url}, serving {run_dir} "
        f"(unix time {start:.0f} to {end:.0f}); Ctrl-C stops it"
    )
    # Blocked, then waited for: Ctrl-C and SIGTERM both end the wait, and
    # neither can land half-way through the stop below.
    stopping = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stopping)
    try:
        signal.sigwait(stopping)
    finally:
        server.stop()
        console.print("prometheus stopped; the data stays in the run folder")


@app.command()
def check(
    run_dir: Annotated[
        Path, typer.Argument(help="A run folder under reports/, or its history.jsonl.")
    ],
) -> None:
    """Checks a saved run folder (or its history.jsonl) again, even if interrupted."""
    from harness.report.results import expectation_outcome
    from harness.run import check_run_dir

    if run_dir.name == "history.jsonl" and run_dir.is_file():
        run_dir = run_dir.parent
    try:
        if not run_dir.is_dir():
            raise HarnessError(
                f"run folder {str(run_dir)!r} not found; pass a folder that "
                "`harness run` wrote under reports/"
            )
        verdicts, header = check_run_dir(run_dir)
    except HarnessError as err:
        raise _fail(err) from err
    print_verdicts(console, verdicts, f"verdicts of {run_dir.name}")
    expect = (header.get("scenario") or {}).get("expect") or {}
    _met, misses = expectation_outcome(verdicts, expect)
    for miss in misses:
        console.print(f"[red]expectation not met:[/red] {miss}")
    raise typer.Exit(exit_code_for(verdicts, expect))


@app.command()
def zoo(
    quick: Annotated[
        bool, typer.Option(help="One seed instead of five: about ten minutes.")
    ] = False,
    seeds: Annotated[
        int | None, typer.Option(min=1, max=100, help="Seeds 1..N per pairing.")
    ] = None,
    strategy: Annotated[
        list[str] | None,
        typer.Option(help="Only these strategies (repeat the option for several)."),
    ] = None,
    scenarios: Annotated[
        Path, typer.Option(help="Folder with strategies/ and faults/ scenarios.")
    ] = Path("scenarios/zoo"),
    reports: Annotated[
        Path, typer.Option(help="The zoo writes to REPORTS/zoo/<id>/.")
    ] = Path("reports"),
) -> None:
    """Proves detection: faulty strategies caught, correct ones never blamed.

    Every faulty strategy runs under the scenario that exposes it, every
    correct strategy under every fault scenario, over several seeds. Exits 1
    if a faulty strategy escapes or a correct one is flagged.
    """
    from harness import zoo as zoo_module
    from harness.nemesis import preflight
    from harness.run import check_docker

    try:
        entries = zoo_module.plan_zoo(scenarios)
        if strategy:
            unknown = sorted(set(strategy) - set(STRATEGY_NAMES))
            if unknown:
                raise HarnessError(
                    f"--strategy {', '.join(unknown)} is not a strategy; use one of "
                    f"{', '.join(STRATEGY_NAMES)}"
                )
            entries = [e for e in entries if e.strategy in strategy]
        for entry in entries:
            preflight(entry.scenario.faults)
        check_docker()
        runtime_image = _ensure_images()
        folder = zoo_module.new_zoo_folder(reports)
    except HarnessError as err:
        raise _fail(err) from err
    chosen = tuple(range(1, seeds + 1)) if seeds else None
    chosen = chosen or (zoo_module.QUICK_SEEDS if quick else zoo_module.FULL_SEEDS)
    the_zoo = zoo_module.Zoo(entries, chosen, folder, console, runtime_image)
    console.print(
        f"zoo {folder.name}: {len(entries)} pairings x {len(chosen)} seeds = "
        f"{the_zoo.total} runs; each run's folder is under {folder / 'runs'}"
    )
    status = "interrupted"
    try:
        _run_until_interrupted(the_zoo.execute, "zoo.json keeps what ran")
        status = "completed"
    finally:
        summary = the_zoo.summary(status)
        path = zoo_module.save_zoo(folder, summary)
        if status == "completed":
            console.print(zoo_module.render_strategy_table(summary["table"]))
            console.print(zoo_module.render_fault_table(summary["faults_table"]))
        console.print(
            f"zoo: {summary['runs_done']}/{summary['planned_runs']} runs in "
            f"{summary['duration_s'] / 60:.1f} min, "
            f"{len(summary['escapes'])} escapes, "
            f"{len(summary['false_positives'])} false positives; {path}"
        )
    raise typer.Exit(summary["exit_code"])


@app.command()
def replay(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by a run.")],
    tries: Annotated[
        int,
        typer.Option(
            min=1,
            max=50,
            help="Runs at most this many times, until the verdict matches; a race "
            "may need more than one.",
        ),
    ] = 3,
    reports: Annotated[Path, typer.Option(help="Folder for run folders.")] = Path(
        "reports"
    ),
) -> None:
    """Runs a saved run again with its scenario and seed, to reproduce its verdict.

    Exits 0 when a try matches: every invariant invalid then is invalid
    again, or, for a valid run, everything is valid again.
    """
    from harness.replay import load_replay, replay_run
    from harness.run import check_docker

    try:
        plan = load_replay(run_dir)
        client = check_docker()
        if plan.coordinator_image:
            _require_local_image(client, plan.coordinator_image)
        runtime_image = _ensure_images()
    except HarnessError as err:
        raise _fail(err) from err
    code = _run_until_interrupted(
        lambda: replay_run(plan, tries, reports, console, runtime_image),
        "each try's run folder keeps what ran",
    )
    raise typer.Exit(code)


@app.command()
def down(
    all_: Annotated[
        bool,
        typer.Option(
            "--all", help="Also remove project resources that belong to no run."
        ),
    ] = False,
) -> None:
    """Removes containers and networks of runs whose harness process is gone."""
    from harness.run import check_docker
    from harness.topology.labels import remove_orphans

    try:
        client = check_docker()
    except HarnessError as err:
        raise _fail(err) from err
    removed = remove_orphans(client, include_all=all_)
    console.print(
        f"removed {len(removed.containers)} containers and "
        f"{len(removed.networks)} networks"
    )
    for run_id in removed.skipped_live_runs:
        console.print(f"left run {run_id} alone: its harness process is alive")


@images_app.command("build")
def images_build(
    force: Annotated[bool, typer.Option(help="Rebuild even when up to date.")] = False,
) -> None:
    """Builds the base and runtime images with no registry (cached)."""
    from harness.images import build_images
    from harness.run import check_docker

    try:
        check_docker()
        image_set = build_images(
            progress=lambda msg: console.print(f"  {msg}"), force=force
        )
    except HarnessError as err:
        raise _fail(err) from err
    console.print(f"base: {image_set.base}\nruntime: {image_set.runtime}")


@images_app.command("list")
def images_list() -> None:
    """Lists the project's images and whether each matches the current source."""
    from harness.images import list_images
    from harness.run import check_docker

    try:
        check_docker()
    except HarnessError as err:
        raise _fail(err) from err
    table = Table()
    for column in ("tag", "role", "size", "created", "up to date"):
        table.add_column(column)
    for image in list_images():
        table.add_row(
            image.tag,
            image.role,
            f"{image.size / 1e6:.0f} MB",
            str(image.created),
            "yes" if image.up_to_date else "no",
        )
    console.print(table)


@images_app.command("prune")
def images_prune() -> None:
    """Removes the project's images that the current source no longer needs."""
    from harness.images import remove_stale_images
    from harness.run import check_docker

    try:
        check_docker()
        removed = remove_stale_images(progress=lambda msg: console.print(f"  {msg}"))
    except HarnessError as err:
        raise _fail(err) from err
    console.print(f"removed {len(removed)} images")


@scenario_app.command("schema")
def scenario_schema_command() -> None:
    """Prints the JSON Schema of scenario files."""
    sys.stdout.write(scenario_schema() + "\n")


@scenario_app.command("validate")
def scenario_validate(path: Annotated[Path, typer.Argument()]) -> None:
    """Validates a scenario file without starting anything."""
    try:
        scenario = load_scenario(path)
    except HarnessError as err:
        raise _fail(err) from err
    console.print(json.dumps(scenario.model_dump(mode="json"), indent=2))


@app.command()
def doctor() -> None:
    """Reports Docker, images, kernel features and disk, each with its fix."""
    from harness.doctor import run_checks

    results = run_checks()
    table = Table()
    for column in ("check", "status", "detail / fix"):
        table.add_column(column)
    worst = 0
    for item in results:
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}[item.status]
        table.add_row(item.name, f"[{colour}]{item.status}[/{colour}]", item.detail)
        if item.status == "fail":
            worst = EXIT_BAD_INPUT
    console.print(table)
    raise typer.Exit(worst)
