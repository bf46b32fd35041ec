"""Building, caching and listing the images on the real Docker Engine."""

from __future__ import annotations

import docker
import pytest

from harness.images import (
    build_images,
    images_present,
    list_images,
    required_runtime_tag,
)
from harness.images.recipe import load_base_recipe

pytestmark = pytest.mark.docker


def test_second_build_reuses_images() -> None:
    # The first call rebuilds what changed since the session's build.
    first = build_images()
    progress: list[str] = []

    second = build_images(progress=progress.append)

    assert second == first
    assert f"base image: {second.base} is up to date" in progress
    assert f"runtime image: {second.runtime} is up to date" in progress
    assert [line for line in progress if "building" in line] == []


def test_build_tags_and_labels(docker_client: docker.DockerClient) -> None:
    images = build_images()
    base = docker_client.images.get(images.base)
    runtime = docker_client.images.get(images.runtime)

    assert images.base == load_base_recipe().tag()
    assert docker_client.images.get("slot-harness/base:latest").id == base.id
    assert docker_client.images.get("slot-harness/runtime:latest").id == runtime.id
    assert runtime.id == images.runtime_id
    assert base.labels["slot-harness.project"] == "slot-harness"
    assert base.labels["slot-harness.role"] == "base"
    assert runtime.labels["slot-harness.project"] == "slot-harness"
    assert runtime.labels["slot-harness.role"] == "runtime"
    assert runtime.labels["slot-harness.base-id"] == base.id


def test_required_tag_matches_build() -> None:
    images = build_images()

    assert required_runtime_tag() == images.runtime
    assert images_present() is True


def test_list_marks_built_images_current() -> None:
    images = build_images()

    current = {info.tag: info for info in list_images() if info.up_to_date}

    assert set(current) >= {
        images.base,
        images.runtime,
        "slot-harness/base:latest",
        "slot-harness/runtime:latest",
    }
    assert current[images.base].role == "base"
    assert current[images.runtime].role == "runtime"
    assert current[images.runtime].id == images.runtime_id
    assert current[images.runtime].size > 0
