"""The runtime image: the base image plus a venv, the harness code and entrypoints."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
from docker.models.images import Image

from harness.errors import InfrastructureError
from harness.images.recipe import (
    BASE_ID_LABEL,
    BUILD_TMP_DIR,
    HASH_LABEL,
    PROJECT,
    PROJECT_LABEL,
    PROJECT_ROOT,
    RECIPE_DIR,
    ROLE_LABEL,
    RUNTIME_SOURCES,
    runtime_recipe_dir,
    runtime_source_files,
    runtime_tag,
)

BUILD_LOG_LINES = 30


def build_runtime_image(
    client: docker.DockerClient,
    *,
    base_tag: str,
    base_id: str,
    runtime_digest: str,
    wheelhouse: Path,
    progress: Callable[[str], None],
    recipe_dir: Path = RECIPE_DIR,
    source_root: Path = PROJECT_ROOT,
) -> Image:
    """Build the runtime image on base_tag, tag it with runtime_digest, return it.

    The build runs with no network, so pip can only install the wheelhouse.
    """
    return build_on_base(
        client,
        role="runtime",
        tag=runtime_tag(runtime_digest),
        digest=runtime_digest,
        base_tag=base_tag,
        base_id=base_id,
        fill=lambda context: _fill_context(
            context, wheelhouse, recipe_dir, source_root, progress
        ),
        progress=progress,
    )


def build_on_base(
    client: docker.DockerClient,
    *,
    role: str,
    tag: str,
    digest: str,
    base_tag: str,
    base_id: str,
    fill: Callable[[Path], None],
    progress: Callable[[str], None],
) -> Image:
    """Build an image of `role` on base_tag from a scratch context that fill writes.

    The image carries the project's labels, its hash and its base's id. The
    Dockerfile is images/<role>/Dockerfile, and the context is removed after.
    """
    BUILD_TMP_DIR.mkdir(parents=True, exist_ok=True)
    context = Path(tempfile.mkdtemp(prefix=f"{role}-context-", dir=BUILD_TMP_DIR))
    try:
        fill(context)
        progress(f"{role} image: building {tag} from {base_tag}")
        started = time.monotonic()
        image = docker_build(
            client,
            context,
            tag,
            base_tag=base_tag,
            labels={
                PROJECT_LABEL: PROJECT,
                ROLE_LABEL: role,
                HASH_LABEL: digest,
                BASE_ID_LABEL: base_id,
            },
            dockerfile_hint=f"images/{role}/Dockerfile",
        )
    finally:
        shutil.rmtree(context)
    progress(
        f"{role} image: built {tag} ({image.short_id}) "
        f"in {time.monotonic() - started:.1f} s"
    )
    return image


def _fill_context(
    context: Path,
    wheelhouse: Path,
    recipe_dir: Path,
    source_root: Path,
    progress: Callable[[str], None],
) -> None:
    """Copy the recipe, the wheels and the harness code into a build context.

    The layout is the one the Dockerfile expects: the files of images/runtime
    at the top, wheels/ and app/harness/.
    """
    shutil.copytree(runtime_recipe_dir(recipe_dir), context, dirs_exist_ok=True)
    # COPY keeps the mode, and a checkout can lose the executable bit.
    for entrypoint in context.glob("slot-*"):
        entrypoint.chmod(0o755)
    shutil.copytree(wheelhouse, context / "wheels", ignore=_ignore_markers)

    for entry in RUNTIME_SOURCES:
        if not (source_root / entry).exists():
            progress(f"runtime image: {entry} not found, so containers cannot run it")
    app = context / "app"
    for relative in runtime_source_files(source_root):
        destination = app / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source_root / relative, destination)


def _ignore_markers(directory: str, names: list[str]) -> list[str]:
    return [name for name in names if name.startswith(".")]


def docker_build(
    client: docker.DockerClient,
    context: Path,
    tag: str,
    *,
    base_tag: str,
    labels: dict[str, str],
    dockerfile_hint: str = "images/runtime/Dockerfile",
) -> Image:
    """Build context into tag with the classic builder and no network."""
    try:
        image, _log = client.images.build(
            path=os.fspath(context),
            tag=tag,
            buildargs={"BASE_IMAGE": base_tag},
            labels=labels,
            network_mode="none",
            pull=False,
            rm=True,
            forcerm=True,
        )
    except docker.errors.BuildError as err:
        raise InfrastructureError(
            f"docker build of {tag} failed: {err.msg}. The Dockerfile is "
            f"{dockerfile_hint}. Last build output:\n{_log_tail(err)}"
        ) from err
    except docker.errors.DockerException as err:
        raise InfrastructureError(
            f"docker build of {tag} failed: {err}. Check the engine's free "
            "space and its log (journalctl -u docker)."
        ) from err
    return image


def _log_tail(err: docker.errors.BuildError) -> str:
    lines: list[str] = []
    for chunk in err.build_log:
        text = chunk.get("stream") or chunk.get("error") or ""
        lines.extend(line for line in text.splitlines() if line.strip())
    return "\n".join(lines[-BUILD_LOG_LINES:]) or "(no output)"
