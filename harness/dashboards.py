"""The ``harness dashboards`` commands: write or check the Grafana JSON files."""

from __future__ import annotations

import importlib.util
import logging
import traceback
from pathlib import Path
from typing import Annotated

import typer

logger = logging.getLogger(__name__)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Build the Grafana dashboards from their Python definitions.",
)


@app.callback()
def main() -> None:
    # A Typer app with one command and no callback runs that command directly,
    # so `build` would be rejected as an extra argument. The callback keeps
    # `build` a subcommand.
    pass


def _dashboards_package_directories() -> list[Path]:
    """Return the folders of the `dashboards` package, found without running it."""
    try:
        spec = importlib.util.find_spec("dashboards")
    except (ImportError, ValueError):
        return []
    if spec is None or spec.submodule_search_locations is None:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


def _failure_location(err: Exception) -> str:
    """Return `file:line` of the dashboard code that raised `err`."""
    if isinstance(err, SyntaxError) and err.filename:
        return f"{err.filename}:{err.lineno}"
    frames = traceback.extract_tb(err.__traceback__)
    # The innermost frame may be in the SDK or the json module that a dashboard
    # module called, but the fix belongs in the dashboard module's own line.
    package_directories = _dashboards_package_directories()
    package_frames = [
        frame
        for frame in frames
        if any(
            Path(frame.filename).is_relative_to(directory)
            for directory in package_directories
        )
    ]
    frame = (package_frames or frames)[-1]
    return f"{frame.filename}:{frame.lineno}"


def _describe(err: Exception) -> str:
    # A SyntaxError's str() repeats the file and line that the location names.
    text = err.msg if isinstance(err, SyntaxError) else str(err)
    return f"{type(err).__name__}: {text}"


def _render_dashboards() -> tuple[Path, dict[str, str]]:
    """Import the dashboards package and render every dashboard, or exit 2.

    Returns the package's json/ folder and each file name mapped to its JSON text.
    """
    # Imported here rather than at the top, because harness/cli.py imports this
    # module for every command, and a broken dashboard module or a missing
    # grafana-foundation-sdk would otherwise break all of them.
    try:
        from dashboards import JSON_DIR, render_all

        rendered = render_all()
    # A dashboard module is arbitrary code, so any exception from importing or
    # running it is a build failure to report with its file and line.
    except Exception as err:
        logger.debug("building the dashboards failed", exc_info=True)
        typer.echo(
            f"error: building the dashboards failed: {_failure_location(err)}: "
            f"{_describe(err)}; fix the module",
            err=True,
        )
        raise typer.Exit(2) from err
    return JSON_DIR, rendered


def _compare(out: Path, rendered: dict[str, str]) -> tuple[list[str], list[str]]:
    """Compare `out` with `rendered` and return the lines for outdated and stale files.

    Outdated files are missing or differ, and `build` fixes them. Stale files
    have no dashboard module, and `build` leaves them in place.
    """
    outdated = []
    for name, text in rendered.items():
        path = out / name
        if not path.is_file():
            outdated.append(f"missing: {path}")
        elif path.read_text(encoding="utf-8") != text:
            outdated.append(f"differs: {path}")
    # Grafana's provisioning loads every JSON file of the folder, so a file
    # left from a removed dashboard would still be shown.
    stale = [
        f"stale: {path} (no dashboard module builds it). Delete the file, because "
        "`harness dashboards build` does not remove files."
        for path in sorted(out.glob("*.json"))
        if path.name not in rendered
    ]
    return outdated, stale


def _check(out: Path, rendered: dict[str, str]) -> None:
    """Print each outdated or stale file of `out`, and exit 1 if there is one."""
    outdated, stale = _compare(out, rendered)
    for problem in outdated + stale:
        typer.echo(problem, err=True)
    if outdated:
        typer.echo(
            f"{len(outdated)} dashboard file(s) out of date; run "
            f"`harness dashboards build --out {out}` and commit the result.",
            err=True,
        )
    if outdated or stale:
        raise typer.Exit(1)
    typer.echo(f"{len(rendered)} dashboard files in {out} are up to date.")


@app.command()
def build(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for the <uid>.json files. Default: the package's json/.",
            show_default=False,
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Write nothing. Exit 1 if a file in the folder is missing, "
            "differs from what the code builds or is stale, and exit 2 if the "
            "dashboards cannot be built.",
        ),
    ] = False,
) -> None:
    """Write each dashboard to OUT/<uid>.json, or check the files with --check."""
    if out is not None and out.exists() and not out.is_dir():
        typer.echo(
            f"error: --out {out} is a file; expected a folder for the dashboard "
            "JSON files. Pass a folder path.",
            err=True,
        )
        raise typer.Exit(2)
    json_dir, rendered = _render_dashboards()
    if out is None:
        out = json_dir

    if check:
        _check(out, rendered)
        return

    for name, text in rendered.items():
        path = out / name
        try:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as err:
            typer.echo(
                f"error: cannot write {path}: {err.strerror}. Pass a writable "
                "folder with --out.",
                err=True,
            )
            raise typer.Exit(2) from err
        typer.echo(f"wrote {path}")
