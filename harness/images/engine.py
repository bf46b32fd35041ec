"""The connection to the Docker Engine that builds and stores the images."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import docker
import docker.errors
import requests

from harness.errors import InfrastructureError

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
# Importing a root file system and building an image each send one request
# that lasts until the engine is done, so the HTTP timeout must cover the
# whole step. Importing the 490 MB base archive took 3 to 7 s, and building
# the runtime image 10 to 35 s, on a 2-core machine with fuse-overlayfs.
BUILD_TIMEOUT_S = 900


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


@contextlib.contextmanager
def connect(timeout_s: float = BUILD_TIMEOUT_S) -> Iterator[docker.DockerClient]:
    """Connect to the engine named by DOCKER_HOST, check it, and close on exit.

    Raises InfrastructureError with the address and the fix when the engine
    does not respond.
    """
    client: docker.DockerClient | None = None
    try:
        client = docker.from_env(timeout=timeout_s)
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as err:
        if client is not None:
            client.close()
        raise InfrastructureError(
            f"Docker unreachable at {docker_host()}: {err}. Start the Docker "
            "daemon, or set DOCKER_HOST to the address of a running engine."
        ) from err
    try:
        yield client
    finally:
        client.close()
