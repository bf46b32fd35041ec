"""Session-wide real servers shared by the store tests."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import Server, start_postgres, start_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="harness-redis-") as tmp:
        server = start_redis(Path(tmp))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="harness-pg-") as tmp:
        server = start_postgres(Path(tmp))
        try:
            yield server
        finally:
            server.stop()
