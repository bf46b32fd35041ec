"""The Prometheus image: its hash, its preconditions, and the binaries it runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import docker
import pytest

from harness.errors import InfrastructureError
from harness.images.prometheus import (
    PROMETHEUS_REPOSITORY,
    build_prometheus_image,
    prometheus_hash,
)
from harness.images.recipe import RECIPE_DIR
from tests.images.conftest import LABELS, BuiltImages


@pytest.fixture
def fake_package(tmp_path: Path) -> tuple[Path, tuple[Path, Path]]:
    """A recipe folder and two stand-in binaries, for hashing only."""
    recipe = tmp_path / "images"
    shutil.copytree(RECIPE_DIR / "prometheus", recipe / "prometheus")
    binaries = (tmp_path / "prometheus", tmp_path / "promtool")
    for path in binaries:
        path.write_bytes(b"binary " + path.name.encode())
    return recipe, binaries


def test_hash_is_stable_for_the_same_inputs(fake_package):
    recipe, binaries = fake_package

    first = prometheus_hash("sha256:base", recipe, binaries)

    assert prometheus_hash("sha256:base", recipe, binaries) == first
    assert len(first) == 12


def test_hash_changes_with_base_dockerfile_and_binaries(fake_package):
    recipe, binaries = fake_package
    original = prometheus_hash("sha256:base", recipe, binaries)

    other_base = prometheus_hash("sha256:other", recipe, binaries)
    binaries[1].write_bytes(b"a newer promtool")
    other_binary = prometheus_hash("sha256:base", recipe, binaries)
    dockerfile = recipe / "prometheus" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "\n# changed\n")
    other_dockerfile = prometheus_hash("sha256:base", recipe, binaries)

    assert len({original, other_base, other_binary, other_dockerfile}) == 4


def test_build_without_the_package_names_it(tmp_path):
    missing = (tmp_path / "prometheus", tmp_path / "promtool")

    with pytest.raises(InfrastructureError) as caught:
        build_prometheus_image(
            None,
            base_tag="slot-harness/base:x",
            base_id="sha256:x",
            digest="0" * 12,
            progress=lambda line: None,
            binaries=missing,
        )

    assert str(missing[0]) in str(caught.value)
    assert "apt-get install --no-install-recommends prometheus" in str(caught.value)


@pytest.mark.docker
def test_image_runs_debians_prometheus_and_promtool(
    built_images: BuiltImages, docker_client: docker.DockerClient
):
    if built_images.images.prometheus is None:
        pytest.skip("Debian's prometheus package is not installed on this host")
    assert built_images.images.prometheus.startswith(f"{PROMETHEUS_REPOSITORY}:")

    version = docker_client.containers.run(
        built_images.images.prometheus,
        ["--version"],
        remove=True,
        labels=LABELS,
        network_mode="none",
    ).decode()
    promtool = docker_client.containers.run(
        built_images.images.prometheus,
        ["--version"],
        entrypoint="/usr/local/bin/promtool",
        remove=True,
        labels=LABELS,
        network_mode="none",
    ).decode()

    assert version.startswith("prometheus, version 2.42.0")
    assert promtool.startswith("promtool, version 2.42.0")
