"""The live stack's Compose-tool detection, command lines and generated files."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import docker.errors
import pytest
import typer
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
    prometheus_digest,
    recreate_prometheus_command,
    up_command,
    write_generated_files,
)
from harness.errors import HarnessError, InfrastructureError
from harness.images import ImageSet
from harness.images.prometheus import PACKAGE_HINT
from harness.stack import (
    SweepFailure,
    _remove_and_report,
    app,
    busy_ports,
    describe_container_state,
    describe_targets,
    down_command_line,
    interrupts_raised,
    remove_stack_resources,
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


def test_recreate_prometheus_command_standalone() -> None:
    spec = StackSpec(project="demo")

    argv = recreate_prometheus_command(STANDALONE, spec)

    assert argv[-6:] == [
        "up",
        "--detach",
        "--no-build",
        "--no-deps",
        "--force-recreate",
        "prometheus",
    ]
    assert "--profile" not in argv


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
        "SLOT_STACK_PROMETHEUS_DIGEST": prometheus_digest(spec, alerts),
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


def test_prometheus_digest_follows_instances(generated_spec, tmp_path: Path) -> None:
    rules = tmp_path / "alerts.yml"
    rules.write_text("groups: []\n")
    write_generated_files(generated_spec, alerts=rules)
    two = prometheus_digest(generated_spec, rules)
    again = prometheus_digest(generated_spec, rules)
    three_spec = StackSpec(instances=3, project=generated_spec.project)
    write_generated_files(three_spec, alerts=rules)
    three = prometheus_digest(three_spec, rules)

    assert len(two) == 16
    assert two == again
    assert three != two


def test_prometheus_digest_follows_rules(generated_spec, tmp_path: Path) -> None:
    rules = tmp_path / "alerts.yml"
    rules.write_text("groups: []\n")
    write_generated_files(generated_spec, alerts=rules)
    before = prometheus_digest(generated_spec, rules)
    rules.write_text("groups: [{name: extra, rules: []}]\n")
    after = prometheus_digest(generated_spec, rules)
    rules.unlink()
    absent = prometheus_digest(generated_spec, rules)

    assert after != before
    assert absent not in (before, after)


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
    labels = yaml.safe_load(full.stdout)["services"]["prometheus"]["labels"]
    assert labels["slot-harness.prometheus-digest"] == prometheus_digest(
        generated_spec, alerts
    )
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


# --- Prometheus targets -----------------------------------------------------------


def test_describe_targets_names_each_difference() -> None:
    health = {
        "c1": ("up", ""),
        "c2": ("down", 'Get "http://c2:8000/metrics": connection refused'),
        "c4": ("up", ""),
    }

    message = describe_targets(["c1", "c2", "c3"], health, 30.0)

    assert message == (
        "Prometheus did not scrape exactly the coordinators c1, c2, c3 within 30 s: "
        'c3 (not a target), c2 (down: Get "http://c2:8000/metrics": connection '
        "refused), c4 (a target of an earlier configuration); see its targets page "
        "(/targets) and pass a longer --timeout if the machine is busy"
    )


def test_describe_targets_api_error() -> None:
    message = describe_targets(["c1"], {}, 12.4, "URLError: connection refused")

    assert message == (
        "the targets API of Prometheus did not answer within 12 s: URLError: "
        "connection refused; see the Prometheus log below"
    )


# --- the label sweep of `down`, on a fake engine ----------------------------------


def api_error(explanation: str) -> docker.errors.APIError:
    return docker.errors.APIError("500 Server Error", explanation=explanation)


STALE = "error while removing network: network t_stack id 3dd5 has active endpoints"


class FakeResource:
    """A container, network or volume whose removals fail with ``errors`` in turn."""

    def __init__(self, name: str, errors=(), endpoints=None) -> None:
        self.name = name
        self.id = f"id-{name}"
        self.errors = list(errors)
        self.removals = 0
        self.endpoints = endpoints or {}
        self.attrs: dict = {"Containers": {}}

    def remove(self, **options) -> None:
        self.removals += 1
        if self.errors:
            raise self.errors.pop(0)

    def reload(self) -> None:
        self.attrs = {"Containers": self.endpoints}


class FakeCollection:
    def __init__(self, items: list, error: Exception | None = None) -> None:
        self.items = items
        self.error = error

    def list(self, **options) -> list:
        if self.error is not None:
            raise self.error
        return self.items


class FakeApi:
    """Records each forced disconnect; the names in ``failing`` fail."""

    def __init__(self, failing=()) -> None:
        self.disconnected: list[tuple[str, str, bool]] = []
        self.failing = set(failing)

    def disconnect_container_from_network(self, container, net_id, force=False):
        self.disconnected.append((container, net_id, force))
        if container in self.failing:
            raise api_error(f"endpoint {container} not found in the store")


class FakeClient:
    def __init__(self, containers=(), networks=(), volumes=(), api=None) -> None:
        self.containers = FakeCollection(list(containers))
        self.networks = FakeCollection(list(networks))
        self.volumes = FakeCollection(list(volumes))
        self.api = api or FakeApi()


def test_sweep_carries_on_past_failures() -> None:
    busy = FakeResource("t-c1-1", [api_error("removal of t-c1-1 is in progress")])
    network = FakeResource("t_stack", [api_error(STALE), api_error(STALE)])
    client = FakeClient(
        containers=[busy, FakeResource("t-c2-1")],
        networks=[network],
        volumes=[FakeResource("t_redis-data"), FakeResource("t_postgres-data")],
    )

    removed = remove_stack_resources(client, "t")

    assert removed.containers == ["t-c2-1"]
    assert removed.networks == []
    assert removed.volumes == ["t_redis-data", "t_postgres-data"]
    assert [(f.kind, f.name) for f in removed.failures] == [
        ("container", "t-c1-1"),
        ("network", "t_stack"),
    ]
    assert network.removals == 2
    assert client.api.disconnected == []


def test_sweep_failure_messages_name_fixes() -> None:
    busy = FakeResource("t-c1-1", [api_error("removal of t-c1-1 is in progress")])
    network = FakeResource("t_stack", [api_error(STALE), api_error(STALE)])
    volume = FakeResource("t_redis-data", [api_error("volume is in use - [abc]")])
    client = FakeClient(containers=[busy], networks=[network], volumes=[volume])

    failures = remove_stack_resources(client, "t").failures

    assert [f.describe() for f in failures] == [
        "container t-c1-1: removal of t-c1-1 is in progress; remove it with "
        "`docker rm -f t-c1-1`, then run `harness stack down --project-name t` "
        "again",
        f"network t_stack: {STALE}; no container uses it any more, but the engine "
        "holds stale endpoints on it and neither the engine's inspect output nor "
        "its error names an endpoint to disconnect; restarting the Docker daemon "
        "(`systemctl restart docker`) clears them, and also stops every container "
        "on this engine unless live-restore is enabled; then run `harness stack "
        "down --project-name t` again",
        "volume t_redis-data: volume is in use - [abc]; remove the containers that "
        "use it (`docker ps -a --filter volume=t_redis-data`), then run `harness "
        "stack down --project-name t` again",
    ]


def test_sweep_disconnects_stale_endpoints() -> None:
    endpoints = {"ep-0123": {"Name": "t-c1-1"}, "ep-4567": {"Name": "t-c2-1"}}
    network = FakeResource("t_stack", [api_error(STALE)], endpoints)
    client = FakeClient(networks=[network], volumes=[FakeResource("t_redis-data")])

    removed = remove_stack_resources(client, "t")

    assert client.api.disconnected == [
        ("t-c1-1", "id-t_stack", True),
        ("t-c2-1", "id-t_stack", True),
    ]
    assert removed.networks == ["t_stack"]
    assert removed.volumes == ["t_redis-data"]
    assert removed.failures == []


def test_sweep_disconnects_endpoints_named_in_error() -> None:
    # The error format of Docker 25 and later, which lists the endpoints.
    error = (
        "error while removing network: network t_stack has active endpoints "
        '(name:"t-c1-1" id:"0123456789ab", name:"t-c2-1" id:"456789abcdef")'
    )
    network = FakeResource("t_stack", [api_error(error)])
    client = FakeClient(networks=[network])

    removed = remove_stack_resources(client, "t")

    assert [name for name, _, _ in client.api.disconnected] == ["t-c1-1", "t-c2-1"]
    assert removed.networks == ["t_stack"]


def test_sweep_reports_failed_disconnect() -> None:
    endpoints = {"ep-0123": {"Name": "t-c1-1"}}
    network = FakeResource("t_stack", [api_error(STALE), api_error(STALE)], endpoints)
    client = FakeClient(networks=[network], api=FakeApi(failing=["t-c1-1"]))

    [failure] = remove_stack_resources(client, "t").failures

    assert failure.error == (
        f"{STALE}; disconnecting t-c1-1 failed: endpoint t-c1-1 not found in the store"
    )
    assert "`docker network disconnect -f` of its endpoints t-c1-1 did not help" in (
        failure.fix
    )


def test_sweep_goes_on_after_failed_listing() -> None:
    client = FakeClient(
        containers=[FakeResource("t-c1-1")],
        volumes=[FakeResource("t_redis-data")],
    )
    client.networks = FakeCollection([], api_error("context deadline exceeded"))

    removed = remove_stack_resources(client, "t")

    assert removed.containers == ["t-c1-1"]
    assert removed.volumes == ["t_redis-data"]
    assert removed.failures == [
        SweepFailure(
            "listing of",
            "networks",
            "context deadline exceeded",
            "check the Docker daemon's log, then run `harness stack down "
            "--project-name t` again",
        )
    ]


def test_down_report_lists_every_failure(monkeypatch, capsys) -> None:
    monkeypatch.setattr("harness.stack.stop_with_compose", lambda tool, spec: None)
    monkeypatch.setattr("harness.stack.detect_compose_tool", lambda: STANDALONE)
    busy = FakeResource("t-c1-1", [api_error("removal of t-c1-1 is in progress")])
    network = FakeResource("t_stack", [api_error(STALE), api_error(STALE)])
    client = FakeClient(
        containers=[busy], networks=[network], volumes=[FakeResource("t_redis")]
    )

    with pytest.raises(typer.Exit) as caught:
        _remove_and_report(client, StackSpec(project=f"pytest-sweep-{os.getpid()}"))
    output = capsys.readouterr()

    assert caught.value.exit_code == 2
    assert output.out.startswith(
        f"stack pytest-sweep-{os.getpid()} partly removed; the label sweep found 0 "
        "containers, 0 networks and 1 volumes that Compose left"
    )
    lines = output.err.splitlines()
    assert lines[0] == (
        f"error: 2 resource(s) of stack pytest-sweep-{os.getpid()} could not be "
        "removed:"
    )
    assert lines[1].startswith("  container t-c1-1: removal of t-c1-1 is in progress")
    assert lines[2].startswith(f"  network t_stack: {STALE}; no container uses it")
    assert len(lines) == 3
