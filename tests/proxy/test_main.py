"""``python -m harness.proxy.resp`` as its own process, as a container runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import redis
from redis.exceptions import WatchError

from tests.servers import Server, free_port

pytestmark = pytest.mark.stores


def wait_for_health(port: int, process: subprocess.Popen, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"proxy exited early with code {process.returncode}")
        try:
            url = f"http://127.0.0.1:{port}/health"
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"proxy did not answer /health within {deadline_s} s")


def test_module_runs_proxy_until_sigterm(redis_server: Server):
    listen_port, control_port = free_port(), free_port()
    environ = {
        **os.environ,
        "UPSTREAM_HOST": "127.0.0.1",
        "UPSTREAM_PORT": str(redis_server.port),
        "LISTEN_HOST": "127.0.0.1",
        "LISTEN_PORT": str(listen_port),
        "CONTROL_HOST": "127.0.0.1",
        "CONTROL_PORT": str(control_port),
        "WATCH_CONFLICT_FRACTION": "1",
        "SEED": "5",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.proxy.resp"],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_health(control_port, process, deadline_s=10)
        client = redis.Redis(port=listen_port, socket_timeout=5)
        try:
            with client.pipeline(transaction=True) as pipe:
                pipe.watch("proxy-test:main")
                pipe.multi()
                pipe.set("proxy-test:main", "changed")
                with pytest.raises(WatchError):
                    pipe.execute()
        finally:
            client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)

    assert process.returncode == 0
    assert (
        f"RESP proxy listening on 127.0.0.1:{listen_port}, forwarding to Redis at "
        f"127.0.0.1:{redis_server.port}, control endpoint on 127.0.0.1:"
        f"{control_port}"
    ) in stderr
    assert "WATCH conflict fraction 1.0, seed 5" in stderr
    assert (
        "RESP proxy stopped after 1 connections, 1 transactions with watched keys "
        "and 1 conflicts injected"
    ) in stderr


def test_module_exits_2_without_upstream_host():
    environ = {k: v for k, v in os.environ.items() if k != "UPSTREAM_HOST"}
    result = subprocess.run(
        [sys.executable, "-m", "harness.proxy.resp"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "error: UPSTREAM_HOST is missing: set it to the host name or address of Redis\n"
    )
