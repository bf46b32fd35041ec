"""The ``harness dashboards`` commands: write or check the Grafana JSON files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dashboards import JSON_DIR, render_all

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


def _compare(out: Path, rendered: dict[str, str]) -> list[str]:
    """Return one line per file in `out` that differs from `rendered`."""
    problems = []
    for name, text in rendered.items():
        path = out / name
        if not path.is_file():
            problems.append(f"missing: {path}")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"differs: {path}")
    # Grafana's provisioning loads every JSON file of the folder, so a file
    # left from a removed dashboard would still be shown.
    for path in sorted(out.glob("*.json")):
        if path.name not in rendered:
            problems.append(f"stale: {path} (no dashboard module builds it)")
    return problems


@app.command()
def build(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Folder for the <uid>.json files. Default: the package's json/.",
        ),
    ] = JSON_DIR,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Write nothing; exit 1 if a file in the folder is missing or "
            "differs from what the code builds.",
        ),
    ] = False,
) -> None:
    """Write each dashboard to OUT/<uid>.json, or check the files with --check."""
    if out.exists() and not out.is_dir():
        typer.echo(
            f"error: --out {out} is a file; expected a folder for the dashboard "
            "JSON files. Pass a folder path.",
            err=True,
        )
        raise typer.Exit(2)
    rendered = render_all()

    if check:
        problems = _compare(out, rendered)
        for problem in problems:
            typer.echo(problem, err=True)
        if problems:
            typer.echo(
                f"{len(problems)} dashboard file(s) out of date; run "
                f"`harness dashboards build --out {out}` and commit the result.",
                err=True,
            )
            raise typer.Exit(1)
        typer.echo(f"{len(rendered)} dashboard files in {out} are up to date.")
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
