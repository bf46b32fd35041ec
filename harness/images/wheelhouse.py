"""The wheelhouse: the runtime image's wheels, downloaded on the host by pip."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from harness.errors import InfrastructureError
from harness.images.process import CommandFailed, run_command
from harness.images.recipe import (
    BUILD_DIR,
    PIP_TARGET_ARGS,
    RECIPE_DIR,
    requirements_path,
    wheelhouse_hash,
)

PIP_TIMEOUT_S = 600
HEARTBEAT_S = 10
# Written last into a finished wheelhouse, so that a folder without it is a
# download that was interrupted.
COMPLETE_MARKER = ".complete"


def wheelhouse_dir(recipe_dir: Path = RECIPE_DIR) -> Path:
    return BUILD_DIR / "wheelhouse" / wheelhouse_hash(recipe_dir)


def ensure_wheelhouse(
    progress: Callable[[str], None],
    force: bool = False,
    recipe_dir: Path = RECIPE_DIR,
) -> Path:
    """Return build/wheelhouse/<hash> with every wheel of the requirements.

    The wheels are downloaded with `pip download` unless a complete wheelhouse
    for the same requirements exists and force is false. The download goes to
    a temporary folder that is renamed when done, so an interrupted download
    leaves no wheelhouse that looks complete.
    """
    target = wheelhouse_dir(recipe_dir)
    if (target / COMPLETE_MARKER).exists() and not force:
        progress(f"wheelhouse: {target} is up to date")
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(
        tempfile.mkdtemp(prefix=f"{target.name}.partial-", dir=target.parent)
    )
    try:
        started = time.monotonic()
        _download(requirements_path(recipe_dir), partial, progress)
        (partial / COMPLETE_MARKER).write_text("")
        if target.exists():
            shutil.rmtree(target)
        os.rename(partial, target)
    finally:
        if partial.exists():
            shutil.rmtree(partial)

    wheels = sorted(path.name for path in target.glob("*.whl"))
    progress(
        f"wheelhouse: downloaded {len(wheels)} wheels into {target} "
        f"in {time.monotonic() - started:.1f} s"
    )
    return target


def _download(requirements: Path, dest: Path, progress: Callable[[str], None]) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--no-input",
        *PIP_TARGET_ARGS,
        f"--requirement={requirements}",
        f"--dest={dest}",
    ]
    progress(f"wheelhouse: pip download of {requirements}")

    def heartbeat(elapsed: float, last_line: str) -> None:
        progress(f"wheelhouse: pip download running for {elapsed:.0f} s: {last_line}")

    try:
        run_command(
            command,
            timeout_s=PIP_TIMEOUT_S,
            heartbeat_s=HEARTBEAT_S,
            on_heartbeat=heartbeat,
        )
    except CommandFailed as err:
        raise InfrastructureError(
            f"pip download of {requirements} failed: {err.summary}. Check that "
            f"PyPI (or the index in PIP_INDEX_URL) is reachable and that every "
            f"pinned version has a wheel for CPython 3.11 on manylinux2014 "
            f"x86-64. If pip itself is missing, run `{sys.executable} -m "
            f"ensurepip`. Last output:\n{err.output_tail()}"
        ) from err
