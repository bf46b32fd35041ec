"""`harness stack up` and `down` on the local Docker Engine, with real Compose.

The stack gets its own project name and ports, so a user's stack on the
default ports is left alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml
from typer.testing import CliRunner

from harness.compose import (
    ALERTS_FILE,
    LABEL_PROMETHEUS_DIGEST,
    LABEL_STACK,
    LABEL_STACK_PROJECT,
    PROMETHEUS_IMAGE,
    StackSpec,
    detect_compose_tool,
    stack_labels,
)
from harness.errors import InfrastructureError
from harness.images import build_images
from harness.stack import (
    LABEL_SERVICE,
    StackError,
    app,
    print_last_logs,
    require_grafana_image,
    start_stack,
    wait_healthy,
)

pytestmark = pytest.mark.docker

PROJECT = f"pytest-stack-{os.getpid()}"
PROMETHEUS_PORT = 19490
COORDINATOR_PORT = 19481
INSTANCES = 2
TARGETS_DEADLINE_S = 60.0
RESTART_DEADLINE_S = 60.0
COMPOSE_START_DEADLINE_S = 60.0
REPO_ROOT = Path(__file__).resolve().parents[2]


def http_json(url: str, method: str = "GET", body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        return reply.status, json.loads(reply.read())


def stack_resources(client: docker.DockerClient, project: str) -> dict[str, list]:
    filters = {"label": [f"{LABEL_STACK}=1", f"{LABEL_STACK_PROJECT}={project}"]}
    return {
        "containers": client.containers.list(all=True, filters=filters),
        "networks": client.networks.list(filters=filters),
        "volumes": client.volumes.list(filters=filters),
    }


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    return docker.from_env()


@pytest.fixture(scope="module")
def stack(runtime_image: str, client: docker.DockerClient) -> Iterator[str]:
    """Start a stack of two lua coordinators; stop it after the module."""
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "up",
            "--instances",
            str(INSTANCES),
            "--prometheus-port",
            str(PROMETHEUS_PORT),
            "--coordinator-port",
            str(COORDINATOR_PORT),
            "--project-name",
            PROJECT,
            "--timeout",
            "180",
        ],
    )
    try:
        assert result.exit_code == 0, result.output
        yield result.stdout
    finally:
        runner.invoke(app, ["down", "--project-name", PROJECT])


def test_up_prints_urls(stack: str) -> None:
    assert f"prometheus http://127.0.0.1:{PROMETHEUS_PORT}" in stack
    assert f"c1         http://127.0.0.1:{COORDINATOR_PORT}" in stack
    assert f"c2         http://127.0.0.1:{COORDINATOR_PORT + 1}" in stack


def test_coordinators_serve_requests(stack: str) -> None:
    for index in range(INSTANCES):
        name = f"c{index + 1}"
        url = f"http://127.0.0.1:{COORDINATOR_PORT + index}"

        status, health = http_json(url + "/health")
        assert status == 200
        assert health["instance"] == name

        status, created = http_json(
            url + "/batches",
            method="POST",
            body={"batch_id": f"stack-{name}", "slot_ids": ["s1", "s2"]},
        )
        assert status == 201
        assert created == {"batch_id": f"stack-{name}"}


def test_prometheus_scrapes_every_coordinator(stack: str) -> None:
    url = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/targets?state=active"
    deadline = time.monotonic() + TARGETS_DEADLINE_S
    health: dict[str, str] = {}
    while time.monotonic() < deadline:
        _, reply = http_json(url)
        health = {
            target["labels"]["instance"]: target["health"]
            for target in reply["data"]["activeTargets"]
            if target["labels"]["job"] == "coordinator"
        }
        if health and all(state == "up" for state in health.values()):
            break
        time.sleep(1.0)

    assert health == {"c1": "up", "c2": "up"}


def test_prometheus_loads_alert_rules(stack: str) -> None:
    # The stack mounts the shipped rules, or an empty rule file when they are
    # missing, so Prometheus must contain exactly the shipped groups.
    shipped = []
    if ALERTS_FILE.is_file():
        shipped = yaml.safe_load(ALERTS_FILE.read_text())["groups"]
    expected = {group["name"]: len(group["rules"]) for group in shipped}

    _, reply = http_json(f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/rules")
    loaded = {group["name"]: len(group["rules"]) for group in reply["data"]["groups"]}

    assert loaded == expected


def test_every_resource_carries_labels(stack: str, client) -> None:
    resources = stack_resources(client, PROJECT)
    services = sorted(c.labels[LABEL_SERVICE] for c in resources["containers"])

    assert services == ["c1", "c2", "postgres", "prometheus", "redis"]
    assert len(resources["networks"]) == 1
    assert len(resources["volumes"]) == 3
    for container in resources["containers"]:
        assert container.labels["slot-harness.project"] == "slot-harness"


def test_ports_published_on_loopback_only(stack: str, client) -> None:
    resources = stack_resources(client, PROJECT)
    for container in resources["containers"]:
        for bindings in (container.ports or {}).values():
            for binding in bindings or []:
                assert binding["HostIp"] == "127.0.0.1", container.name


def test_stack_runs_current_images(stack: str, runtime_image: str, client) -> None:
    prometheus_image = build_images().prometheus
    images = {
        c.labels[LABEL_SERVICE]: c.attrs["Config"]["Image"]
        for c in stack_resources(client, PROJECT)["containers"]
    }

    assert images == {
        "c1": runtime_image,
        "c2": runtime_image,
        "postgres": runtime_image,
        "prometheus": prometheus_image,
        "redis": runtime_image,
    }
    assert f"image {runtime_image}" in stack


def test_killed_coordinator_restarts(stack: str, client) -> None:
    containers = {
        c.labels[LABEL_SERVICE]: c
        for c in stack_resources(client, PROJECT)["containers"]
    }
    coordinator = containers["c2"]
    # SIGKILL from the host, as a crash or the OOM killer would end it. `docker
    # kill` would count as a manual stop, which restart policies leave alone.
    os.kill(coordinator.attrs["State"]["Pid"], signal.SIGKILL)
    url = f"http://127.0.0.1:{COORDINATOR_PORT + 1}/health"

    deadline = time.monotonic() + RESTART_DEADLINE_S
    health = None
    while time.monotonic() < deadline:
        try:
            health = http_json(url)
            break
        except (OSError, urllib.error.URLError):
            time.sleep(0.5)
    coordinator.reload()

    assert health is not None, f"c2 gave no /health reply in {RESTART_DEADLINE_S} s"
    status, body = health
    assert status == 200
    assert body["instance"] == "c2"
    assert coordinator.attrs["RestartCount"] == 1
    assert coordinator.attrs["State"]["Status"] == "running"


def coordinator_targets(prometheus_port: int) -> dict[str, str]:
    url = f"http://127.0.0.1:{prometheus_port}/api/v1/targets?state=active"
    _, reply = http_json(url)
    return {
        target["labels"]["instance"]: target["health"]
        for target in reply["data"]["activeTargets"]
        if target["labels"]["job"] == "coordinator"
    }


def test_up_again_rescrapes_coordinators(runtime_image: str, client) -> None:
    # `up` on a running stack with other instances rewrites prometheus.yml,
    # which the running Prometheus would never read again on its own.
    project = f"{PROJECT}-rescale"
    prometheus_port = PROMETHEUS_PORT + 700
    options = [
        "--prometheus-port",
        str(prometheus_port),
        "--coordinator-port",
        str(COORDINATOR_PORT + 700),
        "--project-name",
        project,
    ]
    runner = CliRunner()
    targets = []
    digests = []
    try:
        for instances in (2, 3, 2):
            result = runner.invoke(app, ["up", "--instances", str(instances), *options])
            assert result.exit_code == 0, result.output
            targets.append(coordinator_targets(prometheus_port))
            containers = stack_resources(client, project)["containers"]
            digests += [
                c.labels[LABEL_PROMETHEUS_DIGEST]
                for c in containers
                if c.labels[LABEL_SERVICE] == "prometheus"
            ]
    finally:
        runner.invoke(app, ["down", "--project-name", project])

    assert targets == [
        {"c1": "up", "c2": "up"},
        {"c1": "up", "c2": "up", "c3": "up"},
        {"c1": "up", "c2": "up"},
    ]
    assert len(digests) == 3
    assert digests[0] == digests[2]
    assert digests[1] != digests[0]


def test_down_unknown_project_removes_nothing() -> None:
    result = CliRunner().invoke(app, ["down", "--project-name", f"{PROJECT}-never"])

    assert result.exit_code == 0, result.output
    assert result.stdout == (f"no stack {PROJECT}-never was found; nothing to remove\n")


def test_down_leaves_nothing(runtime_image: str, client) -> None:
    # A second stack with its own project and ports, so that `down` runs on a
    # stack that is up while the module's stack is left alone.
    project = f"{PROJECT}-down"
    runner = CliRunner()
    up = runner.invoke(
        app,
        [
            "up",
            "--instances",
            "1",
            "--prometheus-port",
            str(PROMETHEUS_PORT + 100),
            "--coordinator-port",
            str(COORDINATOR_PORT + 100),
            "--project-name",
            project,
        ],
    )
    try:
        assert up.exit_code == 0, up.output
        assert len(stack_resources(client, project)["containers"]) == 4
    finally:
        first = runner.invoke(app, ["down", "--project-name", project])
    second = runner.invoke(app, ["down", "--project-name", project])

    assert first.exit_code == 0, first.output
    assert f"stack {project} removed" in first.stdout
    assert second.exit_code == 0, second.output
    assert f"no stack {project} was found; nothing to remove" in second.stdout
    assert stack_resources(client, project) == {
        "containers": [],
        "networks": [],
        "volumes": [],
    }


def test_down_sweeps_resources_by_label(runtime_image: str, client) -> None:
    # A container and a volume that Compose does not track, like those an
    # interrupted `up` can leave behind.
    project = f"{PROJECT}-sweep"
    labels = stack_labels(project, "stray")
    volume = client.volumes.create(labels=labels)
    container = client.containers.create(runtime_image, ["true"], labels=labels)

    result = CliRunner().invoke(app, ["down", "--project-name", project])

    assert result.exit_code == 0, result.output
    assert "found 1 containers, 0 networks and 1 volumes" in result.stdout
    assert stack_resources(client, project)["containers"] == []
    assert [v.name for v in stack_resources(client, project)["volumes"]] == []
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(container.id)
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(volume.name)


def test_exited_service_fails_with_log(runtime_image: str, client, capsys) -> None:
    project = f"{PROJECT}-exit"
    labels = {**stack_labels(project, "coordinator"), LABEL_SERVICE: "c1"}
    container = client.containers.run(
        runtime_image, ["sh", "-c", "echo boom; exit 3"], labels=labels, detach=True
    )
    try:
        container.wait(timeout=30)
        with pytest.raises(StackError) as caught:
            wait_healthy(client, project, ["c1"], timeout_s=30)
        print_last_logs(client, project, ["c1", "redis"])
    finally:
        container.remove(force=True)

    assert caught.value.failing == ["c1"]
    assert "stack services failed c1 (exited)" in str(caught.value)
    assert caught.value.exit_code == 2
    assert capsys.readouterr().err.splitlines() == [
        "--- c1: status exited, exit code 3; last 20 log lines",
        "boom",
        "--- redis: no container was created",
    ]


def test_failed_dependency_stops_up(client) -> None:
    # Redis and Postgres started from the Prometheus image exit at once,
    # because prometheus rejects the argument slot-redis.
    spec = StackSpec(
        instances=1,
        project=f"{PROJECT}-broken",
        prometheus_port=PROMETHEUS_PORT + 200,
        coordinator_port=COORDINATOR_PORT + 200,
        runtime_image=PROMETHEUS_IMAGE,
    )
    try:
        with pytest.raises(StackError) as caught:
            start_stack(client, detect_compose_tool(), spec, False, timeout_s=120)
    finally:
        CliRunner().invoke(app, ["down", "--project-name", spec.project])

    assert sorted(caught.value.failing) == ["postgres", "redis"]
    assert "up --detach --no-build --remove-orphans` failed" in str(caught.value)
    assert stack_resources(client, spec.project)["containers"] == []


def test_wait_healthy_deadline_names_missing(client) -> None:
    with pytest.raises(StackError) as caught:
        wait_healthy(client, f"{PROJECT}-none", ["redis"], timeout_s=0.1)

    assert caught.value.failing == ["redis"]
    assert "not healthy within 0 s: redis (missing)" in str(caught.value)


def test_require_grafana_image_names_fix(client) -> None:
    with pytest.raises(InfrastructureError) as caught:
        require_grafana_image(client, "slot-harness/absent:none")

    message = str(caught.value)
    assert "GRAFANA_IMAGE 'slot-harness/absent:none' is not in this Docker" in message
    assert "docker load -i" in message
    assert "harness images build" not in message


def test_up_missing_grafana_image_exits_2(monkeypatch) -> None:
    monkeypatch.setenv("GRAFANA_IMAGE", "slot-harness/absent:none")

    result = CliRunner().invoke(
        app, ["up", "--grafana", "--project-name", f"{PROJECT}-nografana"]
    )

    assert result.exit_code == 2, result.output
    assert "load a Grafana image into the engine" in result.stderr


@pytest.fixture
def broken_grafana_image(runtime_image: str, client) -> Iterator[str]:
    """Tag an image whose entrypoint does not exist, so its container cannot start."""
    container = client.containers.create(runtime_image, ["true"])
    try:
        image = container.commit(
            repository="pytest-broken-grafana",
            tag=str(os.getpid()),
            changes=['ENTRYPOINT ["/nonexistent/grafana-server"]', "CMD []"],
        )
    finally:
        container.remove(force=True)
    yield f"pytest-broken-grafana:{os.getpid()}"
    client.images.remove(image.id, force=True)


def test_grafana_start_failure_names_grafana(broken_grafana_image, monkeypatch):
    project = f"{PROJECT}-grafana"
    monkeypatch.setenv("GRAFANA_IMAGE", broken_grafana_image)
    runner = CliRunner()
    try:
        result = runner.invoke(
            app,
            [
                "up",
                "--instances",
                "1",
                "--grafana",
                "--grafana-port",
                str(PROMETHEUS_PORT + 510),
                "--prometheus-port",
                str(PROMETHEUS_PORT + 500),
                "--coordinator-port",
                str(COORDINATOR_PORT + 500),
                "--project-name",
                project,
            ],
        )
    finally:
        runner.invoke(app, ["down", "--project-name", project])
    sections = [line for line in result.stderr.splitlines() if line.startswith("---")]

    assert result.exit_code == 2, result.output
    assert len(sections) == 1, result.stderr
    assert sections[0].startswith("--- grafana: status created, exit code"), sections
    assert "/nonexistent/grafana-server" in sections[0]
    assert sections[0].endswith("; no log output")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_up_names_down(runtime_image: str, client, signum: int) -> None:
    project = f"{PROJECT}-signal{signum}"
    offset = 600 + 10 * signum
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness",
            "stack",
            "up",
            "--instances",
            "1",
            "--prometheus-port",
            str(PROMETHEUS_PORT + offset),
            "--coordinator-port",
            str(COORDINATOR_PORT + offset),
            "--project-name",
            project,
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            # The first container shows that Compose is creating the stack.
            deadline = time.monotonic() + COMPOSE_START_DEADLINE_S
            while time.monotonic() < deadline and process.poll() is None:
                # Sparse: a container that Compose replaces between the listing
                # and an inspection would raise NotFound.
                filters = {"label": [f"{LABEL_STACK_PROJECT}={project}"]}
                if client.containers.list(all=True, filters=filters, sparse=True):
                    break
                time.sleep(0.1)
            assert process.poll() is None, "stack up ended before Compose started"
            process.send_signal(signum)
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
            down = CliRunner().invoke(app, ["down", "--project-name", project])

    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted: stack {project} may be partly started, with containers, a "
        f"network or volumes left; `harness stack down --project-name {project}` "
        "removes them"
    )
    assert down.exit_code == 0, down.output
    assert f"stack {project} removed" in down.stdout
    assert stack_resources(client, project) == {
        "containers": [],
        "networks": [],
        "volumes": [],
    }
