"""Building the project's images when their inputs changed, and finding them."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import docker
import docker.errors
from docker.models.images import Image

from harness.errors import InfrastructureError
from harness.images.base import build_base_image, remove_build_folder
from harness.images.engine import connect
from harness.images.prometheus import (
    PROMETHEUS_REPOSITORY,
    build_prometheus_image,
    missing_binaries,
    prometheus_hash,
    prometheus_tag,
)
from harness.images.recipe import (
    BASE_REPOSITORY,
    BUILD_DIR,
    BUILD_TMP_DIR,
    HASH_LABEL,
    RUNTIME_REPOSITORY,
    BaseRecipe,
    load_base_recipe,
    runtime_hash,
    runtime_tag,
)
from harness.images.runtime import build_runtime_image
from harness.images.wheelhouse import ensure_wheelhouse

logger = logging.getLogger(__name__)

# Only one build at a time changes build/ and the tags. The limit covers a
# build from scratch on a slow mirror.
LOCK_TIMEOUT_S = 1800
LOCK_POLL_S = 1.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ImageSet:
    """The images a run uses: full tags, and the id of the runtime image.

    prometheus is None when the host lacks Debian's Prometheus package, which
    only `harness run --observe` and `harness stack` need.
    """

    base: str
    runtime: str
    runtime_id: str
    prometheus: str | None = None


def build_images(progress: Progress | None = None, force: bool = False) -> ImageSet:
    """Build the base and runtime images unless images with their hashes exist.

    With nothing changed this only computes hashes and looks the tags up. A
    change of the harness code rebuilds only the runtime image. force=True
    rebuilds the base image, the wheelhouse and the runtime image. Both images
    are also tagged `latest`. progress receives a line for each step, and by
    default the lines go to this module's logger.

    Raises InfrastructureError naming the failed step and the fix.
    """
    report = progress or logger.info
    with connect() as client, _build_lock(report):
        started = time.monotonic()
        _remove_leftovers(report)
        recipe = load_base_recipe()
        base = _ensure_base(client, recipe, force, report)
        base_tag = recipe.tag()

        digest = runtime_hash(base.id)
        tag = runtime_tag(digest)
        runtime = None if force else find_image(client, tag, digest)
        if runtime is not None:
            report(f"runtime image: {tag} is up to date")
        else:
            wheelhouse = ensure_wheelhouse(report, force=force)
            runtime = build_runtime_image(
                client,
                base_tag=base_tag,
                base_id=base.id,
                runtime_digest=digest,
                wheelhouse=wheelhouse,
                progress=report,
            )

        _tag_latest(base, BASE_REPOSITORY)
        _tag_latest(runtime, RUNTIME_REPOSITORY)
        prometheus = None
        if missing_binaries():
            report(
                "prometheus image: skipped, Debian's package prometheus is not "
                "installed (only --observe and `harness stack` need it)"
            )
        else:
            prometheus = _ensure_prometheus(client, base, base_tag, force, report)
        report(f"images ready in {time.monotonic() - started:.1f} s: {base_tag}, {tag}")
    return ImageSet(
        base=base_tag,
        runtime=tag,
        runtime_id=runtime.id,
        prometheus=prometheus,
    )


def ensure_prometheus_image(progress: Progress | None = None) -> str:
    """Return the Prometheus image's tag, building it (and the base) if missing.

    Raises InfrastructureError when Debian's Prometheus package is missing.
    """
    report = progress or logger.info
    with connect() as client, _build_lock(report):
        recipe = load_base_recipe()
        base = _ensure_base(client, recipe, False, report)
        return _ensure_prometheus(client, base, recipe.tag(), False, report)


def _ensure_prometheus(
    client: docker.DockerClient,
    base: Image,
    base_tag: str,
    force: bool,
    report: Progress,
) -> str:
    digest = prometheus_hash(base.id)
    tag = prometheus_tag(digest)
    image = None if force else find_image(client, tag, digest)
    if image is not None:
        report(f"prometheus image: {tag} is up to date")
    else:
        image = build_prometheus_image(
            client, base_tag=base_tag, base_id=base.id, digest=digest, progress=report
        )
    _tag_latest(image, PROMETHEUS_REPOSITORY)
    return tag


def find_image(client: docker.DockerClient, tag: str, digest: str) -> Image | None:
    """Return the image tagged tag if its hash label is digest, else None."""
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.DockerException as err:
        raise InfrastructureError(f"inspecting the image {tag} failed: {err}") from err
    if image.labels.get(HASH_LABEL) != digest:
        return None
    return image


def _ensure_base(
    client: docker.DockerClient, recipe: BaseRecipe, force: bool, report: Progress
) -> Image:
    if not force:
        image = find_image(client, recipe.tag(), recipe.hash())
        if image is not None:
            report(f"base image: {recipe.tag()} is up to date")
            return image
    report(f"base image: building {recipe.tag()}")
    return build_base_image(client, recipe, report)


def _remove_leftovers(report: Progress) -> None:
    """Delete the scratch folders of builds that were killed before their cleanup.

    Every build holds the build lock, so no folder there is in use.
    """
    if not BUILD_TMP_DIR.is_dir():
        return
    for leftover in sorted(BUILD_TMP_DIR.iterdir()):
        report(f"removing {leftover}, left by a build that was killed")
        remove_build_folder(leftover)


def _tag_latest(image: Image, repository: str) -> None:
    if f"{repository}:latest" in image.tags:
        return
    try:
        image.tag(repository, "latest")
    except docker.errors.DockerException as err:
        raise InfrastructureError(
            f"tagging {image.short_id} as {repository}:latest failed: {err}"
        ) from err


@contextlib.contextmanager
def _build_lock(report: Progress) -> Iterator[None]:
    """Hold build/images.lock, waiting up to LOCK_TIMEOUT_S for another build."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    path = BUILD_DIR / "images.lock"
    with path.open("a") as lock_file:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        waiting_reported = False
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise InfrastructureError(
                        f"another image build held {path} for more than "
                        f"{LOCK_TIMEOUT_S} s: wait for it to finish, or end it "
                        f"if it hangs"
                    ) from None
                if not waiting_reported:
                    report(f"waiting for another image build, which holds {path}")
                    waiting_reported = True
                time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
