"""A real Prometheus in a container of the project's own image.

It runs with host networking and listens on 127.0.0.1 only, so it reaches the
coordinators and the harness through the ports they publish on loopback, as
the harness itself does. Its data folder is in the run folder, so a run's
figures outlive the run: `harness observe RUN_DIR` serves them again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import yaml
from docker.types import Mount

from harness.errors import HarnessError, InfrastructureError
from harness.observe.endpoint import LOOPBACK
from harness.topology.labels import run_labels

log = logging.getLogger(__name__)

RULES_FILE = Path(__file__).with_name("alerts.yml")
# The external label that carries a server's identity token.
IDENTITY_LABEL = "slot_harness_server"
# Mount points of the config folder and the data folder inside the container.
CONFIG_MOUNT = "/etc/slot-harness/prometheus"
DATA_MOUNT = "/prometheus"

# One scrape and one rule evaluation a second: runs last tens of seconds, and
# an alert should fire while the bug is still happening.
SCRAPE_INTERVAL_S = 1
# Every second, because kill faults restart coordinators on new ports every few
# seconds, and each restart leaves a gap in its series until discovery.
DISCOVERY_REFRESH_S = 1
READY_DEADLINE_S = 60.0
FRESH_DEADLINE_S = 15.0
STOP_TIMEOUT_S = 15
API_TIMEOUT_S = 10.0
LOG_LINES = 20


def free_loopback_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on at this moment."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def require_free_port(port: int, option: str) -> None:
    """Raise HarnessError when something listens on 127.0.0.1:port.

    Port 0 means any free port and always passes.
    """
    if port == 0:
        return
    with socket.socket() as probe:
        # A port left in TIME_WAIT by a server that just stopped is free for
        # a new listener, as it is for Prometheus, which sets this option too.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError as err:
            raise HarnessError(
                f"port {port} on {LOOPBACK} is taken ({err.strerror}): pass "
                f"another {option}, or 0 for a free one"
            ) from err


def observe_config(harness_port: int) -> dict[str, Any]:
    """Build the scrape configuration of an observed run.

    The harness is a static target. The coordinators come from the harness's
    /targets endpoint, because their ports change when they restart.
    """
    return {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
            "scrape_timeout": f"{SCRAPE_INTERVAL_S}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
        },
        "rule_files": [f"{CONFIG_MOUNT}/{RULES_FILE.name}"],
        "scrape_configs": [
            {
                "job_name": "harness",
                "static_configs": [
                    {
                        "targets": [f"{LOOPBACK}:{harness_port}"],
                        "labels": {"instance": "harness"},
                    }
                ],
            },
            {
                "job_name": "coordinator",
                "http_sd_configs": [
                    {
                        "url": f"http://{LOOPBACK}:{harness_port}/targets",
                        "refresh_interval": f"{DISCOVERY_REFRESH_S}s",
                    }
                ],
            },
        ],
    }


def replay_config() -> dict[str, Any]:
    """Build a configuration that serves saved data and scrapes nothing."""
    return {"global": {"evaluation_interval": f"{SCRAPE_INTERVAL_S}s"}}


@dataclass(frozen=True)
class FiredAlert:
    """One alert that was firing at some point of a run, from the ALERTS series."""

    name: str
    labels: dict[str, str]
    first_s: float  # seconds from the start of the observed range
    last_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "alertname": self.name,
            "labels": self.labels,
            "first_firing_s": round(self.first_s, 1),
            "last_firing_s": round(self.last_s, 1),
        }


class PrometheusServer:
    """One Prometheus container: start, probe, query over HTTP, stop."""

    def __init__(
        self,
        client: docker.DockerClient,
        image: str,
        folder: Path,
        run_id: str,
        port: int = 0,
        port_option: str = "--prometheus-port",
    ) -> None:
        self.client = client
        self.image = image
        self.folder = folder.resolve()
        self.run_id = run_id
        self.port = port or free_loopback_port()
        # The command-line option that sets the port, for error messages.
        self.port_option = port_option
        # Written into the configuration, so that this server can be
        # distinguished from another Prometheus left on the port.
        self.identity = secrets.token_hex(8)
        self.container = None
        self.ready = False

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def config_dir(self) -> Path:
        return self.folder / "config"

    # --- lifecycle --------------------------------------------------------------

    def start(self, config: dict[str, Any], config_name: str) -> None:
        """Write config_name and the alert rules, start Prometheus, wait until ready.

        On failure the container is removed and InfrastructureError names the
        cause: a taken port, alert rules that do not load, or Prometheus's log.
        """
        require_free_port(self.port, self.port_option)
        config = {
            **config,
            "global": {
                **config.get("global", {}),
                "external_labels": {IDENTITY_LABEL: self.identity},
            },
        }
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / config_name).write_text(
            yaml.safe_dump(config, sort_keys=False)
        )
        shutil.copy2(RULES_FILE, self.config_dir / RULES_FILE.name)
        try:
            self.container = self.client.containers.run(
                self.image,
                command=[
                    f"--config.file={CONFIG_MOUNT}/{config_name}",
                    f"--storage.tsdb.path={DATA_MOUNT}",
                    f"--web.listen-address={LOOPBACK}:{self.port}",
                    # Saved runs are read back long after they ran.
                    "--storage.tsdb.retention.time=3650d",
                ],
                detach=True,
                name=f"slot-harness-{self.run_id}-prometheus",
                network_mode="host",
                # Files in the run folder stay the user's, so removing a run
                # folder needs no root.
                user=f"{os.getuid()}:{os.getgid()}",
                # Mount objects, not a volumes dict: the dict's "host:container"
                # text breaks on a run folder whose path has a colon.
                mounts=[
                    Mount(
                        CONFIG_MOUNT,
                        os.fspath(self.config_dir),
                        type="bind",
                        read_only=True,
                    ),
                    Mount(DATA_MOUNT, os.fspath(self.data_dir), type="bind"),
                ],
                labels=run_labels(self.run_id, "prometheus"),
            )
        except docker.errors.ImageNotFound as err:
            raise InfrastructureError(
                f"the Prometheus image {self.image} is missing: run "
                "`harness images build`"
            ) from err
        except docker.errors.DockerException as err:
            raise InfrastructureError(
                f"starting Prometheus from {self.image} failed: {err}"
            ) from err
        try:
            self._wait_ready()
        except BaseException:
            self._remove()
            raise
        self.ready = True

    def _wait_ready(self) -> None:
        started = time.monotonic()
        while time.monotonic() < started + READY_DEADLINE_S:
            self.container.reload()
            if self.container.status not in ("created", "running"):
                raise InfrastructureError(self._exit_reason())
            if self._answers_ready():
                if not self._is_ours():
                    raise InfrastructureError(
                        f"the port of {self.url} is taken: another server responds "
                        "there, not the Prometheus this command started. Pass "
                        f"another {self.port_option}, or 0 for a free one"
                    )
                return
            time.sleep(0.2)
        raise InfrastructureError(
            f"Prometheus on {self.url} was not ready within {READY_DEADLINE_S:.0f} s; "
            f"its last lines:\n{self.logs()}"
        )

    def _answers_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _is_ours(self) -> bool:
        try:
            loaded = self.api("status/config")["yaml"]
        except HarnessError:
            return False
        return self.identity in loaded

    def _exit_reason(self) -> str:
        """Explain why the container exited, from the lines Prometheus logged."""
        logs = self.logs()
        if "address already in use" in logs:
            return (
                f"Prometheus could not listen on {self.url}: the port is taken. "
                f"Pass another {self.port_option}, or 0 for a free one"
            )
        if "rule" in logs and ("error" in logs or "err=" in logs):
            return (
                f"Prometheus rejected the alert rules of {RULES_FILE}; check them "
                f"with `promtool check rules {RULES_FILE}`. Its last lines:\n{logs}"
            )
        return f"Prometheus exited at start; its last lines:\n{logs}"

    def logs(self) -> str:
        if self.container is None:
            return "(no container)"
        try:
            text = self.container.logs(tail=LOG_LINES).decode(errors="replace")
        except docker.errors.DockerException as err:
            return f"(logs unreadable: {err})"
        return text.strip() or "(no output)"

    def stop(self) -> None:
        """Stop with SIGTERM so the data on disk is complete, then remove."""
        if self.container is None:
            return
        try:
            self.container.stop(timeout=STOP_TIMEOUT_S)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as err:
            log.warning("could not stop the Prometheus container: %s", err)
        self._remove()

    def _remove(self) -> None:
        if self.container is None:
            return
        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as err:
            log.warning("could not remove the Prometheus container: %s", err)
        self.container = None

    # --- HTTP API ---------------------------------------------------------------

    def api(self, path: str, **params: str | float) -> Any:
        """GET /api/v1/<path> and return its data, or raise HarnessError."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=API_TIMEOUT_S) as reply:
                body = json.load(reply)
        except urllib.error.HTTPError as err:
            raise HarnessError(
                f"Prometheus rejected {path} {params}: {_error_text(err)}"
            ) from err
        except (urllib.error.URLError, OSError) as err:
            raise InfrastructureError(
                f"Prometheus on {self.url} did not respond to {path}: {err}"
            ) from err
        if body.get("status") != "success":
            raise HarnessError(f"Prometheus returned {body} for {path}")
        return body["data"]

    def query_range(
        self, expr: str, start: float, end: float, step_s: float = 1.0
    ) -> list[dict[str, Any]]:
        data = self.api("query_range", query=expr, start=start, end=end, step=step_s)
        return data["result"]

    def wait_for_fresh_data(self, after: float) -> bool:
        """Wait until each healthy target was scraped and rules evaluated after `after`.

        Returns False when FRESH_DEADLINE_S passes first. The run then saves
        what Prometheus has.
        """
        deadline = time.monotonic() + FRESH_DEADLINE_S
        while time.monotonic() < deadline:
            if self._fresh(after):
                return True
            time.sleep(0.2)
        return False

    def _fresh(self, after: float) -> bool:
        targets = self.api("targets", state="active")["activeTargets"]
        scraped = [
            _timestamp(target["lastScrape"])
            for target in targets
            if target["health"] == "up"
        ]
        groups = self.api("rules")["groups"]
        evaluated = [_timestamp(group["lastEvaluation"]) for group in groups]
        return bool(scraped) and min(scraped + evaluated) > after

    def fired_alerts(self, start: float, end: float) -> list[FiredAlert]:
        """Return each alert that fired between start and end, from ALERTS.

        A range selector returns the raw samples with their own times. A range
        query would only see samples at or before one of its steps, and so
        miss an alert first written after the last step, such as one that
        fires at the run's last evaluation.
        """
        window_ms = math.ceil((end - start) * 1000)
        data = self.api(
            "query", query=f'ALERTS{{alertstate="firing"}}[{window_ms}ms]', time=end
        )
        series = data["result"]
        alerts = []
        for entry in series:
            labels = {
                k: v
                for k, v in entry["metric"].items()
                if k not in ("__name__", "alertstate", "alertname")
            }
            times = [float(point[0]) for point in entry["values"]]
            alerts.append(
                FiredAlert(
                    name=entry["metric"]["alertname"],
                    labels=labels,
                    first_s=min(times) - start,
                    last_s=max(times) - start,
                )
            )
        return sorted(alerts, key=lambda alert: (alert.first_s, alert.name))


def _error_text(err: urllib.error.HTTPError) -> str:
    """Return the `error` field of Prometheus's JSON error body, else the status."""
    try:
        return str(json.loads(err.read())["error"])
    except (OSError, ValueError, KeyError, TypeError):
        return str(err)


def _timestamp(text: str) -> float:
    """Parse Prometheus's RFC 3339 times; a target never scraped has year 1."""
    if text.startswith("0001-01-01"):
        return 0.0
    return datetime.fromisoformat(text).timestamp()
