"""The consoles the commands print to, and the exit for a HarnessError."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from harness.errors import HarnessError

# Rich falls back to 80 columns when output is not a terminal (a CI log),
# which folds the verdict table's reasons into narrow columns.
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def fail(err: HarnessError) -> typer.Exit:
    """Print the error to stderr and return the exit carrying its exit code."""
    # Escaped, because messages quote user input such as YAML with brackets,
    # which rich would otherwise read as markup and drop.
    err_console.print(
        f"[bold red]error:[/bold red] {escape(str(err))}",
        highlight=False,
        soft_wrap=True,
    )
    return typer.Exit(err.exit_code)
