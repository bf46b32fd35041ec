"""Fixtures that run the RESP proxy in this process in front of a real Redis."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from harness.proxy import ProxyConfig, ProxyServer, serve
from tests.servers import Server, wait_for_port

StartProxy = Callable[..., Awaitable[ProxyServer]]


@pytest.fixture
async def start_proxy(redis_server: Server) -> AsyncIterator[StartProxy]:
    """Return a function that starts proxies on free 127.0.0.1 ports.

    Every proxy it started is closed after the test.
    """
    proxies: list[ProxyServer] = []

    async def start(
        fraction: float = 0.0, seed: int = 0, upstream_port: int | None = None
    ) -> ProxyServer:
        config = ProxyConfig(
            upstream_host="127.0.0.1",
            upstream_port=upstream_port or redis_server.port,
            listen_host="127.0.0.1",
            listen_port=0,
            control_host="127.0.0.1",
            control_port=0,
            watch_conflict_fraction=fraction,
            seed=seed,
            upstream_connect_timeout_s=2.0,
        )
        proxy = await serve(config)
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        await proxy.close()


@pytest.fixture
def key_prefix() -> str:
    """A prefix that keeps this test's keys apart in the shared Redis."""
    return f"proxy-test:{uuid.uuid4().hex[:12]}:"


def start_redis_on_port(port: int, data_dir: Path) -> Server:
    """Start redis-server on a given port, so a restart keeps the address."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server not found; install Debian's redis-server package"
        )
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(data_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, 10, "redis-server")
    except TimeoutError:
        process.kill()
        process.wait(timeout=10)
        raise
    return Server(process, port, f"redis://127.0.0.1:{port}/0")
