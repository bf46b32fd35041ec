"""Partitions, packet loss and latency on the shared cluster, seen from the client.

Each test drives one occurrence through the fault's ``inject`` and probes the
instances through their 127.0.0.1 ports with short client timeouts, so it
shows the fault took effect, and that it healed, rather than that a call
returned. Every test leaves the cluster healed and ready.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from pydantic import TypeAdapter

from harness.faults import Fault
from harness.history import HistoryWriter, load_history
from harness.nemesis import latency, packet_loss, partition
from harness.nemesis.base import FaultContext
from harness.topology import DockerCluster
from harness.topology.network import list_chains, netem_available, proxy_stats

pytestmark = [pytest.mark.docker, pytest.mark.asyncio(loop_scope="session")]

TARGET = "coordinator-2"
OTHER = "coordinator-1"
SLOTS = 400
# A store round trip on this cluster takes a few milliseconds, so a client
# timeout of one second marks only requests the fault held up.
CLIENT_TIMEOUT_S = 1.0
# A healed instance answers again once TCP retransmits the dropped segments
# or its store client reconnects; both take seconds, not tens of seconds.
RECOVERY_DEADLINE_S = 30.0

FAULT = TypeAdapter(Fault)


@dataclass
class Reply:
    status: int | None  # None: timed out or the connection failed
    elapsed_ms: float


class Probe:
    """Requests to one batch through the instances' published ports."""

    def __init__(self, cluster: DockerCluster, http: aiohttp.ClientSession) -> None:
        self.cluster = cluster
        self.http = http
        self.batch_id = f"net-{uuid.uuid4().hex[:10]}"

    async def request(self, instance: str, method: str, path: str, body=None) -> Reply:
        started = time.monotonic()
        try:
            async with self.http.request(
                method,
                self.cluster.url(instance) + path,
                json=body,
                timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S),
            ) as response:
                await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError):
            status = None
        return Reply(status, (time.monotonic() - started) * 1000)

    async def register(self) -> None:
        reply = await self.request(
            OTHER,
            "POST",
            "/batches",
            {
                "batch_id": self.batch_id,
                "slot_ids": [f"s{i}" for i in range(SLOTS)],
            },
        )
        assert reply.status == 201

    async def read(self, instance: str) -> Reply:
        """Read the batch: a request that needs Redis."""
        return await self.request(instance, "GET", f"/batches/{self.batch_id}")

    async def assign(self, instance: str) -> Reply:
        """Assign a new content: a request that needs Redis and Postgres."""
        content = f"c-{uuid.uuid4().hex[:12]}"
        return await self.request(
            instance,
            "POST",
            f"/batches/{self.batch_id}/content",
            {"text_storage_id": content, "file_name": f"{content}.txt"},
        )

    def for_peer(self, peer: str):
        return self.read if peer == "redis" else self.assign

    async def until_ok(self, instance: str, peer: str) -> Reply:
        """Repeat the peer's request until it succeeds, within the deadline."""
        deadline = time.monotonic() + RECOVERY_DEADLINE_S
        while True:
            reply = await self.for_peer(peer)(instance)
            if reply.status == 200 or time.monotonic() > deadline:
                return reply
            await asyncio.sleep(0.2)


@pytest.fixture
async def probe(cluster: DockerCluster):
    if cluster.spec.strategy != "watch":
        await asyncio.to_thread(cluster.replace_instances, "watch")
    await asyncio.to_thread(cluster.reset_state)
    async with aiohttp.ClientSession() as http:
        prober = Probe(cluster, http)
        await prober.register()
        yield prober
    # Leave every instance ready for the next test, whatever this one did.
    for name in cluster.instance_names:
        await asyncio.to_thread(cluster.wait_instance_ready, name)


@pytest.fixture
def ctx(cluster: DockerCluster, tmp_path: Path):
    """A fault context on the shared cluster, with its history in tmp_path."""
    history = HistoryWriter(tmp_path / "history.jsonl", {"test": "network"})
    yield FaultContext(
        cluster=cluster,
        history=history,
        storm_start=time.monotonic(),
        storm_duration_s=60,
    )
    history.close()


def windows(ctx: FaultContext, kind: str) -> list[dict]:
    ctx.history.close()
    history = load_history(ctx.history.path)
    return [op.value for op in history.operations if op.f == kind]


async def started(ctx: FaultContext, kind: str, check=None) -> None:
    """Wait until the window is open and ``check`` holds: the fault is in effect."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if ctx.active.get(kind) and (check is None or await check()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the {kind} fault did not take effect within 10 s")


def chains_in(cluster: DockerCluster, instance: str):
    async def present() -> bool:
        return bool(await asyncio.to_thread(list_chains, cluster, instance))

    return present


# --- partition ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "direction"),
    [
        ("redis", "both"),
        ("redis", "inbound"),
        ("postgres", "both"),
        ("postgres", "outbound"),
    ],
)
async def test_partition_cuts_instance_off_store(cluster, probe, ctx, peer, direction):
    request = probe.for_peer(peer)
    assert (await request(TARGET)).status == 200
    fault = FAULT.validate_python(
        {
            "kind": "partition",
            "peer": peer,
            "direction": direction,
            "targets": [TARGET],
            "duration_s": 3.0,
        }
    )

    occurrence = asyncio.create_task(partition.inject(fault, ctx, random.Random(1)))
    await started(ctx, "partition", chains_in(cluster, TARGET))
    cut_off = await request(TARGET)
    other = await request(OTHER)
    await occurrence
    chains_after = await asyncio.to_thread(list_chains, cluster, TARGET)
    recovered = await probe.until_ok(TARGET, peer)

    # Either the client gave up or the instance reported the store unavailable.
    assert cut_off.status is None or cut_off.status >= 500, cut_off
    assert other.status == 200, other
    assert chains_after == []
    assert recovered.status == 200, recovered
    start, end = windows(ctx, "partition")
    assert start["phase"] == "start"
    assert start["method"] == "iptables"
    assert start["direction"] == direction
    assert start["targets"] == [TARGET]
    assert len(start["addresses"]) == 2
    assert end["phase"] == "end"
    assert end["not_running"] == []
    assert end["dropped_packets"][TARGET] > 0


async def test_partition_heal_after_restart_is_noop(cluster, probe, ctx):
    fault = FAULT.validate_python(
        {"kind": "partition", "peer": "redis", "targets": [TARGET], "duration_s": 2.0}
    )

    occurrence = asyncio.create_task(partition.inject(fault, ctx, random.Random(1)))
    await started(ctx, "partition", chains_in(cluster, TARGET))
    # A restart gives the instance a new network namespace with no rules.
    await asyncio.to_thread(cluster.members[TARGET].docker.restart, timeout=1)
    await occurrence
    await asyncio.to_thread(cluster.wait_instance_ready, TARGET)

    _, end = windows(ctx, "partition")
    assert end["dropped_packets"] == {TARGET: None}
    assert (await probe.read(TARGET)).status == 200


async def test_cancelled_partition_still_heals(cluster, probe, ctx):
    fault = FAULT.validate_python(
        {"kind": "partition", "peer": "redis", "targets": [TARGET], "duration_s": 30}
    )

    occurrence = asyncio.create_task(partition.inject(fault, ctx, random.Random(1)))
    await started(ctx, "partition", chains_in(cluster, TARGET))
    occurrence.cancel()
    with pytest.raises(asyncio.CancelledError):
        await occurrence

    assert await asyncio.to_thread(list_chains, cluster, TARGET) == []
    assert [value["phase"] for value in windows(ctx, "partition")] == ["start", "end"]
    assert (await probe.until_ok(TARGET, "redis")).status == 200


# --- packet loss ------------------------------------------------------------------

# A round trip that loses a packet waits for TCP's retransmission timeout,
# at least 200 ms on Linux, while a clean one takes a few milliseconds.
SLOW_MS = 150.0
LOSS_REQUESTS = 30


async def test_packet_loss_slows_target_requests(cluster, probe, ctx):
    fault = FAULT.validate_python(
        {
            "kind": "packet-loss",
            "peer": "redis",
            "loss_percent": 40.0,
            "targets": [TARGET],
            "duration_s": 120.0,
        }
    )

    # The window outlasts the probes by far (60 slow requests can take over
    # 20 s), so it ends by cancellation, which must still heal.
    occurrence = asyncio.create_task(packet_loss.inject(fault, ctx, random.Random(1)))
    await started(ctx, "packet-loss", chains_in(cluster, TARGET))
    lossy = [await probe.read(TARGET) for _ in range(LOSS_REQUESTS)]
    clean = [await probe.read(OTHER) for _ in range(LOSS_REQUESTS)]
    occurrence.cancel()
    with pytest.raises(asyncio.CancelledError):
        await occurrence
    await probe.until_ok(TARGET, "redis")
    healed = [await probe.read(TARGET) for _ in range(LOSS_REQUESTS)]

    slow = sum(
        1 for reply in lossy if reply.status != 200 or reply.elapsed_ms > SLOW_MS
    )
    # With 40% of packets lost each way, about two in three round trips lose
    # one; a third of them is a margin wide enough for a loaded machine.
    assert slow >= LOSS_REQUESTS // 3, [round(r.elapsed_ms) for r in lossy]
    assert sum(1 for reply in clean if reply.elapsed_ms > SLOW_MS) <= 3
    assert sum(1 for reply in healed if reply.elapsed_ms > SLOW_MS) <= 3
    assert all(reply.status == 200 for reply in clean)
    assert all(reply.status == 200 for reply in healed)
    start, end = windows(ctx, "packet-loss")
    assert start["loss_percent"] == 40.0
    assert start["method"] == "iptables"
    assert end["dropped_packets"][TARGET] > 0


# --- latency -------------------------------------------------------------------------

DELAY_MS = 400.0


def elapsed_ms(replies: list[Reply]) -> list[float]:
    assert all(reply.status == 200 for reply in replies), replies
    return [reply.elapsed_ms for reply in replies]


@pytest.mark.parametrize("peer", ["redis", "postgres"])
async def test_latency_delays_target_store_path(cluster, probe, ctx, peer):
    if netem_available():
        pytest.skip("method auto uses netem on this kernel; this test covers the proxy")
    request = probe.for_peer(peer)
    proxy = latency.LATENCY_PROXY[peer]
    before = elapsed_ms([await request(TARGET) for _ in range(5)])
    fault = FAULT.validate_python(
        {
            "kind": "latency",
            "peer": peer,
            "delay_ms": DELAY_MS,
            "targets": [TARGET],
            "duration_s": 20.0,
        }
    )

    async def proxy_has_rule() -> bool:
        stats = await asyncio.to_thread(proxy_stats, cluster, proxy)
        return bool(stats["latency"])

    occurrence = asyncio.create_task(latency.inject(fault, ctx, random.Random(1)))
    await started(ctx, "latency", proxy_has_rule)
    during = elapsed_ms([await request(TARGET) for _ in range(3)])
    other = elapsed_ms([await request(OTHER) for _ in range(3)])
    occurrence.cancel()
    with pytest.raises(asyncio.CancelledError):
        await occurrence
    after = elapsed_ms([await request(TARGET) for _ in range(5)])
    rules_after = (await asyncio.to_thread(proxy_stats, cluster, proxy))["latency"]

    # A request that needs the store makes at least one round trip to it, and
    # takes a few milliseconds without the fault.
    assert max(before) < DELAY_MS, before
    assert min(during) >= DELAY_MS, during
    assert max(other) < DELAY_MS, other
    assert max(after) < DELAY_MS, after
    assert rules_after == {}
    start, end = windows(ctx, "latency")
    assert start["method"] == "tcp-proxy"
    assert start["proxy"] == proxy
    assert start["delay_ms"] == DELAY_MS
    assert len(start["clients"]) == 1
    assert end["phase"] == "end"
