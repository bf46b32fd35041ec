"""A cluster under test on the local Docker Engine.

N coordinator instances, Redis, Postgres, the RESP proxy in front of Redis and
the TCP relay in front of Postgres share one private network per run. The host
reaches each container only through ports published on 127.0.0.1; a published
port is read again after every restart because the engine hands out a new
ephemeral port then.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

# testcontainers would start its reaper container, which needs a registry image;
# the project's own label-based teardown does that job.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import docker  # noqa: E402
import docker.errors  # noqa: E402
import redis  # noqa: E402
from testcontainers.core.container import DockerContainer  # noqa: E402
from testcontainers.core.network import Network  # noqa: E402

from harness.errors import InfrastructureError  # noqa: E402
from harness.topology.labels import remove_run, run_labels  # noqa: E402

log = logging.getLogger(__name__)

COORDINATOR_PORT = 8000
REDIS_PORT = 6379
POSTGRES_PORT = 5432
PROXY_CONTROL_PORT = 8080
READY_DEADLINE_S = 60.0


@dataclass(frozen=True)
class ClusterSpec:
    run_id: str
    runtime_image: str
    instances: int
    strategy: str
    redis_persistence: str = "aof"
    coordinator_image: str | None = None


@dataclass
class Member:
    """One container of the cluster and the port it publishes on 127.0.0.1."""

    name: str
    role: str
    container: DockerContainer
    port: int
    host_port: int | None = None

    @property
    def docker(self):
        return self.container.get_wrapped_container()


def probe(
    check: Callable[[], bool],
    deadline_s: float,
    what: str,
    abort: threading.Event | None = None,
) -> None:
    """Calls ``check`` until it returns True or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    last_error: Exception | None = None
    while time.monotonic() < deadline and not (abort and abort.is_set()):
        try:
            if check():
                return
        except Exception as err:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = err
        time.sleep(0.1)
    raise InfrastructureError(
        f"{what} was not ready within {deadline_s:.0f} s"
        + (f" (last error: {last_error})" if last_error else "")
        + "; see its log in the run folder, or `docker logs` while the run lasts"
    )


def http_json(url: str, timeout: float = 2.0, method: str = "GET", body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return reply.status, json.loads(reply.read() or b"null")


@dataclass
class DockerCluster:
    """Starts, breaks and removes the containers of one run."""

    spec: ClusterSpec
    client: docker.DockerClient = field(default_factory=docker.from_env)
    network: Network | None = None
    members: dict[str, Member] = field(default_factory=dict)
    # Set from another thread to stop a start in progress between containers.
    abort: threading.Event = field(default_factory=threading.Event)

    @property
    def instance_names(self) -> list[str]:
        return [f"coordinator-{i}" for i in range(1, self.spec.instances + 1)]

    # --- start and stop -----------------------------------------------------

    def start(self, progress: Callable[[str], None] = lambda _msg: None) -> None:
        """Starts every container and waits until each passes its readiness probe."""
        spec = self.spec
        network = Network(
            docker_network_kw={"labels": run_labels(spec.run_id, "network")}
        )
        network.name = f"slot-harness-{spec.run_id}"
        self.network = network.create()

        progress("starting Redis and Postgres")
        self._add(
            "redis",
            command="slot-redis",
            env={"REDIS_PERSISTENCE": spec.redis_persistence},
            port=REDIS_PORT,
        )
        self._add("postgres", command="slot-postgres", env={}, port=POSTGRES_PORT)
        self._add(
            "redis-proxy",
            command="python -m harness.proxy.resp",
            env={
                "UPSTREAM_HOST": "redis",
                "UPSTREAM_PORT": str(REDIS_PORT),
                "LISTEN_PORT": str(REDIS_PORT),
                "CONTROL_PORT": str(PROXY_CONTROL_PORT),
            },
            port=PROXY_CONTROL_PORT,
        )
        # The coordinators reach Postgres through this relay, which can delay
        # one instance's traffic for a latency fault.
        self._add(
            "postgres-proxy",
            command="python -m harness.proxy.tcp",
            env={
                "UPSTREAM_HOST": "postgres",
                "UPSTREAM_PORT": str(POSTGRES_PORT),
                "LISTEN_PORT": str(POSTGRES_PORT),
                "CONTROL_PORT": str(PROXY_CONTROL_PORT),
            },
            port=PROXY_CONTROL_PORT,
        )
        self.wait_redis_ready()
        self.wait_postgres_ready()
        self.wait_proxy_ready("redis-proxy")
        self.wait_proxy_ready("postgres-proxy")

        self.start_instances(progress)

    def start_instances(
        self, progress: Callable[[str], None] = lambda _msg: None
    ) -> None:
        spec = self.spec
        progress(f"starting {spec.instances} coordinator instances ({spec.strategy})")
        for name in self.instance_names:
            self._add(
                name,
                command=None
                if spec.coordinator_image
                else "python -m harness.coordinator",
                env={
                    "PORT": str(COORDINATOR_PORT),
                    "INSTANCE_ID": name,
                    "REDIS_URL": f"redis://redis-proxy:{REDIS_PORT}/0",
                    "DATABASE_URL": (
                        f"postgresql://postgres@postgres-proxy:{POSTGRES_PORT}/postgres"
                    ),
                    "COORDINATOR_STRATEGY": spec.strategy,
                },
                port=COORDINATOR_PORT,
                image=spec.coordinator_image or spec.runtime_image,
                role="coordinator",
            )
        for name in self.instance_names:
            self.wait_instance_ready(name)

    def _add(
        self,
        name: str,
        command: str | None,
        env: dict[str, str],
        port: int,
        image: str | None = None,
        role: str | None = None,
    ) -> Member:
        if self.abort.is_set():
            raise InfrastructureError(f"start of {name} aborted: the run is stopping")
        labels = run_labels(self.spec.run_id, role or name)
        container = DockerContainer(
            image or self.spec.runtime_image,
            command=command,
            env=env,
            name=f"slot-harness-{self.spec.run_id}-{name}",
            network=self.network,
            network_aliases=[name],
            labels=labels,
        )
        container.ports = {port: ("127.0.0.1", None)}
        member = Member(name=name, role=role or name, container=container, port=port)
        self.members[name] = member
        try:
            container.start()
        except docker.errors.ImageNotFound as err:
            raise InfrastructureError(
                f"image {image or self.spec.runtime_image!r} not found; run "
                "`harness images build`, or for --coordinator-image build or load "
                "your image into this Docker Engine first"
            ) from err
        except docker.errors.APIError as err:
            raise InfrastructureError(
                f"could not start container {name}: {err}"
            ) from err
        self.read_port(name)
        return member

    def replace_instances(self, strategy: str, instances: int | None = None) -> None:
        """Starts fresh coordinator containers with another strategy.

        Lets one session share Redis, Postgres and the proxy between runs of
        several strategies; only the coordinators are recreated.
        """
        for name in self.instance_names:
            member = self.members.pop(name)
            member.docker.remove(force=True)
        self.spec = dataclasses.replace(
            self.spec, strategy=strategy, instances=instances or self.spec.instances
        )
        self.start_instances()

    def teardown(self) -> None:
        """Removes every container and network labelled with this run's id."""
        removed = remove_run(self.client, self.spec.run_id)
        log.info(
            "removed %d containers and %d networks of run %s",
            len(removed.containers),
            len(removed.networks),
            self.spec.run_id,
        )

    # --- addresses --------------------------------------------------------------

    def read_port(self, name: str) -> int:
        """Reads the host port again from the engine (it changes after a restart)."""
        member = self.members[name]
        container = member.docker
        container.reload()
        bindings = container.attrs["NetworkSettings"]["Ports"].get(f"{member.port}/tcp")
        if not bindings:
            member.host_port = None
            raise InfrastructureError(
                f"container {name} publishes no port {member.port}; it may have "
                f"exited: {container.status}"
            )
        member.host_port = int(bindings[0]["HostPort"])
        return member.host_port

    def url(self, name: str) -> str:
        member = self.members[name]
        if member.host_port is None:
            self.read_port(name)
        return f"http://127.0.0.1:{member.host_port}"

    def redis_url(self) -> str:
        """Redis itself, not the proxy: the harness reads final state past the proxy."""
        return f"redis://127.0.0.1:{self.members['redis'].host_port}/0"

    def postgres_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.members['postgres'].host_port}/postgres"

    # --- readiness ----------------------------------------------------------------

    def wait_redis_ready(self, deadline_s: float = READY_DEADLINE_S) -> None:
        def ping() -> bool:
            self.read_port("redis")
            client = redis.Redis.from_url(self.redis_url(), socket_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()

        probe(ping, deadline_s, "redis", self.abort)

    def wait_postgres_ready(self, deadline_s: float = READY_DEADLINE_S) -> None:
        def ready() -> bool:
            self.read_port("postgres")
            result = self.members["postgres"].docker.exec_run(
                ["pg_isready", "-h", "127.0.0.1", "-p", str(POSTGRES_PORT)],
                user="postgres",
            )
            return result.exit_code == 0

        probe(ready, deadline_s, "postgres", self.abort)

    def wait_proxy_ready(
        self, name: str = "redis-proxy", deadline_s: float = READY_DEADLINE_S
    ) -> None:
        probe(
            lambda: http_json(self.url(name) + "/health")[0] == 200,
            deadline_s,
            name,
            self.abort,
        )

    def wait_instance_ready(
        self, name: str, deadline_s: float = READY_DEADLINE_S
    ) -> None:
        def healthy() -> bool:
            self.read_port(name)
            return http_json(self.url(name) + "/health")[0] == 200

        probe(healthy, deadline_s, f"coordinator instance {name}", self.abort)

    # --- faults ---------------------------------------------------------------------

    def instance_pid(self, name: str) -> int | None:
        """Returns the host PID of the instance's init process, if it runs."""
        return self.container_pid(name)

    def container_pid(self, name: str) -> int | None:
        """Returns the host PID of a member's init process, if it runs."""
        container = self.members[name].docker
        container.reload()
        pid = container.attrs["State"].get("Pid") or 0
        return pid if pid > 0 else None

    def kill_instance(self, name: str, pid: int | None = None) -> str:
        """Sends SIGKILL: the instance dies wherever it is, with requests in flight.

        With ``pid`` (read beforehand by ``instance_pid``) the signal goes
        straight to the container's init process from the host and lands within
        microseconds. The kernel then kills the rest of the container's PID
        namespace. A Docker API kill takes about 150 ms on the machines
        measured, too coarse to aim a kill at one request. Returns the method.
        """
        member = self.members[name]
        member.host_port = None
        method = "docker-api"
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
                method = "host-pid"
            except ProcessLookupError:
                method = "already-exited"
            except PermissionError:
                pid = None
        if pid is None:
            member.docker.kill(signal="SIGKILL")
        self._wait_exited(name)
        return method

    def _wait_exited(self, name: str, deadline_s: float = 20.0) -> None:
        def exited() -> bool:
            container = self.members[name].docker
            container.reload()
            return container.status != "running"

        probe(exited, deadline_s, f"the exit of killed {name}")

    def start_instance(self, name: str) -> None:
        self.members[name].docker.start()
        self.wait_instance_ready(name)

    def restart_redis(self, lose_data: bool = False) -> None:
        """Restarts Redis and waits until it replies to PING.

        With ``lose_data``, Redis is frozen by SIGSTOP, its files are deleted,
        and it is killed, so it cannot write a snapshot on the way down and
        comes back empty. Otherwise it stops with SIGTERM and keeps what its
        persistence settings keep.
        """
        container = self.members["redis"].docker
        if not lose_data:
            container.restart(timeout=10)
            self.wait_redis_ready()
            return
        pid = self.container_pid("redis")
        if pid is None:
            raise InfrastructureError("redis is not running, so it cannot restart")
        os.kill(pid, signal.SIGSTOP)
        try:
            result = container.exec_run(["sh", "-c", "rm -rf /data/*"], user="root")
            if result.exit_code != 0:
                raise InfrastructureError(
                    f"could not delete Redis's files: {result.output!r}"
                )
        finally:
            os.kill(pid, signal.SIGKILL)
        self._wait_exited("redis")
        container.start()
        self.wait_redis_ready()

    def set_watch_conflict_fraction(self, fraction: float) -> None:
        status, _ = http_json(
            self.url("redis-proxy") + "/config",
            method="POST",
            body={"watch_conflict_fraction": fraction},
        )
        if status != 200:
            raise InfrastructureError(f"redis-proxy rejected fraction {fraction}")

    def proxy_stats(self) -> dict:
        return http_json(self.url("redis-proxy") + "/stats")[1]

    # --- process and store faults ---------------------------------------------------

    def stop_instance(self, name: str, grace_s: float) -> None:
        """Stops an instance gracefully: SIGTERM, then SIGKILL after ``grace_s``.

        Returns once the container has exited. Its published port is gone
        until ``start_instance``, so requests to it are refused.
        """
        member = self.members[name]
        member.host_port = None
        # The Docker API takes whole seconds; rounding up never cuts the grace.
        member.docker.stop(timeout=math.ceil(grace_s))
        self._wait_exited(name)

    def restart_instance(self, name: str, grace_s: float) -> None:
        """Stops an instance gracefully, starts it and waits for its readiness."""
        self.stop_instance(name, grace_s)
        self.start_instance(name)

    def pause_instance(self, name: str) -> None:
        """Freezes every process of the instance with the cgroup freezer."""
        self.members[name].docker.pause()

    def unpause_instance(self, name: str) -> None:
        """Thaws a paused instance, and leaves an instance that is not paused alone.

        The unpause is always sent: the status the engine reports can lag just
        after a pause, and skipping on it left instances frozen. The engine
        answers "is not paused" (a 500 on Docker 28) for an instance already
        thawed.
        """
        try:
            self.members[name].docker.unpause()
        except docker.errors.APIError as err:
            if "is not paused" not in str(err):
                raise

    def instance_process_pids(self, name: str) -> list[int]:
        """Returns the host PIDs of every process in the instance's container."""
        top = self.members[name].docker.top()
        column = top["Titles"].index("PID")
        return [int(row[column]) for row in top["Processes"] or []]

    def signal_processes(self, pids: list[int], signal_number: int) -> list[int]:
        """Sends a signal to each host PID; returns the PIDs that still existed.

        Signalling by host PID needs root or CAP_KILL; PermissionError
        propagates, because no Docker API call sends a signal to every process
        of a container.
        """
        signalled = []
        for pid in pids:
            try:
                os.kill(pid, signal_number)
            except ProcessLookupError:
                continue
            signalled.append(pid)
        return signalled

    def member_address(self, name: str) -> str | None:
        """Returns the member's IPv4 address on the run's network, or None.

        A stopped container has no address, and a restarted one may get a
        new one, so it is read from the engine each time.
        """
        container = self.members[name].docker
        container.reload()
        networks = container.attrs["NetworkSettings"].get("Networks") or {}
        settings = networks.get(self.network.name) or {}
        return settings.get("IPAddress") or None

    def flush_redis_scripts(self) -> None:
        """Runs SCRIPT FLUSH, which removes every Lua script from the script cache."""
        client = redis.Redis.from_url(self.redis_url(), socket_timeout=5)
        try:
            client.script_flush()
        finally:
            client.close()

    def kill_redis_clients(self) -> int:
        """Closes every Redis connection of the RESP proxy; returns how many.

        The coordinators reach Redis only through the proxy, which closes a
        client's connection when Redis closes its upstream one. The harness's
        own connections, from the host, stay open.
        """
        proxy_address = self.member_address("redis-proxy")
        client = redis.Redis.from_url(self.redis_url(), socket_timeout=5)
        killed = 0
        try:
            for entry in client.client_list():
                if entry["addr"].rsplit(":", 1)[0] == proxy_address:
                    killed += client.client_kill_filter(_id=entry["id"])
        finally:
            client.close()
        return killed

    def postgres_query(self, sql: str) -> list[list[str]]:
        """Runs one statement with psql in the Postgres container; returns its rows."""
        result = self.members["postgres"].docker.exec_run(
            ["psql", "-h", "127.0.0.1", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
            user="postgres",
            demux=True,
        )
        stdout, stderr = result.output
        if result.exit_code != 0:
            raise InfrastructureError(
                f"psql in the postgres container failed with exit code "
                f"{result.exit_code} on {sql!r}: {(stderr or b'').decode().strip()}; "
                "check the container's log"
            )
        lines = (stdout or b"").decode().splitlines()
        return [line.split("|") for line in lines if line]

    def restart_postgres(self) -> None:
        """Restarts Postgres (fast shutdown, data kept) and waits for pg_isready."""
        self.members["postgres"].docker.restart(timeout=10)
        self.wait_postgres_ready()

    def terminate_postgres_backends(self) -> list[int]:
        """Terminates every client backend but the one that runs the statement.

        Returns the PIDs of the backends terminated: the coordinators' pooled
        sessions, and any other client's.
        """
        rows = self.postgres_query(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return [int(pid) for pid, terminated in rows if terminated == "t"]

    # --- state reset and logs ----------------------------------------------------

    def reset_state(self) -> None:
        """Empties Redis and the coordinators' Postgres tables between runs."""
        client = redis.Redis.from_url(self.redis_url(), socket_timeout=5)
        try:
            client.flushall()
        finally:
            client.close()
        self.members["postgres"].docker.exec_run(
            [
                "psql",
                "-U",
                "postgres",
                "-h",
                "127.0.0.1",
                "-c",
                "DO $$ DECLARE t text; BEGIN FOR t IN SELECT tablename FROM "
                "pg_tables WHERE schemaname = 'public' LOOP EXECUTE "
                "'TRUNCATE TABLE ' || quote_ident(t) || ' CASCADE'; END LOOP; END $$;",
            ],
            user="postgres",
        )

    def save_logs(self, folder: Path, since: datetime | None = None) -> None:
        """Writes each container's log; with ``since``, only lines from then on.

        A cluster shared by several runs (the zoo, the test session) keeps its
        containers, so without ``since`` each run folder would hold the logs
        of every run before it.
        """
        folder.mkdir(parents=True, exist_ok=True)
        for name, member in self.members.items():
            try:
                data = member.docker.logs(timestamps=True, since=since)
            except docker.errors.APIError as err:
                data = f"logs unavailable: {err}\n".encode()
            (folder / f"{name}.log").write_bytes(data)
