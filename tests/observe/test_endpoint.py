"""The harness's metrics endpoint, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.errors import HarnessError
from harness.history import Operation
from harness.metrics import HarnessMetrics
from harness.observe.endpoint import MetricsEndpoint, discovery_document
from harness.observe.prometheus import _timestamp


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def samples(body: bytes) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def operation(f: str, type_: str) -> Operation:
    return Operation(index=0, time_ns=0, process=1, type=type_, f=f, value={})


def test_discovery_skips_stopped_instances():
    document = discovery_document({"c2": 40002, "c1": 40001, "c3": None})

    assert document == [
        {"targets": ["127.0.0.1:40001"], "labels": {"instance": "c1"}},
        {"targets": ["127.0.0.1:40002"], "labels": {"instance": "c2"}},
    ]


def test_endpoint_serves_metrics_and_targets():
    metrics = HarnessMetrics()
    metrics.describe_run("r1", "smoke", "watch", 7, 15.0)
    metrics.observe(operation("content", "ok"), 12.0)
    metrics.fault_window("kill", "start")
    ports: dict[str, int | None] = {"c1": 40001}

    with MetricsEndpoint(metrics.exposition, lambda: dict(ports)) as endpoint:
        status, content_type, body = get(f"{endpoint.url}/metrics")
        ports["c1"] = 40011  # a restart on a new port
        _, _, targets = get(f"{endpoint.url}/targets")
        missing = get(f"{endpoint.url}/nothing")

    assert status == 200
    assert content_type.startswith("text/plain")
    values = samples(body)
    assert (
        values[("harness_operations_total", (("kind", "content"), ("outcome", "ok")))]
        == 1
    )
    assert values[("harness_fault_active", (("kind", "kill"),))] == 1
    assert values[("harness_faults_total", (("kind", "kill"),))] == 1
    assert values[("harness_settle_seconds", ())] == 15.0
    assert (
        values[
            (
                "harness_online_violations_total",
                (("invariant", "one-slot-per-content"),),
            )
        ]
        == 0
    )
    assert json.loads(targets) == [
        {"targets": ["127.0.0.1:40011"], "labels": {"instance": "c1"}}
    ]
    assert missing[0] == 404


def test_endpoint_listens_on_loopback_only():
    with MetricsEndpoint(lambda: b"", lambda: {}) as endpoint:
        assert endpoint._server.server_address[0] == "127.0.0.1"


def test_endpoint_taken_port_names_the_option():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(HarnessError, match=f"127.0.0.1:{port}.*--metrics-port"):
            MetricsEndpoint(lambda: b"", lambda: {}, port).start()


def test_fault_window_end_lowers_the_active_gauge():
    metrics = HarnessMetrics()
    metrics.fault_window("pause", "start")
    metrics.fault_window("pause", "start")
    metrics.fault_window("pause", "end")

    values = samples(metrics.exposition())
    assert values[("harness_fault_active", (("kind", "pause"),))] == 1
    assert values[("harness_faults_total", (("kind", "pause"),))] == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-04T21:22:57.123456789Z", 1796419377.123456),
        ("2026-12-04T21:22:57Z", 1796419377.0),
        ("2026-12-04T21:22:57.5+01:00", 1796415777.5),
        ("0001-01-01T00:00:00Z", 0.0),
    ],
)
def test_prometheus_times_parse_with_nanoseconds(text, expected):
    assert _timestamp(text) == pytest.approx(expected, abs=1e-6)
