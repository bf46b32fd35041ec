"""Docker resources for the image tests, labelled and removed by label.

Every container and network carries the project's labels with this session's
run id, and the fixtures remove them in `finally`, whatever the tests did.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import docker
import docker.errors
import pytest
from docker.models.containers import Container
from docker.models.networks import Network

from harness.images import ImageSet, build_images
from harness.images.engine import connect

RUN_ID = f"test-images-{os.getpid()}-{uuid.uuid4().hex[:6]}"
LABELS = {
    "slot-harness.project": "slot-harness",
    "slot-harness.run-id": RUN_ID,
    "slot-harness.owner-pid": str(os.getpid()),
}
RUN_FILTER = {"label": [f"slot-harness.run-id={RUN_ID}"]}


@dataclass(frozen=True)
class BuiltImages:
    images: ImageSet
    progress: list[str]


@pytest.fixture(scope="session")
def built_images() -> BuiltImages:
    """Build the images, which reuses them when they are up to date."""
    progress: list[str] = []
    images = build_images(progress=progress.append)
    return BuiltImages(images, progress)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    with connect() as client:
        try:
            yield client
        finally:
            _remove_labelled(client)


@pytest.fixture(scope="session")
def network(docker_client: docker.DockerClient) -> Network:
    """A private bridge network for this session, removed by docker_client."""
    return docker_client.networks.create(
        f"slot-harness-{RUN_ID}", driver="bridge", labels=LABELS
    )


StartContainer = Callable[..., Container]


@pytest.fixture
def start_container(
    docker_client: docker.DockerClient,
    built_images: BuiltImages,
    network: Network,
) -> Iterator[StartContainer]:
    """Start runtime-image containers on the test network; remove them after."""
    started: list[Container] = []

    def start(
        command: list[str],
        environment: dict[str, str] | None = None,
        port: str | None = None,
    ) -> Container:
        container = docker_client.containers.run(
            built_images.images.runtime,
            command,
            detach=True,
            environment=environment or {},
            labels=LABELS,
            network=network.name,
            ports={port: ("127.0.0.1", None)} if port else {},
        )
        started.append(container)
        return container

    try:
        yield start
    finally:
        for container in started:
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass


def published_port(container: Container, port: str, deadline_s: float = 10) -> int:
    """Read the host port published for port now, because it changes on restart."""
    deadline = time.monotonic() + deadline_s
    while True:
        container.reload()
        bindings = (container.ports or {}).get(port)
        if bindings:
            return int(bindings[0]["HostPort"])
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"container {container.short_id} published no host port for "
                f"{port} within {deadline_s} s; status {container.status}, "
                f"logs:\n{container_logs(container)}"
            )
        time.sleep(0.1)


def container_logs(container: Container) -> str:
    return container.logs(stdout=True, stderr=True).decode(errors="replace")


def _remove_labelled(client: docker.DockerClient) -> None:
    for container in client.containers.list(all=True, filters=RUN_FILTER):
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
    for network in client.networks.list(filters=RUN_FILTER):
        try:
            network.remove()
        except docker.errors.NotFound:
            pass
