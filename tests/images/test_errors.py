"""Failures of the build's tools and cleanup, reported with the fix."""

from __future__ import annotations

import gc
import os
import subprocess
from pathlib import Path

import pytest

from harness.errors import InfrastructureError
from harness.images.base import check_base_tools, remove_build_folder
from harness.images.engine import connect


def test_missing_debootstrap_names_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(InfrastructureError) as caught:
        check_base_tools()

    assert "debootstrap not found on PATH" in str(caught.value)
    assert "apt-get install debootstrap" in str(caught.value)


# The docker SDK 7.2 leaves the socket of a failed unix connection open, and
# docker/docker-py pull request 3356 proposes the fix. The collection below
# makes the ResourceWarning surface in this test, which ignores it.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_unreachable_docker_names_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = f"unix://{tmp_path}/missing.sock"
    monkeypatch.setenv("DOCKER_HOST", address)

    with pytest.raises(InfrastructureError) as caught:
        with connect(timeout_s=5):
            pass
    message = str(caught.value)
    # The traceback keeps the leaked socket alive until it is deleted.
    del caught
    gc.collect()

    assert message.startswith(f"Docker unreachable at {address}: ")
    assert "Start the Docker daemon" in message


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
def test_remove_build_folder_spares_mounted_files(tmp_path: Path) -> None:
    # A killed debootstrap leaves host folders mounted in the new root. Their
    # files must survive the removal of the build folder.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("host data")
    build = tmp_path / "build"
    mount_point = build / "rootfs" / "proc"
    mount_point.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(outside), str(mount_point)], check=True)
    try:
        remove_build_folder(build)
    finally:
        if os.path.ismount(mount_point):
            subprocess.run(["umount", "--lazy", str(mount_point)], check=False)

    assert build.exists() is False
    assert (outside / "keep.txt").read_text() == "host data"
