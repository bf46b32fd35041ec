"""One cluster per test session, shared by the end-to-end tests.

Each test runs its scenario on this cluster after a state reset; only the
coordinator containers are recreated when a test needs another strategy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from harness.images import build_images
from harness.topology import ClusterSpec, DockerCluster

SESSION_RUN_ID = f"pytest-{os.getpid()}"


@pytest.fixture(scope="session")
def runtime_image() -> str:
    return build_images().runtime


@pytest.fixture(scope="session")
def cluster(runtime_image: str) -> Iterator[DockerCluster]:
    shared = DockerCluster(
        ClusterSpec(
            run_id=SESSION_RUN_ID,
            runtime_image=runtime_image,
            instances=3,
            strategy="watch",
        )
    )
    try:
        shared.start()
        yield shared
    finally:
        shared.teardown()
