"""The project's images in the engine: which exist and which the source needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import docker
import docker.errors

from harness.errors import InfrastructureError
from harness.images.build import find_image
from harness.images.engine import connect
from harness.images.prometheus import (
    missing_binaries,
    prometheus_hash,
    prometheus_tag,
)
from harness.images.recipe import (
    PROJECT,
    PROJECT_LABEL,
    ROLE_LABEL,
    load_base_recipe,
    runtime_hash,
    runtime_tag,
)

# Listing and inspecting are quick, unlike builds.
QUERY_TIMEOUT_S = 60
UNTAGGED = "<none>"


@dataclass(frozen=True)
class ImageInfo:
    """One tag of a project image, or an untagged project image."""

    tag: str
    id: str
    size: int  # bytes, the layers shared with other images included
    created: datetime
    role: str  # "base", "runtime" or "prometheus"
    up_to_date: bool  # the image that the current recipe and source need


def required_runtime_tag() -> str:
    """Compute the runtime tag that the current source needs, without building.

    The tag depends on the id of the base image, so that image must exist.
    Raises InfrastructureError when it does not, or when Docker is unreachable.
    """
    with connect(QUERY_TIMEOUT_S) as client:
        return _required_runtime_tag(client)


def images_present() -> bool:
    """Return whether the base image and the runtime image the source needs exist.

    Raises InfrastructureError when Docker is unreachable, because then
    nothing is known about the images.
    """
    with connect(QUERY_TIMEOUT_S) as client:
        recipe = load_base_recipe()
        base = find_image(client, recipe.tag(), recipe.hash())
        if base is None:
            return False
        digest = runtime_hash(base.id)
        return find_image(client, runtime_tag(digest), digest) is not None


def list_images() -> list[ImageInfo]:
    """List every image labelled as the project's, one entry per tag.

    Sorted by role, then newest first.
    """
    with connect(QUERY_TIMEOUT_S) as client:
        return _list_images(client)


def remove_stale_images(progress: Callable[[str], None] | None = None) -> list[str]:
    """Remove the project's images that the current recipe and source do not need.

    An image that a container still uses stays, and progress reports it.
    Returns the tags and ids removed.
    """
    report = progress or (lambda line: None)
    with connect(QUERY_TIMEOUT_S) as client:
        return _remove_stale_images(client, report)


def _list_images(client: docker.DockerClient) -> list[ImageInfo]:
    current = _current_image_ids(client)
    try:
        summaries = client.api.images(filters={"label": f"{PROJECT_LABEL}={PROJECT}"})
    except docker.errors.DockerException as err:
        raise InfrastructureError(
            f"listing the project's images failed: {err}"
        ) from err

    infos: list[ImageInfo] = []
    for summary in summaries:
        tags = [t for t in summary.get("RepoTags") or [] if t != "<none>:<none>"]
        for tag in tags or [UNTAGGED]:
            infos.append(
                ImageInfo(
                    tag=tag,
                    id=summary["Id"],
                    size=summary["Size"],
                    created=datetime.fromtimestamp(summary["Created"], tz=UTC),
                    role=(summary.get("Labels") or {}).get(ROLE_LABEL, "unknown"),
                    up_to_date=summary["Id"] in current,
                )
            )
    infos.sort(key=lambda info: (info.role, -info.created.timestamp(), info.tag))
    return infos


def _remove_stale_images(
    client: docker.DockerClient, report: Callable[[str], None]
) -> list[str]:
    removed: list[str] = []
    # Newest first, so that a runtime image goes before the base it is built on.
    for info in sorted(_list_images(client), key=lambda i: i.created, reverse=True):
        if info.up_to_date:
            continue
        name = info.id if info.tag == UNTAGGED else info.tag
        try:
            client.images.remove(name, noprune=False)
        except docker.errors.ImageNotFound:
            continue
        except docker.errors.APIError as err:
            report(f"kept {name}: {err.explanation or err}")
            continue
        removed.append(name)
        report(f"removed {name}")
    return removed


def _required_runtime_tag(client: docker.DockerClient) -> str:
    recipe = load_base_recipe()
    base = find_image(client, recipe.tag(), recipe.hash())
    if base is None:
        raise InfrastructureError(
            f"base image {recipe.tag()} not found, and the runtime tag depends on "
            f"its id: run `harness images build`"
        )
    return runtime_tag(runtime_hash(base.id))


def _current_image_ids(client: docker.DockerClient) -> set[str]:
    """Return the ids of the images the recipes and source need that exist."""
    recipe = load_base_recipe()
    base = find_image(client, recipe.tag(), recipe.hash())
    if base is None:
        return set()
    current = {base.id}
    digest = runtime_hash(base.id)
    runtime = find_image(client, runtime_tag(digest), digest)
    if runtime is not None:
        current.add(runtime.id)
    # Without the package the hash is unknown, so any Prometheus image stays.
    if missing_binaries():
        current.update(
            image.id
            for image in client.images.list(
                filters={"label": f"{ROLE_LABEL}=prometheus"}
            )
        )
    else:
        digest = prometheus_hash(base.id)
        prometheus = find_image(client, prometheus_tag(digest), digest)
        if prometheus is not None:
            current.add(prometheus.id)
    return current
