"""Checks of the machine a run needs, each with the fix when it fails."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

MIN_FREE_DISK_GB = 5


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # ok, warn or fail
    detail: str


def check_docker() -> CheckResult:
    try:
        client = docker.from_env(timeout=10)
        version = client.version()
    except docker.errors.DockerException as err:
        return CheckResult(
            "docker", "fail", f"unreachable ({err}); start the Docker daemon"
        )
    return CheckResult(
        "docker",
        "ok",
        f"engine {version.get('Version')}, storage "
        f"{client.info().get('Driver')}, cgroup v{client.info().get('CgroupVersion')}",
    )


def check_images() -> CheckResult:
    try:
        from harness.images import images_present, required_runtime_tag

        tag = required_runtime_tag()
        present = images_present()
    except Exception as err:  # noqa: BLE001 - a doctor reports, it does not crash
        return CheckResult("images", "fail", f"cannot tell ({err})")
    if present:
        return CheckResult("images", "ok", tag)
    return CheckResult(
        "images",
        "warn",
        f"{tag} not built; `harness images build` (or the first `harness run`) "
        "builds it in about 2 minutes",
    )


def check_debootstrap() -> CheckResult:
    if shutil.which("debootstrap"):
        return CheckResult("debootstrap", "ok", shutil.which("debootstrap") or "")
    return CheckResult(
        "debootstrap",
        "warn",
        "missing; needed only to build the base image: apt-get install debootstrap",
    )


def check_prometheus() -> CheckResult:
    from harness.images.prometheus import PACKAGE_HINT, missing_binaries

    missing = missing_binaries()
    if missing:
        return CheckResult(
            "prometheus",
            "warn",
            f"{', '.join(map(str, missing))} missing; only --observe, "
            f"`harness stack` and the promtool tests need it: {PACKAGE_HINT}",
        )
    return CheckResult(
        "prometheus",
        "ok",
        "Debian's prometheus and promtool, for --observe and its image",
    )


def check_compose() -> CheckResult:
    from harness.compose import detect_compose_tool
    from harness.errors import InfrastructureError

    try:
        tool = detect_compose_tool()
    except InfrastructureError as err:
        return CheckResult("compose", "warn", f"{err}; only `harness stack` needs it")
    return CheckResult(
        "compose", "ok", f"{' '.join(tool.argv)} {tool.version}, for `harness stack`"
    )


def check_netem() -> CheckResult:
    from harness.topology.network import netem_available

    if netem_available():
        return CheckResult(
            "kernel: netem", "ok", "tc netem can add latency (method: netem)"
        )
    return CheckResult(
        "kernel: netem",
        "warn",
        "tc could not add a netem qdisc (sch_netem missing, or not root); latency "
        "faults use the TCP proxies instead (method: proxy or auto), and "
        "method: netem exits with code 2",
    )


def check_statistic_match() -> CheckResult:
    from harness.topology.network import statistic_match_available

    if statistic_match_available():
        return CheckResult(
            "iptables statistic match", "ok", "packet-loss faults can drop at random"
        )
    return CheckResult(
        "iptables statistic match",
        "warn",
        "iptables could not add a statistic match rule (xt_statistic missing, or "
        "not root); packet-loss faults exit with code 2, partitions still work",
    )


def check_iptables() -> CheckResult:
    if shutil.which("iptables") and shutil.which("nsenter"):
        return CheckResult(
            "iptables + nsenter",
            "ok",
            "both present; partitions and packet loss use them, as root",
        )
    return CheckResult(
        "iptables + nsenter",
        "warn",
        "missing; partition and packet-loss faults need them: apt-get install "
        "iptables util-linux",
    )


def check_freezer() -> CheckResult:
    v1 = Path("/sys/fs/cgroup/freezer").exists()
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    if v1 or v2:
        return CheckResult(
            "cgroup freezer", "ok", "freezer cgroup present; docker pause uses it"
        )
    return CheckResult("cgroup freezer", "warn", "no freezer found: pause faults fail")


def check_root() -> CheckResult:
    if os.geteuid() == 0:
        return CheckResult(
            "root",
            "ok",
            "kills and sigstop faults can signal container processes by host PID",
        )
    return CheckResult(
        "root",
        "warn",
        "not root: kills fall back to the Docker API (about 150 ms late), which "
        "rarely lands between two store round trips, and sigstop faults fail "
        "preflight (use pause instead); run as root to aim kills and stop processes",
    )


def check_disk() -> CheckResult:
    usage = shutil.disk_usage(os.getcwd())
    free_gb = usage.free / 1e9
    if free_gb < MIN_FREE_DISK_GB:
        return CheckResult(
            "disk",
            "fail",
            f"{free_gb:.1f} GB free here; the images need about 2 GB and runs "
            f"write reports: free at least {MIN_FREE_DISK_GB} GB",
        )
    return CheckResult("disk", "ok", f"{free_gb:.0f} GB free")


def run_checks() -> list[CheckResult]:
    return [
        check_docker(),
        check_images(),
        check_debootstrap(),
        check_prometheus(),
        check_compose(),
        check_iptables(),
        check_statistic_match(),
        check_netem(),
        check_freezer(),
        check_root(),
        check_disk(),
    ]
