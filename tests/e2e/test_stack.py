"""`harness stack up` and `down` on the local Docker Engine, with real Compose.

The stack gets its own project name and ports, so a user's stack on the
default ports is left alone.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator

import docker
import pytest
import yaml
from typer.testing import CliRunner

from harness.compose import (
    ALERTS_FILE,
    LABEL_STACK,
    LABEL_STACK_PROJECT,
    PROMETHEUS_IMAGE,
    StackSpec,
    detect_compose_tool,
    stack_labels,
)
from harness.errors import InfrastructureError
from harness.stack import (
    LABEL_SERVICE,
    StackError,
    app,
    print_last_logs,
    require_images,
    start_stack,
    wait_healthy,
)

pytestmark = pytest.mark.docker

PROJECT = f"pytest-stack-{os.getpid()}"
PROMETHEUS_PORT = 19490
COORDINATOR_PORT = 19481
INSTANCES = 2
TARGETS_DEADLINE_S = 60.0


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
    assert second.exit_code == 0, second.output
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
        "--- c1: last 20 log lines",
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


def test_require_images_names_missing(client) -> None:
    with pytest.raises(InfrastructureError) as caught:
        require_images(client, ["slot-harness/absent:none"])

    assert "slot-harness/absent:none not found" in str(caught.value)
    assert "run `harness images build`" in str(caught.value)
