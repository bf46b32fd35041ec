"""Latency rules, their validation and the DelayedReader, without a network."""

from __future__ import annotations

import asyncio
import random
import re
import time

import pytest

from harness.proxy.config import ProxyConfigError
from harness.proxy.latency import (
    DelayedReader,
    Latency,
    LatencyRules,
    parse_latency_request,
)

# --- rules and parsing ----------------------------------------------------------------


def test_own_rule_wins_over_all_clients():
    rules = LatencyRules()
    rules.set(Latency(100.0), None)
    rules.set(Latency(300.0), ["10.0.0.5"])

    assert rules.for_client("10.0.0.5") == Latency(300.0)
    assert rules.for_client("10.0.0.6") == Latency(100.0)
    rules.clear(["10.0.0.5"])
    assert rules.for_client("10.0.0.5") == Latency(100.0)
    rules.clear(None)
    assert rules.for_client("10.0.0.6") is None
    assert rules.delay_s("10.0.0.6") == 0.0


def test_jitter_stays_within_bounds():
    latency = Latency(100.0, 30.0)
    rng = random.Random(4)

    draws = [latency.draw_s(rng) for _ in range(2000)]

    assert min(draws) >= 0.070
    assert max(draws) <= 0.130
    # Both sides of the delay are drawn, not only one.
    assert min(draws) < 0.075
    assert max(draws) > 0.125


def test_jitter_above_delay_never_negative():
    latency = Latency(10.0, 50.0)
    rng = random.Random(1)

    assert min(latency.draw_s(rng) for _ in range(500)) == 0.0


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"jitter_ms": 5}, "missing field 'delay_ms'"),
        ({"delay_ms": -1}, "delay_ms is -1: expected a number of milliseconds"),
        ({"delay_ms": True}, "delay_ms is True: expected a number of milliseconds"),
        ({"delay_ms": 5, "jitter_ms": "2"}, "jitter_ms is '2': expected a number"),
        ({"delay_ms": 5, "clients": "10.0.0.1"}, "clients is '10.0.0.1': expected"),
        ({"delay_ms": 5, "clients": [""]}, "clients is ['']: expected"),
        ({"delay_ms": 5, "peer": "redis"}, "unknown fields ['peer']"),
        ([5], "expected a JSON object"),
    ],
)
def test_latency_request_rejects_invalid(body, detail):
    with pytest.raises(ProxyConfigError, match="^" + re.escape(detail)):
        parse_latency_request(body)


def test_latency_request_reads_all_fields():
    latency, clients = parse_latency_request(
        {"delay_ms": 200, "jitter_ms": 20.5, "clients": ["172.18.0.5"]}
    )

    assert latency == Latency(200.0, 20.5)
    assert clients == ["172.18.0.5"]


# --- DelayedReader --------------------------------------------------------------------


async def test_delayed_reader_keeps_byte_order():
    reader = asyncio.StreamReader()
    rng = random.Random(7)
    # Jitter larger than the delay would reorder chunks if each kept its own
    # release time.
    delayed = DelayedReader(reader, 4, lambda: Latency(5.0, 20.0).draw_s(rng))
    payload = bytes(range(256)) * 4
    received = bytearray()
    try:
        for start in range(0, len(payload), 4):
            reader.feed_data(payload[start : start + 4])
            await asyncio.sleep(0)
        reader.feed_eof()
        while chunk := await asyncio.wait_for(delayed.read(), 5):
            received += chunk
    finally:
        await delayed.close()

    assert bytes(received) == payload


async def test_delayed_reader_holds_each_chunk():
    reader = asyncio.StreamReader()
    delayed = DelayedReader(reader, 1024, lambda: 0.2)
    try:
        started = time.monotonic()
        reader.feed_data(b"first")
        assert await delayed.read() == b"first"
        waited = time.monotonic() - started
    finally:
        await delayed.close()

    assert waited >= 0.2


async def test_delayed_reader_delays_once_rule_appears():
    reader = asyncio.StreamReader()
    rule = {"active": False}
    delayed = DelayedReader(reader, 1024, lambda: 0.2, active=lambda: rule["active"])
    try:
        reader.feed_data(b"before")
        started = time.monotonic()
        assert await delayed.read() == b"before"
        undelayed = time.monotonic() - started

        # The rule comes in while the next read already waits for data.
        waiting = asyncio.create_task(delayed.read())
        await asyncio.sleep(0.05)
        rule["active"] = True
        started = time.monotonic()
        reader.feed_data(b"during")
        assert await waiting == b"during"
        first_delayed = time.monotonic() - started

        started = time.monotonic()
        reader.feed_data(b"after")
        assert await delayed.read() == b"after"
        next_delayed = time.monotonic() - started
    finally:
        await delayed.close()

    assert undelayed < 0.1
    assert first_delayed >= 0.2
    assert next_delayed >= 0.2
