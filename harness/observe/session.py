"""Observing one run: the harness's endpoint, and Prometheus with --observe.

Every run serves its metrics on 127.0.0.1 while it runs. With --observe a
Prometheus container scrapes the harness and every coordinator, evaluates the
alert rules, and keeps its data in the run folder. At the end the run saves
the alerts that fired into alerts.json and results.json.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import docker

from harness.errors import HarnessError
from harness.metrics import HarnessMetrics
from harness.observe.endpoint import MetricsEndpoint, TargetsSource
from harness.observe.prometheus import (
    PrometheusServer,
    observe_config,
    replay_config,
)
from harness.topology.labels import LABEL_PROJECT, LABEL_ROLE, PROJECT

log = logging.getLogger(__name__)

PROMETHEUS_FOLDER = "prometheus"
ALERTS_FILE = "alerts.json"


@dataclass(frozen=True)
class ObserveOptions:
    """Observation options from the command line: ports, the Prometheus image."""

    prometheus_image: str | None = None  # None: no Prometheus
    metrics_port: int = 0
    prometheus_port: int = 0


class Observation:
    """The endpoint and the optional Prometheus of one run."""

    def __init__(
        self,
        options: ObserveOptions,
        metrics: HarnessMetrics,
        targets: TargetsSource,
        run_id: str,
        run_dir: Path,
        report: Callable[[str], None],
    ) -> None:
        self.options = options
        self.run_id = run_id
        self.run_dir = run_dir
        self.report = report
        self.endpoint = MetricsEndpoint(
            metrics.exposition, targets, options.metrics_port
        )
        self.prometheus: PrometheusServer | None = None
        self.started_at = time.time()
        self.finished = False

    def start(self) -> None:
        """Serve the metrics, then start Prometheus if asked; blocks until ready."""
        self.endpoint.start()
        self.report(f"harness metrics: {self.endpoint.url}/metrics")
        if self.options.prometheus_image is None:
            return
        self.prometheus = PrometheusServer(
            docker.from_env(timeout=60),
            self.options.prometheus_image,
            self.run_dir / PROMETHEUS_FOLDER,
            self.run_id,
            self.options.prometheus_port,
        )
        self.prometheus.start(observe_config(self.endpoint.port), "prometheus.yml")
        self.started_at = time.time()
        # Saved now, so the data of a run that is interrupted can be served too.
        self._save_alerts(observed_to=None, alerts=None)
        self.report(
            f"prometheus: {self.prometheus.url} (scraping the harness and every "
            "coordinator each second)"
        )

    def finish(self) -> list[dict[str, Any]] | None:
        """Wait for a last scrape, then save and return the alerts that fired.

        Returns None without Prometheus.
        """
        if self.prometheus is None:
            return None
        ended_at = time.time()
        if not self.prometheus.wait_for_fresh_data(ended_at):
            self.report(
                "prometheus: no scrape after the run's end within the deadline; "
                "the last second of the run may be missing from its data"
            )
        observed_to = time.time()
        alerts = [
            alert.to_json()
            for alert in self.prometheus.fired_alerts(self.started_at, observed_to)
        ]
        self._save_alerts(observed_to, alerts)
        self.finished = True
        self.report(describe_alerts(alerts))
        return alerts

    def stop(self) -> None:
        """Stop Prometheus (its data stays in the run folder) and the endpoint."""
        prometheus = self.prometheus
        if prometheus is not None:
            prometheus.stop()
            if prometheus.ready:
                if not self.finished:
                    # Interrupted or failed: no alerts were read, but the range
                    # Prometheus observed is known.
                    self._save_alerts(observed_to=time.time(), alerts=None)
                self.report(
                    f"prometheus data: {prometheus.folder}; serve it again "
                    f"with: harness observe {self.run_dir}"
                )
        self.endpoint.stop()

    def _save_alerts(
        self, observed_to: float | None, alerts: list[dict[str, Any]] | None
    ) -> None:
        """Write alerts.json; alerts None means the run ended before reading them."""
        saved = {
            "observed_from": self.started_at,
            "observed_to": observed_to,
            "alerts": alerts,
        }
        (self.run_dir / ALERTS_FILE).write_text(json.dumps(saved, indent=1) + "\n")


def describe_alerts(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return "alerts fired: none"
    parts = []
    for alert in alerts:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(alert["labels"].items()))
        parts.append(
            f"{alert['alertname']}{{{labels}}} from +{alert['first_firing_s']} s"
        )
    return "alerts fired: " + "; ".join(parts)


def serve_saved(
    run_dir: Path, image: str, port: int = 0, client: docker.DockerClient | None = None
) -> PrometheusServer:
    """Start Prometheus on the data an observed run saved; it scrapes nothing.

    Raises HarnessError when the run folder contains no Prometheus data.
    """
    require_saved_data(run_dir)
    client = client or docker.from_env(timeout=60)
    data = (run_dir / PROMETHEUS_FOLDER / "data").resolve()
    writer = _running_prometheus_on(client, data)
    if writer is not None:
        raise HarnessError(
            f"the Prometheus container {writer} still writes {data}; wait until "
            "its run ends, or run `harness down` if that run's harness is gone "
            "(it removes the containers of runs whose harness process ended)"
        )
    server = PrometheusServer(
        client,
        image,
        run_dir / PROMETHEUS_FOLDER,
        f"observe-{secrets.token_hex(3)}",
        port,
        port_option="--port",
    )
    server.start(replay_config(), "replay.yml")
    return server


def require_saved_data(run_dir: Path) -> None:
    """Raise HarnessError unless run_dir is a folder with Prometheus data."""
    if not run_dir.exists():
        raise HarnessError(
            f"run folder {run_dir} does not exist; pass a folder under reports/"
        )
    if not run_dir.is_dir():
        raise HarnessError(
            f"{run_dir} is a file, not a run folder; pass the folder that contains it "
            f"({run_dir.parent})"
        )
    data = run_dir / PROMETHEUS_FOLDER / "data"
    if data.exists() and not data.is_dir():
        raise HarnessError(
            f"{data} is a file, not Prometheus's data folder; restore the folder "
            "from the run"
        )
    if not data.is_dir():
        raise HarnessError(
            f"{run_dir} contains no Prometheus data ({data} is missing): only runs "
            "made with `harness run --observe` have it"
        )


def _running_prometheus_on(client: docker.DockerClient, data: Path) -> str | None:
    """Return the name of a running Prometheus container that mounts data."""
    running = client.containers.list(
        filters={"label": [f"{LABEL_PROJECT}={PROJECT}", f"{LABEL_ROLE}=prometheus"]}
    )
    for container in running:
        for mount in container.attrs.get("Mounts") or []:
            if mount.get("Source") == os.fspath(data):
                return container.name
    return None


def observed_range(run_dir: Path) -> tuple[float, float]:
    """Return the unix times an observed run's Prometheus data covers.

    A run stopped before its end saved no end time. Its range then ends at
    the newest file of the data folder, which Prometheus wrote last.
    """
    path = run_dir / ALERTS_FILE
    damaged = f"{path} is missing or damaged"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise HarnessError(f"{damaged} ({err})") from err
    if not isinstance(saved, dict):
        raise HarnessError(f"{damaged} (a JSON {type(saved).__name__}, not an object)")
    start = _finite(saved.get("observed_from"))
    end = _finite(saved.get("observed_to"))
    if start is None:
        raise HarnessError(f"{damaged} (observed_from is not a unix time)")
    if end is None:
        if saved.get("observed_to") is not None:
            raise HarnessError(f"{damaged} (observed_to is not a unix time)")
        end = _newest_mtime(run_dir / PROMETHEUS_FOLDER / "data", default=start)
    if end < start:
        raise HarnessError(
            f"{damaged} (observed_to {end} is before observed_from {start})"
        )
    return start, end


def range_from_files(run_dir: Path) -> tuple[float, float]:
    """Estimate the range of saved data when alerts.json cannot tell it.

    The start is the history's started_at (the cluster start, a little before
    Prometheus), else the oldest data file's time. The end is the newest data
    file's time. Raises HarnessError when the data folder contains no file.
    """
    data = run_dir / PROMETHEUS_FOLDER / "data"
    times = [path.stat().st_mtime for path in data.rglob("*") if path.is_file()]
    if not times:
        raise HarnessError(
            f"{data} contains no files, so there is no Prometheus data to serve"
        )
    start = _history_start(run_dir / "history.jsonl")
    return (min(times) if start is None else start), max(times)


def _history_start(path: Path) -> float | None:
    try:
        with path.open(encoding="utf-8") as history:
            header = json.loads(history.readline())
        return datetime.fromisoformat(header["started_at"]).timestamp()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _newest_mtime(folder: Path, default: float) -> float:
    times = [path.stat().st_mtime for path in folder.rglob("*") if path.is_file()]
    return max(times, default=default)
