"""Observing one run: the harness's endpoint, and Prometheus with --observe.

Every run serves its metrics on 127.0.0.1 while it runs. With --observe a
Prometheus container scrapes the harness and every coordinator, evaluates the
alert rules, and keeps its data in the run folder; at the end the run saves
which alerts fired into alerts.json and results.json.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from harness.errors import HarnessError
from harness.metrics import HarnessMetrics
from harness.observe.endpoint import MetricsEndpoint, TargetsSource
from harness.observe.prometheus import PrometheusServer, observe_config, replay_config

log = logging.getLogger(__name__)

PROMETHEUS_FOLDER = "prometheus"
ALERTS_FILE = "alerts.json"


@dataclass(frozen=True)
class ObserveOptions:
    """What the command line asked for: ports, and whether to run Prometheus."""

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
        saved = {
            "observed_from": self.started_at,
            "observed_to": observed_to,
            "alerts": alerts,
        }
        (self.run_dir / ALERTS_FILE).write_text(json.dumps(saved, indent=1) + "\n")
        self.report(describe_alerts(alerts))
        return alerts

    def stop(self) -> None:
        """Stop Prometheus (its data stays in the run folder) and the endpoint."""
        if self.prometheus is not None:
            self.prometheus.stop()
            self.report(
                f"prometheus data: {self.prometheus.folder}; serve it again "
                f"with: harness observe {self.run_dir}"
            )
        self.endpoint.stop()


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

    Raises HarnessError when the run folder holds no Prometheus data.
    """
    folder = run_dir / PROMETHEUS_FOLDER
    if not (folder / "data").is_dir():
        raise HarnessError(
            f"{run_dir} holds no Prometheus data ({folder / 'data'} is missing): "
            "only runs made with `harness run --observe` have it"
        )
    server = PrometheusServer(
        client or docker.from_env(timeout=60),
        image,
        folder,
        f"observe-{secrets.token_hex(3)}",
        port,
    )
    server.start(replay_config(), "replay.yml")
    return server


def observed_range(run_dir: Path) -> tuple[float, float]:
    """Return the unix times an observed run's Prometheus data covers."""
    path = run_dir / ALERTS_FILE
    try:
        saved = json.loads(path.read_text())
        return float(saved["observed_from"]), float(saved["observed_to"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise HarnessError(
            f"{path} is missing or damaged ({err}); it is written at the end of "
            "a run made with --observe"
        ) from err
