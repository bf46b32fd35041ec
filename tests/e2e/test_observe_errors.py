"""Prometheus that cannot start, or a port someone else holds: clear exit 2."""

from __future__ import annotations

import socket
from pathlib import Path

import docker
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import HarnessError, InfrastructureError
from harness.images import ensure_prometheus_image
from harness.observe import prometheus as prometheus_module
from harness.observe import serve_saved
from harness.observe.prometheus import PrometheusServer, replay_config

pytestmark = pytest.mark.docker

SMOKE = str(Path(__file__).parents[2] / "scenarios" / "smoke.yaml")


@pytest.fixture
def listener():
    """A socket listening on 127.0.0.1, as another user's server would be."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


@pytest.fixture
def prometheus_servers(tmp_path):
    client = docker.from_env(timeout=60)
    image = ensure_prometheus_image(lambda line: None)
    started: list[PrometheusServer] = []

    def make(name: str, port: int = 0) -> PrometheusServer:
        server = PrometheusServer(
            client,
            image,
            tmp_path / name,
            f"pytest-observe-{len(started)}",
            port,
        )
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()


def project_containers(client: docker.DockerClient, name_part: str) -> list[str]:
    return [
        container.name
        for container in client.containers.list(
            all=True, filters={"label": "slot-harness.project=slot-harness"}
        )
        if name_part in container.name
    ]


def test_run_with_taken_prometheus_port_exits_2(listener, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "run",
            SMOKE,
            "--observe",
            "--prometheus-port",
            str(listener),
            "--reports",
            str(tmp_path),
        ],
    )

    assert result.exit_code == 2
    assert f"port {listener} on 127.0.0.1 is taken" in result.output
    assert "--prometheus-port" in result.output
    assert list(tmp_path.iterdir()) == []


def test_run_rejects_prometheus_port_without_observe(tmp_path):
    result = CliRunner().invoke(
        app, ["run", SMOKE, "--prometheus-port", "19999", "--reports", str(tmp_path)]
    )

    assert result.exit_code == 2
    assert "--prometheus-port 19999 needs --observe" in result.output


def test_run_rejects_one_port_for_both(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "run",
            SMOKE,
            "--observe",
            "--metrics-port",
            "19998",
            "--prometheus-port",
            "19998",
            "--reports",
            str(tmp_path),
        ],
    )

    assert result.exit_code == 2
    assert "are both 19998" in result.output


def test_observe_on_a_file_names_the_folder(tmp_path):
    history = tmp_path / "history.jsonl"
    history.write_text("{}\n")

    result = CliRunner().invoke(app, ["observe", str(history)])

    assert result.exit_code == 2
    assert "is a file, not a run folder" in result.output


def test_prometheus_losing_its_port_is_removed(prometheus_servers, monkeypatch):
    first = prometheus_servers("first")
    first.start(replay_config(), "replay.yml")
    # The port check passes in a race where the port is taken just after it.
    monkeypatch.setattr(prometheus_module, "require_free_port", lambda *args: None)
    second = prometheus_servers("second", first.port)

    with pytest.raises(InfrastructureError) as caught:
        second.start(replay_config(), "replay.yml")

    # Which of the two notices first depends on timing: the container exits
    # on the taken port, or the first server responds to the readiness probe.
    message = str(caught.value)
    assert first.url in message
    assert "is taken" in message
    assert "Pass another --prometheus-port" in message
    assert second.container is None
    assert project_containers(docker.from_env(), second.run_id) == []
    assert first.ready


def test_identity_tells_our_prometheus_from_another(prometheus_servers):
    ours = prometheus_servers("ours")
    ours.start(replay_config(), "replay.yml")
    stranger = prometheus_servers("stranger", ours.port)

    assert ours._is_ours()
    assert not stranger._is_ours()


def test_prometheus_serves_a_folder_with_a_colon(prometheus_servers):
    server = prometheus_servers("run:with:colons")

    server.start(replay_config(), "replay.yml")

    assert server.ready
    assert (server.data_dir / "wal").is_dir()


def test_observe_refuses_data_its_run_still_writes(prometheus_servers, tmp_path):
    live = prometheus_servers("run/prometheus")
    live.start(replay_config(), "replay.yml")
    run_dir = tmp_path / "run"

    with pytest.raises(HarnessError) as caught:
        serve_saved(run_dir, ensure_prometheus_image(lambda line: None))

    assert f"container slot-harness-{live.run_id}-prometheus" in str(caught.value)
    assert f"still writes {live.data_dir}" in str(caught.value)


def test_rejected_query_names_prometheus_error(prometheus_servers):
    server = prometheus_servers("query")
    server.start(replay_config(), "replay.yml")

    with pytest.raises(HarnessError) as caught:
        server.api("query", query="sum(")

    assert "Prometheus rejected query" in str(caught.value)
    assert "parse error" in str(caught.value)
