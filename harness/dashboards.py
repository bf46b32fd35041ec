"""The ``harness dashboards`` commands: write or check the Grafana JSON files."""

from __future__ import annotations

import importlib.util
import logging
import os
import traceback
import uuid
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
        # Bytes, so that a file that is not UTF-8 counts as differing instead of
        # failing to decode.
        elif path.read_bytes() != text.encode("utf-8"):
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


def _check_summary(
    outdated_count: int, stale_count: int, out: Path, is_committed_folder: bool
) -> str:
    """Return the summary line: the count of each kind of problem and its fix."""
    build_command = (
        "harness dashboards build"
        if is_committed_folder
        else f"harness dashboards build --out {out}"
    )
    fixes = []
    if outdated_count:
        rewrite = f"run `{build_command}` to rewrite the out-of-date file(s)"
        # Only the package's own folder is committed. A folder given with --out
        # may be outside the repository.
        if is_committed_folder:
            rewrite += " and commit the result"
        fixes.append(rewrite)
    if stale_count:
        fixes.append("delete the stale file(s)")
    advice = ", and ".join(fixes)
    total = outdated_count + stale_count
    counts = f"{outdated_count} out of date (missing or differs), {stale_count} stale"
    return (
        f"{total} dashboard file(s) need changes: {counts}. "
        f"{advice[0].upper()}{advice[1:]}."
    )


def _check(out: Path, rendered: dict[str, str], is_committed_folder: bool) -> None:
    """Print each outdated or stale file of `out`, and exit 1 if there is one."""
    outdated, stale = _compare(out, rendered)
    for problem in outdated + stale:
        typer.echo(problem, err=True)
    if outdated or stale:
        typer.echo(
            _check_summary(len(outdated), len(stale), out, is_committed_folder),
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"{len(rendered)} dashboard files in {out} are up to date.")


def _write_replacing(path: Path, text: str) -> None:
    """Write `text` to a new file beside `path`, then rename it over `path`.

    The rename replaces the directory entry, so a symlink at `path` is replaced
    by the file instead of followed out of the folder, and a reader never sees
    a half-written file.
    """
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    # O_EXCL fails on any existing entry, a symlink included. Mode 0o666 leaves
    # the permissions to the umask, as for any new file.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(text.encode("utf-8"))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


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
    is_committed_folder = out.resolve() == json_dir.resolve()

    if check:
        _check(out, rendered, is_committed_folder)
        return

    for name, text in rendered.items():
        path = out / name
        try:
            out.mkdir(parents=True, exist_ok=True)
            _write_replacing(path, text)
        except OSError as err:
            typer.echo(
                f"error: cannot write {path}: {err.strerror}. Pass a writable "
                "folder with --out.",
                err=True,
            )
            raise typer.Exit(2) from err
        typer.echo(f"wrote {path}")
