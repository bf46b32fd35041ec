"""The base image: a Debian root file system by debootstrap, imported into Docker."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
from docker.models.images import Image

from harness.errors import InfrastructureError
from harness.images.process import CommandFailed, run_command
from harness.images.recipe import (
    BASE_EXCLUDES,
    BASE_IMAGE_CHANGES,
    BASE_REPOSITORY,
    BUILD_TMP_DIR,
    HASH_LABEL,
    PROJECT,
    PROJECT_LABEL,
    ROLE_LABEL,
    BaseRecipe,
    debian_mirror,
)

# debootstrap of the recipe took 50 s on a 2-core machine with a fast link
# to deb.debian.org. The limit leaves room for a slow mirror.
DEBOOTSTRAP_TIMEOUT_S = 1800
TAR_TIMEOUT_S = 600
HEARTBEAT_S = 10

Progress = Callable[[str], None]


def check_base_tools() -> None:
    """Raise InfrastructureError unless this host can run debootstrap and tar."""
    if shutil.which("debootstrap") is None:
        raise InfrastructureError(
            "debootstrap not found on PATH, and the base image is built with it: "
            "apt-get install debootstrap debian-archive-keyring gpgv"
        )
    if shutil.which("tar") is None:
        raise InfrastructureError("tar not found on PATH: apt-get install tar")
    if os.geteuid() != 0:
        raise InfrastructureError(
            f"building the base image needs root, because debootstrap creates "
            f"device files and changes owners, but this process runs as uid "
            f"{os.geteuid()}: run the build as root"
        )


def build_base_image(
    client: docker.DockerClient, recipe: BaseRecipe, progress: Progress
) -> Image:
    """Build the base image of recipe, tag it with its hash, and return it.

    The root file system goes into a scratch folder under build/images-tmp,
    which is removed afterwards, whether the build succeeded or not.
    """
    check_base_tools()
    BUILD_TMP_DIR.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"base-{os.getpid()}-", dir=BUILD_TMP_DIR))
    try:
        image = _build_in(workdir, client, recipe, progress)
    except BaseException as err:
        # A failed cleanup must not hide the error that stopped the build.
        try:
            remove_build_folder(workdir)
        except InfrastructureError as cleanup_error:
            err.add_note(str(cleanup_error))
        raise
    remove_build_folder(workdir)
    return image


def _build_in(
    workdir: Path, client: docker.DockerClient, recipe: BaseRecipe, progress: Progress
) -> Image:
    rootfs = workdir / "rootfs"
    _debootstrap(recipe, rootfs, progress)
    _check_no_mounts(rootfs)

    archive = workdir / "rootfs.tar"
    started = time.monotonic()
    _tar(rootfs, archive)
    size_mb = archive.stat().st_size / 1e6
    progress(
        f"base image: archived the root file system, {size_mb:.0f} MB, "
        f"in {time.monotonic() - started:.1f} s"
    )
    # The tree is not needed once archived, and it takes most of the space.
    remove_build_folder(rootfs)

    started = time.monotonic()
    image = _import(client, archive, recipe)
    progress(
        f"base image: imported {recipe.tag()} ({image.short_id}) "
        f"in {time.monotonic() - started:.1f} s"
    )
    return image


def _debootstrap(recipe: BaseRecipe, rootfs: Path, progress: Progress) -> None:
    mirror = debian_mirror()
    command = [
        "debootstrap",
        f"--variant={recipe.variant}",
        f"--include={','.join(recipe.packages)}",
        recipe.suite,
        str(rootfs),
        mirror,
    ]
    progress(f"base image: debootstrap {recipe.suite} from {mirror} into {rootfs}")
    started = time.monotonic()

    def heartbeat(elapsed: float, last_line: str) -> None:
        progress(f"base image: debootstrap running for {elapsed:.0f} s: {last_line}")

    try:
        run_command(
            command,
            timeout_s=DEBOOTSTRAP_TIMEOUT_S,
            heartbeat_s=HEARTBEAT_S,
            on_heartbeat=heartbeat,
            env={**os.environ, "LC_ALL": "C"},
        )
    except CommandFailed as err:
        raise InfrastructureError(
            f"debootstrap of Debian {recipe.suite} from {mirror} failed: "
            f"{err.summary}. Check that the mirror is reachable, or set "
            f"HARNESS_DEBIAN_MIRROR to another one. Last output:\n"
            f"{err.output_tail()}"
        ) from err
    progress(f"base image: debootstrap done in {time.monotonic() - started:.0f} s")


def _tar(rootfs: Path, archive: Path) -> None:
    # --one-file-system keeps anything still mounted inside the tree, such as
    # the host's /proc, out of the image. Owners stay numeric because the
    # names of this host may map to other ids than the image's.
    command = [
        "tar",
        "--create",
        f"--file={archive}",
        f"--directory={rootfs}",
        "--numeric-owner",
        "--one-file-system",
        "--anchored",
        *(f"--exclude={pattern}" for pattern in BASE_EXCLUDES),
        ".",
    ]
    try:
        run_command(
            command,
            timeout_s=TAR_TIMEOUT_S,
            heartbeat_s=HEARTBEAT_S,
            on_heartbeat=lambda elapsed, line: None,
        )
    except CommandFailed as err:
        raise InfrastructureError(
            f"archiving the root file system {rootfs} failed: {err.summary}. "
            f"Check the free space under {archive.parent}. Last output:\n"
            f"{err.output_tail()}"
        ) from err


def _import(client: docker.DockerClient, archive: Path, recipe: BaseRecipe) -> Image:
    tag = recipe.hash()
    changes = [
        *BASE_IMAGE_CHANGES,
        f"LABEL {PROJECT_LABEL}={PROJECT}",
        f"LABEL {ROLE_LABEL}=base",
        f"LABEL {HASH_LABEL}={tag}",
    ]
    # An open file, not a path, because the SDK treats a path it cannot read
    # as a URL, which the engine then tries to download.
    try:
        with archive.open("rb") as stream:
            response = client.api.import_image(
                src=stream, repository=BASE_REPOSITORY, tag=tag, changes=changes
            )
        image = client.images.get(recipe.tag())
    except docker.errors.DockerException as err:
        raise InfrastructureError(
            f"docker import of {archive} as {recipe.tag()} failed: {err}. Check "
            "the engine's free space and its log (journalctl -u docker)."
        ) from err
    _raise_on_import_error(response, recipe.tag())
    return image


def _raise_on_import_error(response: str, tag: str) -> None:
    # The engine streams JSON messages and reports a failure as one of them.
    for line in response.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("error"):
            raise InfrastructureError(
                f"docker import as {tag} failed: {message['error']}"
            )


def remove_build_folder(path: Path) -> None:
    """Delete a folder that the build created, without crossing mount points.

    debootstrap mounts /proc and /sys inside the new root and unmounts them
    when it exits, even on an error, but a killed debootstrap leaves them
    mounted. Those mounts are unmounted first, and the folder is left in place
    with an error naming it if one cannot be.
    """
    if not path.exists():
        return
    for mount_point in sorted(_mounts_under(path), reverse=True):
        subprocess.run(
            ["umount", "--lazy", str(mount_point)],
            capture_output=True,
            check=False,
            timeout=60,
        )
    remaining = _mounts_under(path)
    if remaining:
        raise InfrastructureError(
            f"cannot remove the build folder {path}: file systems are still "
            f"mounted in it ({', '.join(map(str, remaining))}). Unmount them "
            f"with `umount --lazy`, then delete the folder."
        )
    # --one-file-system makes rm skip any mount that appears after the check.
    result = subprocess.run(
        ["rm", "-rf", "--one-file-system", "--", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if result.returncode != 0:
        raise InfrastructureError(
            f"cannot remove the build folder {path}: {result.stderr.strip()}. "
            "Delete it by hand."
        )


def _check_no_mounts(rootfs: Path) -> None:
    mounts = _mounts_under(rootfs)
    if mounts:
        raise InfrastructureError(
            f"debootstrap left file systems mounted in {rootfs}: "
            f"{', '.join(map(str, mounts))}. The build stops here so that they "
            f"do not end up in the image. Unmount them and build again."
        )


def _mounts_under(path: Path) -> list[Path]:
    """List the mount points at or below path, from /proc/self/mountinfo."""
    root = path.resolve()
    found: list[Path] = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            # The fifth field is the mount point. The kernel writes space, tab,
            # newline and backslash in it as octal escapes such as \040.
            field = line.split()[4]
            mount_point = Path(_OCTAL_ESCAPE.sub(_unescape, field))
            if mount_point == root or root in mount_point.parents:
                found.append(mount_point)
    return found


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(match: re.Match[str]) -> str:
    return chr(int(match.group(1), 8))
