"""Observing runs: the harness's metrics endpoint, Prometheus and alert rules."""

from harness.observe.endpoint import MetricsEndpoint, discovery_document
from harness.observe.prometheus import RULES_FILE, PrometheusServer, require_free_port
from harness.observe.session import (
    Observation,
    ObserveOptions,
    observed_range,
    range_from_files,
    require_saved_data,
    serve_saved,
)

__all__ = [
    "RULES_FILE",
    "MetricsEndpoint",
    "Observation",
    "ObserveOptions",
    "PrometheusServer",
    "discovery_document",
    "observed_range",
    "range_from_files",
    "require_free_port",
    "require_saved_data",
    "serve_saved",
]
