"""The harness's HTTP endpoint on 127.0.0.1: its metrics and the scrape targets.

GET /metrics serves the harness's own metrics. GET /targets serves the
coordinators to scrape in Prometheus's HTTP service discovery format, read
fresh on every request, because a restarted coordinator comes back on a new
host port. The server runs in threads of its own, so a storm that keeps the
event loop busy does not delay a scrape.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from harness.errors import HarnessError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"

# instance name -> host port on 127.0.0.1, or None while it is down.
TargetsSource = Callable[[], dict[str, int | None]]


def discovery_document(ports: dict[str, int | None]) -> list[dict]:
    """Turn instance ports into Prometheus's HTTP service discovery JSON.

    Each instance is its own target group, so its `instance` label is its
    name (c1, c2, ...) and its series continue across a restart on a new
    port. A stopped instance is left out until it is back.
    """
    return [
        {"targets": [f"{LOOPBACK}:{port}"], "labels": {"instance": name}}
        for name, port in sorted(ports.items())
        if port is not None
    ]


class MetricsEndpoint:
    """A small HTTP server for Prometheus: /metrics and /targets, on loopback."""

    def __init__(
        self,
        exposition: Callable[[], bytes],
        targets: TargetsSource,
        port: int = 0,
    ) -> None:
        self._exposition = exposition
        self._targets = targets
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "endpoint not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> MetricsEndpoint:
        handler = _handler_class(self._exposition, self._targets)
        try:
            self._server = ThreadingHTTPServer(
                (LOOPBACK, self._requested_port), handler
            )
        except OSError as err:
            raise HarnessError(
                f"cannot serve the harness's metrics on {LOOPBACK}:"
                f"{self._requested_port}: {err.strerror}; pass another "
                "--metrics-port, or 0 for any free port"
            ) from err
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            name="harness-metrics",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> MetricsEndpoint:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _handler_class(
    exposition: Callable[[], bytes], targets: TargetsSource
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, CONTENT_TYPE_LATEST, exposition())
            elif path == "/targets":
                body = json.dumps(discovery_document(targets())).encode()
                self._reply(200, "application/json", body)
            else:
                body = f"no {path} here; try /metrics or /targets\n".encode()
                self._reply(404, "text/plain; charset=utf-8", body)

        def _reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            # A scrape every second would flood the console otherwise.
            log.debug("metrics endpoint: " + format, *args)

    return Handler
