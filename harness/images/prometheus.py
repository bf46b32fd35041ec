"""The Prometheus image: the base image plus Debian's Prometheus binaries.

Prometheus is a Go program linked only against libc, so the binaries of the
host's Debian package run on the Debian base image unchanged. Copying them
avoids a second debootstrap and any download during the build.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import docker
from docker.models.images import Image

from harness.errors import InfrastructureError
from harness.images.recipe import (
    HASH_LENGTH,
    RECIPE_DIR,
    RECIPE_VERSION,
)
from harness.images.runtime import build_on_base

PROMETHEUS_REPOSITORY = "slot-harness/prometheus"
# Paths of the binaries that Debian's package `prometheus` installs.
PROMETHEUS_BINARIES = (Path("/usr/bin/prometheus"), Path("/usr/bin/promtool"))
PACKAGE_HINT = (
    "install Debian's package: apt-get install --no-install-recommends "
    "prometheus (scripts/bootstrap.sh does it)"
)


def prometheus_recipe_dir(recipe_dir: Path = RECIPE_DIR) -> Path:
    return recipe_dir / "prometheus"


def missing_binaries(binaries: tuple[Path, ...] = PROMETHEUS_BINARIES) -> list[Path]:
    """Return the Prometheus binaries that are not installed on the host."""
    return [path for path in binaries if not path.is_file()]


def prometheus_hash(
    base_id: str,
    recipe_dir: Path = RECIPE_DIR,
    binaries: tuple[Path, ...] = PROMETHEUS_BINARIES,
) -> str:
    """Hash the base image id, the Dockerfile and the bytes of both binaries."""
    hasher = hashlib.sha256()
    hasher.update(f"recipe-version {RECIPE_VERSION}\nbase {base_id}\n".encode())
    dockerfile = prometheus_recipe_dir(recipe_dir) / "Dockerfile"
    hasher.update(dockerfile.read_bytes())
    for path in binaries:
        hasher.update(f"binary {path.name}\n".encode())
        with path.open("rb") as binary:
            for chunk in iter(lambda: binary.read(1 << 20), b""):
                hasher.update(chunk)
    return hasher.hexdigest()[:HASH_LENGTH]


def prometheus_tag(digest: str) -> str:
    return f"{PROMETHEUS_REPOSITORY}:{digest}"


def build_prometheus_image(
    client: docker.DockerClient,
    *,
    base_tag: str,
    base_id: str,
    digest: str,
    progress: Callable[[str], None],
    recipe_dir: Path = RECIPE_DIR,
    binaries: tuple[Path, ...] = PROMETHEUS_BINARIES,
) -> Image:
    """Build the Prometheus image on base_tag and tag it with digest."""
    missing = missing_binaries(binaries)
    if missing:
        raise InfrastructureError(
            f"the Prometheus image needs {', '.join(map(str, missing))}: {PACKAGE_HINT}"
        )

    def fill(context: Path) -> None:
        shutil.copy2(prometheus_recipe_dir(recipe_dir) / "Dockerfile", context)
        for path in binaries:
            shutil.copy2(path, context / path.name)
            (context / path.name).chmod(0o755)

    return build_on_base(
        client,
        role="prometheus",
        tag=prometheus_tag(digest),
        digest=digest,
        base_tag=base_tag,
        base_id=base_id,
        fill=fill,
        progress=progress,
    )
