"""The live stack's Compose-tool detection, command lines and generated files."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harness.compose import (
    BASE_FILE,
    ComposeTool,
    StackSpec,
    compose_environment,
    config_command,
    coordinators_compose,
    detect_compose_tool,
    down_command,
    prometheus_config,
    up_command,
    write_generated_files,
)
from harness.errors import HarnessError, InfrastructureError
from harness.images import ImageSet
from harness.images.prometheus import PACKAGE_HINT
from harness.stack import (
    app,
    busy_ports,
    describe_container_state,
    down_command_line,
    interrupts_raised,
    service_state,
    stack_images,
    validate_spec,
)

PLUGIN = ComposeTool(("/usr/bin/docker", "compose"), "2.29.7")
STANDALONE = ComposeTool(("/usr/bin/docker-compose",), "1.29.2")


def fake_executable(folder: Path, name: str, script: str) -> Path:
    """Write a shell script that replaces a Compose executable on the test's PATH."""
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


# --- detection ----------------------------------------------------------------


def test_detect_prefers_plugin(tmp_path: Path) -> None:
    docker = fake_executable(
        tmp_path,
        "docker",
        '[ "$1 $2 $3" = "compose version --short" ] && echo 2.29.7 && exit 0\n'
        "exit 125\n",
    )
    fake_executable(tmp_path, "docker-compose", "echo 1.29.2\n")

    tool = detect_compose_tool(path=str(tmp_path))

    assert tool == ComposeTool((str(docker), "compose"), "2.29.7")
    assert tool.is_plugin is True
    assert tool.display_name == "docker compose"


def test_detect_falls_back_to_standalone(tmp_path: Path) -> None:
    # The engine's CLI without the plugin rejects `compose` with exit code 125.
    fake_executable(tmp_path, "docker", "echo 'unknown command' >&2; exit 125\n")
    standalone = fake_executable(
        tmp_path,
        "docker-compose",
        '[ "$1 $2" = "version --short" ] && echo 1.29.2 && exit 0\nexit 1\n',
    )

    tool = detect_compose_tool(path=str(tmp_path))

    assert tool == ComposeTool((str(standalone),), "1.29.2")
    assert tool.is_plugin is False
    assert tool.display_name == "docker-compose"


def test_detect_standalone_without_docker(tmp_path: Path) -> None:
    standalone = fake_executable(tmp_path, "docker-compose", "echo 1.29.2\n")

    assert detect_compose_tool(path=str(tmp_path)).argv == (str(standalone),)


def test_detect_neither_raises(tmp_path: Path) -> None:
    fake_executable(tmp_path, "docker", "exit 125\n")
    fake_executable(tmp_path, "docker-compose", "echo broken >&2; exit 1\n")

    with pytest.raises(InfrastructureError) as caught:
        detect_compose_tool(path=str(tmp_path))

    assert caught.value.exit_code == 2
    assert "install Debian's package docker-compose" in str(caught.value)


def test_detect_empty_path_raises(tmp_path: Path) -> None:
    with pytest.raises(InfrastructureError, match="no Compose tool found"):
        detect_compose_tool(path=str(tmp_path))


# --- command lines ----------------------------------------------------------------


def test_up_command_plugin() -> None:
    spec = StackSpec(project="demo")

    assert up_command(PLUGIN, spec) == [
        "/usr/bin/docker",
        "compose",
        "--project-name",
        "demo",
        "--file",
        str(BASE_FILE),
        "--file",
        str(spec.coordinators_file),
        "up",
        "--detach",
        "--no-build",
        "--remove-orphans",
    ]


def test_up_command_standalone_grafana() -> None:
    spec = StackSpec(project="demo")

    assert up_command(STANDALONE, spec, grafana=True) == [
        "/usr/bin/docker-compose",
        "--project-name",
        "demo",
        "--file",
        str(BASE_FILE),
        "--file",
        str(spec.coordinators_file),
        "--profile",
        "grafana",
        "up",
        "--detach",
        "--no-build",
        "--remove-orphans",
    ]


def test_down_command_names_grafana_profile() -> None:
    assert down_command(STANDALONE, "demo", [BASE_FILE]) == [
        "/usr/bin/docker-compose",
        "--project-name",
        "demo",
        "--file",
        str(BASE_FILE),
        "--profile",
        "grafana",
        "down",
        "--volumes",
        "--remove-orphans",
        "--timeout",
        "10",
    ]


def test_config_command_plugin() -> None:
    spec = StackSpec(project="demo")

    assert config_command(PLUGIN, spec)[-4:] == [
        "--profile",
        "grafana",
        "config",
        "--quiet",
    ]


def test_compose_environment_values() -> None:
    spec = StackSpec(project="demo", prometheus_port=19090, grafana_port=13000)
    alerts = Path("/tmp/alerts.yml")

    env = compose_environment(spec, alerts, {"PATH": "/usr/bin"})

    assert env == {
        "PATH": "/usr/bin",
        "SLOT_STACK_PROJECT": "demo",
        "SLOT_STACK_RUNTIME_IMAGE": "slot-harness/runtime:latest",
        "SLOT_STACK_PROMETHEUS_IMAGE": "slot-harness/prometheus:latest",
        "SLOT_STACK_PROMETHEUS_PORT": "19090",
        "SLOT_STACK_PROMETHEUS_CONFIG": str(spec.prometheus_file),
        "SLOT_STACK_ALERTS": "/tmp/alerts.yml",
        "SLOT_STACK_GRAFANA_PORT": "13000",
    }


# --- generated files --------------------------------------------------------------


def test_coordinators_compose_two_instances() -> None:
    spec = StackSpec(instances=2, strategy="watch", coordinator_port=18500, project="p")

    services = coordinators_compose(spec)["services"]

    assert list(services) == ["c1", "c2"]
    assert services["c2"]["ports"] == ["127.0.0.1:18501:8000"]
    assert services["c2"]["environment"] == {
        "PORT": "8000",
        "INSTANCE_ID": "c2",
        "REDIS_URL": "redis://redis:6379/0",
        "DATABASE_URL": "postgresql://postgres@postgres:5432/postgres",
        "COORDINATOR_STRATEGY": "watch",
    }
    assert services["c1"]["labels"] == {
        "slot-harness.project": "slot-harness",
        "slot-harness.stack": "1",
        "slot-harness.stack-project": "p",
        "slot-harness.role": "coordinator",
    }
    assert services["c1"]["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
    }
    assert services["c1"]["pull_policy"] == "never"
    assert services["c1"]["restart"] == "unless-stopped"


def test_prometheus_config_targets() -> None:
    config = prometheus_config(StackSpec(instances=3))

    coordinator_job = config["scrape_configs"][0]
    assert coordinator_job["job_name"] == "coordinator"
    assert coordinator_job["static_configs"] == [
        {"targets": ["c1:8000", "c2:8000", "c3:8000"]}
    ]
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]


@pytest.fixture
def generated_spec():
    spec = StackSpec(instances=2, project=f"pytest-compose-{os.getpid()}")
    yield spec
    shutil.rmtree(spec.generated_dir, ignore_errors=True)


def test_missing_alerts_uses_empty_rules(generated_spec, tmp_path: Path) -> None:
    alerts = write_generated_files(generated_spec, alerts=tmp_path / "absent.yml")

    assert alerts == generated_spec.empty_alerts_file
    assert yaml.safe_load(alerts.read_text()) == {"groups": []}


def test_present_alerts_file_is_mounted(generated_spec, tmp_path: Path) -> None:
    rules = tmp_path / "alerts.yml"
    rules.write_text("groups: []\n")

    assert write_generated_files(generated_spec, alerts=rules) == rules


def test_prometheus_config_passes_promtool(generated_spec, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    alerts = write_generated_files(generated_spec, alerts=tmp_path / "absent.yml")
    # promtool reads the rule files too, so point them at the host's copy.
    config = yaml.safe_load(generated_spec.prometheus_file.read_text())
    config["rule_files"] = [str(alerts)]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))

    result = subprocess.run(
        [promtool, "check", "config", str(checked)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_config_validates_files(generated_spec, tmp_path: Path) -> None:
    try:
        tool = detect_compose_tool()
    except InfrastructureError as err:
        pytest.skip(f"no Compose tool on this machine: {err}")
    alerts = write_generated_files(generated_spec, alerts=tmp_path / "absent.yml")
    env = compose_environment(generated_spec, alerts, os.environ)
    argv = config_command(tool, generated_spec)

    quiet = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    full = subprocess.run(
        argv[:-1], env=env, capture_output=True, text=True, timeout=60
    )

    assert quiet.returncode == 0, quiet.stderr
    assert full.returncode == 0, full.stderr
    services = yaml.safe_load(full.stdout)["services"]
    assert sorted(services) == [
        "c1",
        "c2",
        "grafana",
        "postgres",
        "prometheus",
        "redis",
    ]
    restarts = {name: service.get("restart") for name, service in services.items()}
    assert restarts == {
        "c1": "unless-stopped",
        "c2": "unless-stopped",
        "grafana": None,
        "postgres": "unless-stopped",
        "prometheus": "unless-stopped",
        "redis": "unless-stopped",
    }
    for name, service in services.items():
        assert service["labels"]["slot-harness.stack"] == "1", name
        assert (
            service["labels"]["slot-harness.stack-project"] == generated_spec.project
        ), name


# --- input checks -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "grafana", "message"),
    [
        (StackSpec(strategy="nope"), False, "--strategy 'nope' is not a strategy"),
        (StackSpec(project="Bad Name"), False, "--project-name 'Bad Name' is invalid"),
        (
            StackSpec(instances=3, coordinator_port=65534),
            False,
            "needs ports up to 65536, above 65535",
        ),
        (
            StackSpec(instances=3, coordinator_port=9089),
            False,
            "--prometheus-port 9090 falls in the coordinators' ports 9089..9091",
        ),
        (
            StackSpec(grafana_port=18082),
            True,
            "--grafana-port 18082 falls in the coordinators' ports 18081..18083",
        ),
        (
            StackSpec(grafana_port=9090),
            True,
            "--grafana-port and --prometheus-port are both 9090",
        ),
    ],
)
def test_validate_spec_rejects(spec: StackSpec, grafana: bool, message: str) -> None:
    with pytest.raises(HarnessError) as caught:
        validate_spec(spec, grafana)

    assert message in str(caught.value)


def test_validate_spec_accepts_defaults() -> None:
    assert validate_spec(StackSpec(), grafana=True) is None


def test_up_bad_strategy_exits_2() -> None:
    result = CliRunner().invoke(app, ["up", "--strategy", "nope"])

    assert result.exit_code == 2
    assert "--strategy 'nope' is not a strategy" in result.stderr


def test_up_zero_instances_exits_2() -> None:
    result = CliRunner().invoke(app, ["up", "--instances", "0"])

    assert result.exit_code == 2


def test_up_grafana_without_image_exits_2(monkeypatch) -> None:
    monkeypatch.delenv("GRAFANA_IMAGE", raising=False)

    result = CliRunner().invoke(app, ["up", "--grafana"])

    assert result.exit_code == 2
    assert "--grafana needs GRAFANA_IMAGE" in result.stderr


def test_busy_ports_lists_listener() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        assert busy_ports([port]) == [port]


def test_busy_ports_ignores_time_wait() -> None:
    # The side that closes first keeps the port in TIME_WAIT, as a published
    # port does after a stack that served requests is removed. The listener
    # sets SO_REUSEADDR, as Go's listeners (docker-proxy) do by default.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            accepted, _ = listener.accept()
            accepted.close()
            client.recv(1)

    assert busy_ports([port]) == []


# --- images -----------------------------------------------------------------------


def test_stack_images_uses_exact_tags() -> None:
    images = ImageSet(
        base="slot-harness/base:b1",
        runtime="slot-harness/runtime:r1",
        runtime_id="sha256:0123",
        prometheus="slot-harness/prometheus:p1",
    )

    spec = stack_images(StackSpec(project="demo", instances=2), images)

    assert spec == StackSpec(
        project="demo",
        instances=2,
        runtime_image="slot-harness/runtime:r1",
        prometheus_image="slot-harness/prometheus:p1",
    )
    env = compose_environment(spec, Path("/tmp/alerts.yml"), {})
    assert env["SLOT_STACK_RUNTIME_IMAGE"] == "slot-harness/runtime:r1"
    assert env["SLOT_STACK_PROMETHEUS_IMAGE"] == "slot-harness/prometheus:p1"
    assert coordinators_compose(spec)["services"]["c2"]["image"] == (
        "slot-harness/runtime:r1"
    )


def test_stack_images_without_prometheus_raises() -> None:
    images = ImageSet(
        base="slot-harness/base:b1",
        runtime="slot-harness/runtime:r1",
        runtime_id="sha256:0123",
        prometheus=None,
    )

    with pytest.raises(InfrastructureError) as caught:
        stack_images(StackSpec(), images)

    assert caught.value.exit_code == 2
    assert "Debian's package prometheus" in str(caught.value)
    assert PACKAGE_HINT in str(caught.value)


# --- service states ---------------------------------------------------------------


class Container:
    """A container as the engine's inspect output describes it."""

    def __init__(self, attrs: dict) -> None:
        self.attrs = attrs


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({"State": {"Status": "running", "Health": {"Status": "healthy"}}}, "healthy"),
        ({"State": {"Status": "running"}}, "healthy"),
        (
            {"State": {"Status": "running", "Health": {"Status": "starting"}}},
            "starting",
        ),
        ({"State": {"Status": "exited", "ExitCode": 3}}, "exited"),
        ({"State": {"Status": "created", "Error": "exec failed"}}, "created"),
        ({"State": {"Status": "restarting"}, "RestartCount": 1}, "restarting"),
        (
            {
                "State": {"Status": "running", "Health": {"Status": "starting"}},
                "RestartCount": 2,
            },
            "restarting",
        ),
        (
            {
                "State": {"Status": "running", "Health": {"Status": "healthy"}},
                "RestartCount": 2,
            },
            "healthy",
        ),
    ],
)
def test_service_state_of_container(attrs: dict, expected: str) -> None:
    assert service_state(Container(attrs)) == expected


def test_describe_state_of_unstarted_container() -> None:
    container = Container(
        {
            "State": {
                "Status": "created",
                "ExitCode": 127,
                "Error": 'exec: "grafana": executable file not found in $PATH',
            },
            "RestartCount": 0,
        }
    )

    assert describe_container_state(container) == (
        'status created, exit code 127, error: exec: "grafana": executable file '
        "not found in $PATH"
    )


def test_describe_state_of_restarted_container() -> None:
    container = Container(
        {
            "State": {"Status": "running", "Health": {"Status": "starting"}},
            "RestartCount": 3,
        }
    )

    assert describe_container_state(container) == (
        "status running, health starting, restarted 3 times"
    )


# --- interrupts and down ----------------------------------------------------------


def test_down_command_line_default_project() -> None:
    assert down_command_line("slot-harness-stack") == "harness stack down"


def test_down_command_line_named_project() -> None:
    assert down_command_line("demo") == "harness stack down --project-name demo"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupts_raised_on_signal(signum: int) -> None:
    before = signal.getsignal(signum)

    with pytest.raises(KeyboardInterrupt) as caught:
        with interrupts_raised():
            # The Python handler runs as soon as raise_signal returns.
            signal.raise_signal(signum)

    assert caught.value.args == (signal.Signals(signum).name,)
    assert signal.getsignal(signum) is before
