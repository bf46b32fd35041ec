"""`harness stack up` and `harness stack down`: a live stack to watch a cluster.

The stack runs N coordinators, Redis, Postgres and Prometheus (and Grafana on
request) with Compose, from the project's own images. Its ports are published
on 127.0.0.1 only. Unlike a run's cluster it has no owner process, so it stays
up until `harness stack down` (or `harness down --all`) removes it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Annotated

import docker
import docker.errors
import typer
from rich.markup import escape

from harness.compose import (
    BASE_FILE,
    DEFAULT_PROJECT,
    LABEL_PROMETHEUS_DIGEST,
    LABEL_STACK,
    LABEL_STACK_PROJECT,
    PROMETHEUS_PORT,
    ComposeTool,
    StackSpec,
    compose_environment,
    detect_compose_tool,
    down_command,
    recreate_prometheus_command,
    up_command,
    write_generated_files,
)
from harness.console import console, err_console
from harness.console import fail as _fail
from harness.coordinator.strategies import STRATEGY_NAMES
from harness.errors import HarnessError, InfrastructureError
from harness.images import ImageSet, build_images
from harness.images.prometheus import PACKAGE_HINT
from harness.report.results import EXIT_INTERRUPTED

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="A long-running stack (coordinators, Redis, Postgres, Prometheus) to "
    "watch a cluster live.",
)


LOG_TAIL_LINES = 20
POLL_INTERVAL_S = 1.0
# Compose's own service label, set on every container it starts.
LABEL_SERVICE = "com.docker.compose.service"
# The pattern Compose accepts for a project name.
PROJECT_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]*")


class StackError(InfrastructureError):
    """A stack that failed to start; the message names the failing services."""

    def __init__(self, message: str, failing: list[str]) -> None:
        super().__init__(message)
        self.failing = failing


# --- input and preconditions ---------------------------------------------------


def validate_spec(spec: StackSpec, grafana: bool) -> None:
    """Raise HarnessError (exit 2) for a strategy, project or ports that cannot run."""
    if spec.strategy not in STRATEGY_NAMES:
        raise HarnessError(
            f"--strategy {spec.strategy!r} is not a strategy; use one of "
            f"{', '.join(STRATEGY_NAMES)}"
        )
    if not PROJECT_PATTERN.fullmatch(spec.project):
        raise HarnessError(
            f"--project-name {spec.project!r} is invalid; use lower-case letters, "
            "digits, '-' and '_', starting with a letter or digit"
        )
    ports = spec.coordinator_ports()
    last = max(ports.values())
    if last > 65535:
        raise HarnessError(
            f"--coordinator-port {spec.coordinator_port} with {spec.instances} "
            f"instances needs ports up to {last}, above 65535; pass a lower "
            "--coordinator-port"
        )
    other_ports = {spec.prometheus_port: "--prometheus-port"}
    if grafana:
        other_ports[spec.grafana_port] = "--grafana-port"
    for port, option in other_ports.items():
        if spec.coordinator_port <= port <= last:
            raise HarnessError(
                f"{option} {port} falls in the coordinators' ports "
                f"{spec.coordinator_port}..{last}; pass ports that do not overlap"
            )
    if grafana and spec.grafana_port == spec.prometheus_port:
        raise HarnessError(
            f"--grafana-port and --prometheus-port are both {spec.prometheus_port}; "
            "pass two different ports"
        )


def stack_images(spec: StackSpec, images: ImageSet) -> StackSpec:
    """Return ``spec`` with the exact runtime and Prometheus tags of ``images``.

    The `latest` tags are shared by every checkout on the engine, so a stack
    started from them could run coordinator code older than this source.
    """
    if images.prometheus is None:
        raise InfrastructureError(
            "the stack needs the Prometheus image, which is built from Debian's "
            f"package prometheus, and that package is not installed: {PACKAGE_HINT}"
        )
    return replace(
        spec, runtime_image=images.runtime, prometheus_image=images.prometheus
    )


def require_grafana_image(client: docker.DockerClient, image: str) -> None:
    """Raise InfrastructureError when GRAFANA_IMAGE is not in this engine."""
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound as err:
        raise InfrastructureError(
            f"GRAFANA_IMAGE {image!r} is not in this Docker Engine, and the stack "
            "pulls nothing and cannot build Grafana; load a Grafana image into the "
            "engine (docker load -i grafana.tar) and set GRAFANA_IMAGE to its name"
        ) from err
    except docker.errors.APIError as err:
        raise InfrastructureError(
            f"inspecting GRAFANA_IMAGE {image!r} failed: {err}; check that it is a "
            "valid image name such as grafana/grafana:11.2.0"
        ) from err


def grafana_image() -> str:
    """Return GRAFANA_IMAGE, or raise when it is unset."""
    image = os.environ.get("GRAFANA_IMAGE", "").strip()
    if not image:
        raise HarnessError(
            "--grafana needs GRAFANA_IMAGE set to a Grafana image already in this "
            "Docker Engine (none is built here); load one with `docker load`, then "
            "run again with GRAFANA_IMAGE=<image>"
        )
    return image


def busy_ports(ports: list[int]) -> list[int]:
    """Return the ports of ``ports`` that something already listens on at 127.0.0.1."""
    busy = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # With SO_REUSEADDR, a port whose only sockets are in TIME_WAIT (a
            # stack just removed after serving requests) counts as free. A port
            # with a listener is still reported busy.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as err:
                if err.errno != errno.EADDRINUSE:
                    raise
                busy.append(port)
    return busy


def stack_filters(project: str) -> dict:
    return {"label": [f"{LABEL_STACK}=1", f"{LABEL_STACK_PROJECT}={project}"]}


# --- health -----------------------------------------------------------------------


def service_containers(client: docker.DockerClient, project: str) -> dict[str, object]:
    """Map each service of the stack to its container, as the engine lists them."""
    containers = client.containers.list(all=True, filters=stack_filters(project))
    return {c.labels.get(LABEL_SERVICE, c.name): c for c in containers}


# States of a service that failed, as opposed to one still starting.
FAILED_STATES = ("exited", "unhealthy", "created", "restarting")


def service_state(container) -> str:
    """Return healthy, starting, unhealthy, created, restarting or exited.

    A container with no healthcheck (Grafana) counts as healthy once it runs.
    "created" is a container that Compose created but could not start.
    "restarting" is one that exited and was restarted by its restart policy
    and is not healthy yet: under `restart: unless-stopped` a service that
    exits at once never stays "exited", and its health reads "starting" again
    after each restart.
    """
    state = container.attrs.get("State") or {}
    status = state.get("Status")
    if status in ("exited", "dead", "removing"):
        return "exited"
    if status == "created":
        return "created"
    health = (state.get("Health") or {}).get("Status")
    if health is None:
        health = "healthy" if status == "running" else "starting"
    if health != "healthy" and (
        status == "restarting" or container.attrs.get("RestartCount", 0) > 0
    ):
        return "restarting"
    return health


def service_states(
    client: docker.DockerClient, project: str, services: list[str]
) -> dict[str, str]:
    """Map each service to its state, or to "missing" when it has no container."""
    containers = service_containers(client, project)
    return {
        name: service_state(containers[name]) if name in containers else "missing"
        for name in services
    }


def wait_healthy(
    client: docker.DockerClient, project: str, services: list[str], timeout_s: float
) -> None:
    """Poll until every service is healthy; raise StackError on failure or deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = service_states(client, project, services)
        broken = [n for n, s in states.items() if s in FAILED_STATES]
        if broken:
            raise StackError(
                _describe("failed", broken, states) + "; their state and last log "
                "lines follow",
                broken,
            )
        if all(s == "healthy" for s in states.values()):
            return
        if time.monotonic() >= deadline:
            waiting = [n for n, s in states.items() if s != "healthy"]
            raise StackError(
                _describe(f"not healthy within {timeout_s:.0f} s:", waiting, states)
                + "; pass a longer --timeout if the machine is busy; their state "
                "and last log lines follow",
                waiting,
            )
        time.sleep(POLL_INTERVAL_S)


def _describe(what: str, names: list[str], states: dict[str, str]) -> str:
    listed = ", ".join(f"{n} ({states[n]})" for n in names)
    return f"stack services {what} {listed}"


def describe_container_state(container) -> str:
    """Describe the engine's state of one container: status, exit code and error."""
    state = container.attrs.get("State") or {}
    parts = [f"status {state.get('Status', 'unknown')}"]
    health = (state.get("Health") or {}).get("Status")
    if health:
        parts.append(f"health {health}")
    if state.get("Status") in ("exited", "dead", "created"):
        parts.append(f"exit code {state.get('ExitCode')}")
    restarts = container.attrs.get("RestartCount", 0)
    if restarts:
        parts.append(f"restarted {restarts} times")
    if state.get("Error"):
        parts.append(f"error: {state['Error']}")
    return ", ".join(parts)


def print_last_logs(client: docker.DockerClient, project: str, names: list[str]):
    """Print the state and last log lines of each service in ``names``.

    A service with no log output gets its state line only, so that a service
    that never started (Grafana with a broken image, say) shows the engine's
    error instead of an empty log section.
    """
    containers = service_containers(client, project)
    for name in names:
        container = containers.get(name)
        if container is None:
            err_console.print(f"--- {name}: no container was created", highlight=False)
            continue
        try:
            text = container.logs(tail=LOG_TAIL_LINES).decode(errors="replace")
        except docker.errors.APIError as err:
            text = f"logs unavailable: {err}\n"
        state = describe_container_state(container)
        if not text.strip():
            err_console.print(
                f"--- {name}: {state}; no log output", highlight=False, soft_wrap=True
            )
            continue
        err_console.print(
            f"--- {name}: {state}; last {LOG_TAIL_LINES} log lines",
            highlight=False,
            soft_wrap=True,
        )
        err_console.out(text.rstrip("\n"), highlight=False)


# --- up ---------------------------------------------------------------------------


def run_compose(argv: list[str], env: dict[str, str], timeout_s: float) -> None:
    """Run one Compose command; raise InfrastructureError with its output on failure."""
    try:
        result = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=max(timeout_s, 1.0),
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise InfrastructureError(
            f"{' '.join(argv[:3])} ... timed out after {timeout_s:.0f} s; pass a "
            "longer --timeout, or see `docker ps` for the stuck container"
        ) from err
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()
        raise InfrastructureError(
            f"`{' '.join(argv)}` failed with exit code {result.returncode}:\n"
            + "\n".join(output[-LOG_TAIL_LINES:])
        )


def failing_after_compose(
    client: docker.DockerClient, project: str, services: list[str]
) -> list[str]:
    """Name the services to show after a failed `compose up`.

    Compose stops when a dependency exits, turns unhealthy or cannot start,
    and that service's state and logs show why. Services still starting are
    named only when none failed and only when they wrote output, because an
    empty log section of a healthy-to-be coordinator hides the real cause,
    which Compose's own error output then names.
    """
    states = service_states(client, project, services)
    failing = [n for n, s in states.items() if s in FAILED_STATES]
    if failing:
        return failing
    containers = service_containers(client, project)
    return [
        name
        for name, state in states.items()
        if state == "starting" and _has_log_output(containers[name])
    ]


def _has_log_output(container) -> bool:
    try:
        return bool(container.logs(tail=1).strip())
    except docker.errors.APIError:
        return False


@dataclass
class StartedStack:
    spec: StackSpec
    grafana: bool

    def urls(self) -> dict[str, str]:
        urls = {"prometheus": f"http://127.0.0.1:{self.spec.prometheus_port}"}
        for name, port in self.spec.coordinator_ports().items():
            urls[name] = f"http://127.0.0.1:{port}"
        if self.grafana:
            urls["grafana"] = f"http://127.0.0.1:{self.spec.grafana_port}"
        return urls


def start_stack(
    client: docker.DockerClient,
    tool: ComposeTool,
    spec: StackSpec,
    grafana: bool,
    timeout_s: float,
) -> StartedStack:
    """Start the stack with Compose and wait until every service is healthy."""
    deadline = time.monotonic() + timeout_s

    # Ports are checked only for a new stack: a running one already binds them.
    if not service_containers(client, spec.project):
        ports = [spec.prometheus_port, *spec.coordinator_ports().values()]
        if grafana:
            ports.append(spec.grafana_port)
        busy = busy_ports(ports)
        if busy:
            raise HarnessError(
                f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 are in use; pass "
                "other ports (--prometheus-port, --coordinator-port) or stop what "
                "listens there"
            )

    alerts = write_generated_files(spec)
    if alerts == spec.empty_alerts_file:
        console.print(
            "warning: harness/observe/alerts.yml is missing, so Prometheus runs "
            "with no alert rules"
        )
    env = compose_environment(spec, alerts, os.environ)
    services = ["redis", "postgres", "prometheus", *spec.coordinator_names]
    if grafana:
        services.append("grafana")
    try:
        run_compose(up_command(tool, spec, grafana), env, deadline - time.monotonic())
        # Compose replaces Prometheus when the digest label changed. A Compose
        # that kept the old container would leave it scraping the old targets.
        digest = env["SLOT_STACK_PROMETHEUS_DIGEST"]
        if prometheus_digest_label(client, spec.project) != digest:
            console.print(
                "  Compose kept the old Prometheus container; recreating it so "
                "that it loads the changed configuration"
            )
            run_compose(
                recreate_prometheus_command(tool, spec, grafana),
                env,
                deadline - time.monotonic(),
            )
    except InfrastructureError as err:
        raise StackError(
            str(err), failing_after_compose(client, spec.project, services)
        ) from err
    wait_healthy(client, spec.project, services, deadline - time.monotonic())
    wait_scraped(spec, deadline - time.monotonic())
    return StartedStack(spec, grafana)


def prometheus_digest_label(client: docker.DockerClient, project: str) -> str | None:
    """Return the configuration digest that the stack's Prometheus was created with."""
    container = service_containers(client, project).get("prometheus")
    if container is None:
        return None
    return container.labels.get(LABEL_PROMETHEUS_DIGEST)


def scrape_health(prometheus_port: int) -> dict[str, tuple[str, str]]:
    """Map each coordinator target of Prometheus to its health and last error."""
    url = f"http://127.0.0.1:{prometheus_port}/api/v1/targets?state=active"
    with urllib.request.urlopen(url, timeout=5) as reply:
        targets = json.loads(reply.read())["data"]["activeTargets"]
    return {
        target["labels"]["instance"]: (target["health"], target["lastError"])
        for target in targets
        if target["labels"].get("job") == "coordinator"
    }


def wait_scraped(spec: StackSpec, timeout_s: float) -> None:
    """Poll Prometheus until its coordinator targets are exactly c1..cN, all up.

    Raise StackError at the deadline, naming the targets that are down,
    missing or left over from an earlier configuration.
    """
    expected = set(spec.coordinator_names)
    deadline = time.monotonic() + timeout_s
    while True:
        api_error = None
        try:
            health = scrape_health(spec.prometheus_port)
        except (OSError, urllib.error.URLError, ValueError, KeyError) as err:
            # Kept for the message, and retried until the deadline, because a
            # Prometheus that was just recreated may not serve its API yet.
            health, api_error = {}, f"{type(err).__name__}: {err}"
        up = {name for name, (state, _) in health.items() if state == "up"}
        if set(health) == expected and up == expected:
            return
        if time.monotonic() >= deadline:
            # The logs of Prometheus and of each coordinator it cannot scrape.
            failing = [
                "prometheus",
                *sorted(expected - up, key=spec.coordinator_names.index),
            ]
            raise StackError(
                describe_targets(spec.coordinator_names, health, timeout_s, api_error),
                failing,
            )
        time.sleep(POLL_INTERVAL_S)


def describe_targets(
    expected: list[str],
    health: dict[str, tuple[str, str]],
    timeout_s: float,
    api_error: str | None = None,
) -> str:
    """Describe how the coordinator targets of Prometheus differ from ``expected``."""
    if api_error is not None:
        return (
            f"the targets API of Prometheus did not answer within {timeout_s:.0f} "
            f"s: {api_error}; see the Prometheus log below"
        )
    problems = [f"{name} (not a target)" for name in expected if name not in health]
    for name, (state, error) in health.items():
        if name not in expected:
            problems.append(f"{name} (a target of an earlier configuration)")
        elif state != "up":
            problems.append(f"{name} ({state}: {error or 'no error reported'})")
    return (
        f"Prometheus did not scrape exactly the coordinators {', '.join(expected)} "
        f"within {timeout_s:.0f} s: {', '.join(problems)}; see its targets page "
        "(/targets) and pass a longer --timeout if the machine is busy"
    )


@app.command()
def up(
    instances: Annotated[
        int, typer.Option(min=1, max=50, help="Number of coordinator instances.")
    ] = 3,
    strategy: Annotated[
        str,
        typer.Option(help=f"Coordinator strategy: one of {', '.join(STRATEGY_NAMES)}."),
    ] = "lua",
    prometheus_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Prometheus port on 127.0.0.1.")
    ] = PROMETHEUS_PORT,
    coordinator_port: Annotated[
        int,
        typer.Option(
            min=1,
            max=65535,
            help="Port of c1 on 127.0.0.1; c2, c3, ... take the next ports.",
        ),
    ] = 18081,
    grafana: Annotated[
        bool,
        typer.Option(
            help="Also start Grafana (profile grafana) from the image in GRAFANA_IMAGE."
        ),
    ] = False,
    grafana_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Grafana port on 127.0.0.1.")
    ] = 3000,
    timeout: Annotated[
        float,
        typer.Option(
            min=1.0, help="Seconds to wait for every service to become healthy."
        ),
    ] = 180.0,
    project_name: Annotated[
        str,
        typer.Option(
            help="Compose project name; stacks with different names and ports can "
            "run side by side."
        ),
    ] = DEFAULT_PROJECT,
) -> None:
    """Starts the stack and waits until every service is healthy, then prints URLs."""
    spec = StackSpec(
        instances=instances,
        strategy=strategy,
        prometheus_port=prometheus_port,
        coordinator_port=coordinator_port,
        project=project_name,
        grafana_port=grafana_port,
    )
    try:
        validate_spec(spec, grafana)
        grafana_ref = grafana_image() if grafana else None
    except HarnessError as err:
        raise _fail(err) from err
    try:
        with interrupts_raised():
            _start_and_report(spec, grafana_ref, timeout)
    except KeyboardInterrupt:
        err_console.print(
            f"interrupted: stack {spec.project} may be partly started, with "
            "containers, a network or volumes left; "
            f"`{down_command_line(spec.project)}` removes them",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _start_and_report(spec: StackSpec, grafana_ref: str | None, timeout: float):
    """Build or find the images, start the stack and print its URLs."""
    from harness.run import check_docker

    client = None
    grafana = grafana_ref is not None
    try:
        client = check_docker()
        if grafana_ref is not None:
            require_grafana_image(client, grafana_ref)
        spec = stack_images(
            spec, build_images(progress=lambda msg: console.print(f"  {msg}"))
        )
        tool = detect_compose_tool()
        started = start_stack(client, tool, spec, grafana, timeout)
    except StackError as err:
        error = _fail(err)
        print_last_logs(client, spec.project, err.failing)
        err_console.print(
            "the stack is left as it is for inspection; "
            f"`{down_command_line(spec.project)}` removes it",
            highlight=False,
        )
        raise error from err
    except HarnessError as err:
        raise _fail(err) from err

    console.print(
        f"stack {spec.project} is up ({spec.instances} x {spec.strategy}, "
        f"{tool.display_name} {tool.version}, image {spec.runtime_image}):",
        highlight=False,
    )
    for name, url in started.urls().items():
        console.print(f"  {name:<10} {url}", highlight=False)


# --- interrupts -------------------------------------------------------------------


def _raise_interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def interrupts_raised() -> Iterator[None]:
    """Raise KeyboardInterrupt on SIGINT and on SIGTERM while the block runs.

    A CI runner stopping a job sends SIGTERM, which would otherwise end the
    process with no message. SIGINT gets the handler too, because a shell
    starts background jobs with SIGINT ignored. The previous handlers are
    restored on exit. Off the main thread, where Python cannot set handlers,
    nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, _raise_interrupt) for signum in stopping}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            # None is a handler set outside Python, which cannot be restored.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def down_command_line(project: str) -> str:
    """Return the command that removes the stack ``project``."""
    if project == DEFAULT_PROJECT:
        return "harness stack down"
    return f"harness stack down --project-name {project}"


# --- down -------------------------------------------------------------------------


@dataclass
class SweepFailure:
    """A stack resource that the label sweep could not remove, and how to fix it."""

    kind: str
    name: str
    error: str
    fix: str

    def describe(self) -> str:
        return f"{self.kind} {self.name}: {self.error}; {self.fix}"


@dataclass
class RemovedStack:
    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    failures: list[SweepFailure] = field(default_factory=list)


# Newer engines (Docker 25 and later) name the endpoints in the error itself,
# as `name:"c1" id:"0123456789ab"`. Docker 20.10 names none.
ENDPOINT_IN_ERROR = re.compile(r'name:"([^"]+)"')


def remove_stack_resources(client, project: str) -> RemovedStack:
    """Remove every container, then network, then volume with the stack's labels.

    Each removal is attempted even when an earlier one failed, so that one
    stale network does not leave the volumes behind. The failures are
    returned with their fixes instead of raised.
    """
    filters = stack_filters(project)
    removed = RemovedStack()
    again = down_command_line(project)

    # Listed with ignore_removed, so that a container that Compose removes
    # between the listing and its inspection is no error.
    containers = _list_or_record(
        removed,
        "containers",
        lambda: client.containers.list(all=True, filters=filters, ignore_removed=True),
        again,
    )
    for container in containers:
        try:
            container.remove(force=True, v=True)
            removed.containers.append(container.name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as err:
            removed.failures.append(
                SweepFailure(
                    "container",
                    container.name,
                    _explain(err),
                    f"remove it with `docker rm -f {container.name}`, then run "
                    f"`{again}` again",
                )
            )

    networks = _list_or_record(
        removed, "networks", lambda: client.networks.list(filters=filters), again
    )
    for network in networks:
        failure = remove_network(client, network, again)
        if failure is None:
            removed.networks.append(network.name)
        else:
            removed.failures.append(failure)

    volumes = _list_or_record(
        removed, "volumes", lambda: client.volumes.list(filters=filters), again
    )
    for volume in volumes:
        try:
            volume.remove(force=True)
            removed.volumes.append(volume.name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as err:
            removed.failures.append(
                SweepFailure(
                    "volume",
                    volume.name,
                    _explain(err),
                    "remove the containers that use it (`docker ps -a --filter "
                    f"volume={volume.name}`), then run `{again}` again",
                )
            )
    return removed


def _list_or_record(removed: RemovedStack, kind: str, listing, again: str) -> list:
    """Return ``listing()``, or record its failure and return no resources."""
    try:
        return listing()
    except docker.errors.APIError as err:
        removed.failures.append(
            SweepFailure(
                "listing of",
                kind,
                _explain(err),
                f"check the Docker daemon's log, then run `{again}` again",
            )
        )
        return []


def _explain(err: docker.errors.APIError) -> str:
    """Return the engine's own message of ``err``, without the HTTP preamble."""
    return str(err.explanation or err)


def remove_network(client, network, again: str) -> SweepFailure | None:
    """Remove one network, first disconnecting stale endpoints when it has them.

    A network whose containers are gone can still count endpoints, after an
    interrupted `down` for instance, and the engine then rejects its removal
    with "has active endpoints". `docker network disconnect -f` removes an
    endpoint by name even when its container no longer exists. Returns None
    when the network is removed or already gone, and the failure otherwise.
    """
    try:
        network.remove()
        return None
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as err:
        first = _explain(err)
    if "active endpoints" not in first:
        return SweepFailure(
            "network",
            network.name,
            first,
            f"check the Docker daemon's log, then run `{again}` again",
        )

    endpoints, problems = _network_endpoints(network, first)
    for endpoint in endpoints:
        try:
            client.api.disconnect_container_from_network(
                endpoint, network.id, force=True
            )
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as err:
            problems.append(f"disconnecting {endpoint} failed: {_explain(err)}")
    try:
        network.remove()
        return None
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as err:
        last = _explain(err)

    tried = (
        f"`docker network disconnect -f` of its endpoints {', '.join(endpoints)} "
        "did not help"
        if endpoints
        else "neither the engine's inspect output nor its error names an endpoint "
        "to disconnect"
    )
    return SweepFailure(
        "network",
        network.name,
        "; ".join([last, *problems]),
        f"no container uses it any more, but the engine holds stale endpoints on "
        f"it and {tried}; restarting the Docker daemon (`systemctl restart "
        "docker`) clears them, and also stops every container on this engine "
        f"unless live-restore is enabled; then run `{again}` again",
    )


def _network_endpoints(network, error: str) -> tuple[list[str], list[str]]:
    """Name the endpoints of ``network``: from its inspect output, then ``error``.

    Returns the names and any failure to inspect the network.
    """
    names: list[str] = []
    problems: list[str] = []
    try:
        network.reload()
        attached = network.attrs.get("Containers") or {}
        names += [entry["Name"] for entry in attached.values() if entry.get("Name")]
    except docker.errors.APIError as err:
        problems.append(f"inspecting it failed: {_explain(err)}")
    for name in ENDPOINT_IN_ERROR.findall(error):
        if name not in names:
            names.append(name)
    return names, problems


def stop_with_compose(tool: ComposeTool, spec: StackSpec) -> None:
    """Run `down --volumes` on the project's files; a failure is only reported.

    The label sweep after it removes whatever Compose left behind.
    """
    files = [BASE_FILE]
    if spec.coordinators_file.is_file():
        files.append(spec.coordinators_file)
    alerts = spec.empty_alerts_file
    env = compose_environment(spec, alerts, os.environ)
    try:
        run_compose(down_command(tool, spec.project, files), env, 120.0)
    except InfrastructureError as err:
        err_console.print(
            f"warning: {escape(str(err))}\nremoving the stack's resources by label",
            highlight=False,
        )


@app.command()
def down(
    project_name: Annotated[
        str, typer.Option(help="Compose project name given to `up`.")
    ] = DEFAULT_PROJECT,
) -> None:
    """Removes the stack: `compose down --volumes`, then anything left by label."""
    from harness.run import check_docker

    spec = StackSpec(project=project_name)
    try:
        if not PROJECT_PATTERN.fullmatch(spec.project):
            raise HarnessError(
                f"--project-name {spec.project!r} is invalid; pass the name given "
                "to `harness stack up`"
            )
        client = check_docker()
    except HarnessError as err:
        raise _fail(err) from err
    try:
        with interrupts_raised():
            _remove_and_report(client, spec)
    except KeyboardInterrupt:
        err_console.print(
            f"interrupted: stack {spec.project} may be partly removed; run "
            f"`{down_command_line(spec.project)}` again to remove the rest",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None


def stack_exists(client: docker.DockerClient, project: str) -> bool:
    """Return whether any container, network or volume carries the stack's labels."""
    filters = stack_filters(project)
    return bool(
        # Sparse, so that a container removed after the listing is no error.
        client.containers.list(all=True, filters=filters, sparse=True)
        or client.networks.list(filters=filters)
        or client.volumes.list(filters=filters)
    )


def _remove_generated_files(spec: StackSpec) -> None:
    for path in (spec.coordinators_file, spec.prometheus_file, spec.empty_alerts_file):
        path.unlink(missing_ok=True)
    if spec.generated_dir.is_dir() and not any(spec.generated_dir.iterdir()):
        spec.generated_dir.rmdir()


def _remove_and_report(client: docker.DockerClient, spec: StackSpec) -> None:
    """Remove the stack with Compose, then by label, and print what was found."""
    try:
        exists = stack_exists(client, spec.project)
    except docker.errors.APIError as err:
        raise _fail(
            InfrastructureError(
                f"listing the resources of stack {spec.project} failed: {err}; "
                "check the Docker daemon's log, then run the command again"
            )
        ) from err
    if not exists:
        _remove_generated_files(spec)
        console.print(f"no stack {spec.project} was found; nothing to remove")
        return

    try:
        stop_with_compose(detect_compose_tool(), spec)
    except InfrastructureError as err:
        err_console.print(
            f"warning: {escape(str(err))}; removing by label only", highlight=False
        )
    removed = remove_stack_resources(client, spec.project)
    _remove_generated_files(spec)
    found = (
        f"the label sweep found {len(removed.containers)} containers, "
        f"{len(removed.networks)} networks and {len(removed.volumes)} volumes "
        "that Compose left"
    )
    if not removed.failures:
        console.print(f"stack {spec.project} removed; {found}")
        return
    console.print(f"stack {spec.project} partly removed; {found}")
    raise _fail(
        InfrastructureError(
            f"{len(removed.failures)} resource(s) of stack {spec.project} could "
            "not be removed:\n"
            + "\n".join(f"  {failure.describe()}" for failure in removed.failures)
        )
    )
