"""The live stack's Compose files and the command lines that run them.

`compose/compose.yaml` contains Redis, Postgres, Prometheus and Grafana. The
coordinators c1..cN and the Prometheus configuration that scrapes them depend
on the number of instances, so they are generated per Compose project under
`compose/generated/<project>/`. Both the `docker compose` plugin and Debian's
`docker-compose` 1.29 read these files.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.errors import InfrastructureError
from harness.topology.docker_cluster import COORDINATOR_PORT, POSTGRES_PORT, REDIS_PORT
from harness.topology.labels import LABEL_PROJECT, LABEL_ROLE, PROJECT

COMPOSE_DIR = Path(__file__).resolve().parents[1] / "compose"
BASE_FILE = COMPOSE_DIR / "compose.yaml"
GENERATED_DIR = COMPOSE_DIR / "generated"
ALERTS_FILE = Path(__file__).resolve().parent / "observe" / "alerts.yml"

DEFAULT_PROJECT = "slot-harness-stack"
RUNTIME_IMAGE = "slot-harness/runtime:latest"
PROMETHEUS_IMAGE = "slot-harness/prometheus:latest"
PROMETHEUS_PORT = 9090
LABEL_STACK = "slot-harness.stack"
LABEL_STACK_PROJECT = "slot-harness.stack-project"
# The label whose value is prometheus_digest() of the files Prometheus mounts.
LABEL_PROMETHEUS_DIGEST = "slot-harness.prometheus-digest"
GRAFANA_PROFILE = "grafana"
# Long enough for the short probe commands; a hung probe is cut by its timeout.
VERSION_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class ComposeTool:
    """A Compose command: the plugin (`docker compose`) or the standalone tool."""

    argv: tuple[str, ...]
    version: str

    @property
    def is_plugin(self) -> bool:
        return len(self.argv) == 2 and self.argv[1] == "compose"

    @property
    def display_name(self) -> str:
        return "docker compose" if self.is_plugin else Path(self.argv[0]).name

    def command(
        self,
        project: str,
        files: Sequence[Path],
        args: Sequence[str],
        profiles: Sequence[str] = (),
    ) -> list[str]:
        """Build the argv of one Compose subcommand on the project's files."""
        argv = [*self.argv, "--project-name", project]
        for path in files:
            argv += ["--file", str(path)]
        for profile in profiles:
            argv += ["--profile", profile]
        return argv + list(args)


def _probe_version(argv: list[str]) -> str | None:
    """Run `<argv> version --short`; return its output, or None if it fails."""
    try:
        result = subprocess.run(
            [*argv, "version", "--short"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or "unknown"


def detect_compose_tool(path: str | None = None) -> ComposeTool:
    """Find the Compose command to use, preferring the `docker compose` plugin.

    ``path`` is the search path for the executables (the PATH variable when
    None). Each candidate must exit 0 on `version`, because a `docker` without
    the plugin exits non-zero on `docker compose version`.
    """
    docker = shutil.which("docker", path=path)
    if docker:
        version = _probe_version([docker, "compose"])
        if version is not None:
            return ComposeTool((docker, "compose"), version)
    standalone = shutil.which("docker-compose", path=path)
    if standalone:
        version = _probe_version([standalone])
        if version is not None:
            return ComposeTool((standalone,), version)
    raise InfrastructureError(
        "no Compose tool found: neither `docker compose` (the plugin) nor "
        "`docker-compose` answered `version`; install Debian's package "
        "docker-compose or Docker's docker-compose-plugin"
    )


@dataclass(frozen=True)
class StackSpec:
    """Settings of one live stack: its services and its ports on 127.0.0.1."""

    instances: int = 3
    strategy: str = "lua"
    prometheus_port: int = PROMETHEUS_PORT
    coordinator_port: int = 18081
    project: str = DEFAULT_PROJECT
    runtime_image: str = RUNTIME_IMAGE
    prometheus_image: str = PROMETHEUS_IMAGE
    grafana_port: int = 3000

    @property
    def coordinator_names(self) -> list[str]:
        return [f"c{i}" for i in range(1, self.instances + 1)]

    def coordinator_ports(self) -> dict[str, int]:
        """Map each coordinator to the host port it publishes, counting up."""
        return {
            name: self.coordinator_port + offset
            for offset, name in enumerate(self.coordinator_names)
        }

    @property
    def generated_dir(self) -> Path:
        return GENERATED_DIR / self.project

    @property
    def coordinators_file(self) -> Path:
        return self.generated_dir / "coordinators.yaml"

    @property
    def prometheus_file(self) -> Path:
        return self.generated_dir / "prometheus.yml"

    @property
    def empty_alerts_file(self) -> Path:
        return self.generated_dir / "no-alerts.yml"

    def files(self) -> list[Path]:
        return [BASE_FILE, self.coordinators_file]


def stack_labels(project: str, role: str) -> dict[str, str]:
    """Return the labels of a stack resource; compose.yaml sets the same ones."""
    return {
        LABEL_PROJECT: PROJECT,
        LABEL_STACK: "1",
        LABEL_STACK_PROJECT: project,
        LABEL_ROLE: role,
    }


def coordinators_compose(spec: StackSpec) -> dict:
    """Build the Compose file of the coordinators c1..cN, as DockerCluster runs them.

    They reach Redis and Postgres directly, with no proxy in between, because the
    stack is for watching a cluster and not for injecting faults.
    """
    health = (
        "import urllib.request; urllib.request.urlopen("
        f"'http://127.0.0.1:{COORDINATOR_PORT}/health', timeout=2)"
    )
    services = {}
    for name, port in spec.coordinator_ports().items():
        services[name] = {
            "image": spec.runtime_image,
            "pull_policy": "never",
            "command": ["python", "-m", "harness.coordinator"],
            # A coordinator that crashes or is killed inside its container
            # comes back on its own, as it would under an orchestrator. After
            # `docker kill` or `docker stop`, which Docker counts as manual
            # stops, it stays stopped.
            "restart": "unless-stopped",
            "environment": {
                "PORT": str(COORDINATOR_PORT),
                "INSTANCE_ID": name,
                "REDIS_URL": f"redis://redis:{REDIS_PORT}/0",
                "DATABASE_URL": (
                    f"postgresql://postgres@postgres:{POSTGRES_PORT}/postgres"
                ),
                "COORDINATOR_STRATEGY": spec.strategy,
            },
            "ports": [f"127.0.0.1:{port}:{COORDINATOR_PORT}"],
            "depends_on": {
                "redis": {"condition": "service_healthy"},
                "postgres": {"condition": "service_healthy"},
            },
            "networks": ["stack"],
            "labels": stack_labels(spec.project, "coordinator"),
            "healthcheck": {
                "test": ["CMD", "python3", "-c", health],
                "interval": "2s",
                "timeout": "3s",
                "retries": 30,
            },
        }
    return {"services": services}


def prometheus_config(spec: StackSpec) -> dict:
    """Build the Prometheus configuration that scrapes c1..cN by service name.

    The relabelling keeps only the host part of each target as the `instance`
    label, so that series carry instance="c1" rather than "c1:8000".
    """
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": ["/etc/prometheus/alerts.yml"],
        "scrape_configs": [
            {
                "job_name": "coordinator",
                "static_configs": [
                    {
                        "targets": [
                            f"{name}:{COORDINATOR_PORT}"
                            for name in spec.coordinator_names
                        ]
                    }
                ],
                "relabel_configs": [
                    {
                        "source_labels": ["__address__"],
                        "regex": "([^:]+):\\d+",
                        "target_label": "instance",
                        "replacement": "$1",
                    }
                ],
            },
            {
                "job_name": "prometheus",
                "static_configs": [{"targets": ["localhost:9090"]}],
            },
        ],
    }


def write_generated_files(spec: StackSpec, alerts: Path = ALERTS_FILE) -> Path:
    """Write the coordinators' Compose file and the Prometheus configuration.

    Returns the alert rules file to mount: ``alerts``, or an empty rule file
    when ``alerts`` does not exist, so that Prometheus still starts.
    """
    spec.generated_dir.mkdir(parents=True, exist_ok=True)
    header = "# Generated by `harness stack up`; rewritten at every start.\n"
    spec.coordinators_file.write_text(
        header + yaml.safe_dump(coordinators_compose(spec), sort_keys=False)
    )
    spec.prometheus_file.write_text(
        header + yaml.safe_dump(prometheus_config(spec), sort_keys=False)
    )
    if alerts.is_file():
        return alerts
    spec.empty_alerts_file.write_text(header + "groups: []\n")
    return spec.empty_alerts_file


def prometheus_digest(spec: StackSpec, alerts: Path) -> str:
    """Hash the Prometheus configuration and rules file that the stack mounts.

    compose.yaml puts the digest in a label of the prometheus service. Compose
    recreates a container whose labels changed, but not one whose bind-mounted
    files changed, so the label is what makes `up` start a Prometheus that
    loads a rewritten configuration. A missing file hashes as absent.
    """
    digest = hashlib.sha256()
    for path in (spec.prometheus_file, alerts):
        content = path.read_bytes() if path.is_file() else b"absent"
        digest.update(len(content).to_bytes(8, "big") + content)
    return digest.hexdigest()[:16]


def compose_environment(
    spec: StackSpec, alerts: Path, base: Mapping[str, str]
) -> dict[str, str]:
    """Return ``base`` plus the variables that compose.yaml interpolates."""
    return {
        **base,
        "SLOT_STACK_PROJECT": spec.project,
        "SLOT_STACK_RUNTIME_IMAGE": spec.runtime_image,
        "SLOT_STACK_PROMETHEUS_IMAGE": spec.prometheus_image,
        "SLOT_STACK_PROMETHEUS_PORT": str(spec.prometheus_port),
        "SLOT_STACK_PROMETHEUS_CONFIG": str(spec.prometheus_file),
        "SLOT_STACK_ALERTS": str(alerts),
        "SLOT_STACK_PROMETHEUS_DIGEST": prometheus_digest(spec, alerts),
        "SLOT_STACK_GRAFANA_PORT": str(spec.grafana_port),
    }


def up_command(tool: ComposeTool, spec: StackSpec, grafana: bool = False) -> list[str]:
    """Build the `up` command: detached, nothing built, no leftover coordinators.

    `--remove-orphans` removes coordinators of an earlier start with more
    instances than this one.
    """
    profiles = [GRAFANA_PROFILE] if grafana else []
    return tool.command(
        spec.project,
        spec.files(),
        ["up", "--detach", "--no-build", "--remove-orphans"],
        profiles,
    )


def recreate_prometheus_command(
    tool: ComposeTool, spec: StackSpec, grafana: bool = False
) -> list[str]:
    """Build the command that replaces the prometheus container and nothing else."""
    profiles = [GRAFANA_PROFILE] if grafana else []
    return tool.command(
        spec.project,
        spec.files(),
        ["up", "--detach", "--no-build", "--no-deps", "--force-recreate", "prometheus"],
        profiles,
    )


def down_command(tool: ComposeTool, project: str, files: Sequence[Path]) -> list[str]:
    """Build the `down` command that also removes the stack's volumes.

    The Grafana profile is named so that its container goes too. Some
    versions of the plugin leave services of an inactive profile in place.
    """
    return tool.command(
        project,
        files,
        ["down", "--volumes", "--remove-orphans", "--timeout", "10"],
        [GRAFANA_PROFILE],
    )


def config_command(tool: ComposeTool, spec: StackSpec) -> list[str]:
    """Build the `config --quiet` command, which validates the files."""
    return tool.command(
        spec.project, spec.files(), ["config", "--quiet"], [GRAFANA_PROFILE]
    )
