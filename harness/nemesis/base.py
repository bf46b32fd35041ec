"""The context every fault runs in: cluster, history, timing and the storm's batches."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.history import HistoryWriter
from harness.topology.docker_cluster import DockerCluster


class DeliveryFeed:
    """Announces the first copy of each new event as it is sent, for faults timed to it.

    A kill aimed at the instance that receives a new event, a few milliseconds
    after it was sent, lands while that instance takes a slot. That is where
    coordinators lose data, and a kill at a random instant mostly meets an idle
    process.
    """

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[tuple[str, str]]] = []

    def announce(self, batch_id: str, instance: str) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result((batch_id, instance))

    async def next(self, timeout_s: float) -> tuple[str, str] | None:
        """Waits for the next new event; returns its batch id and instance, or None."""
        waiter: asyncio.Future[tuple[str, str]] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            return None


@dataclass
class FaultContext:
    cluster: DockerCluster
    history: HistoryWriter
    storm_start: float
    storm_duration_s: float
    batch_ids: list[str] = field(default_factory=list)
    deliveries: DeliveryFeed = field(default_factory=DeliveryFeed)
    # Faults currently in effect, by kind, for the progress display.
    active: dict[str, int] = field(default_factory=dict)
    # Called at every window's start and end, for the harness's metrics.
    on_window: Callable[[str, str], None] = lambda _kind, _phase: None

    async def sleep_until(self, offset_s: float) -> None:
        delay = self.storm_start + offset_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def storm_left_s(self) -> float:
        return self.storm_start + self.storm_duration_s - time.monotonic()

    def hold_s(self, duration_s: float | None) -> float:
        """Returns how long an occurrence lasts: its duration, or to the storm end."""
        if duration_s is None:
            return max(0.0, self.storm_left_s())
        return duration_s

    def resolve_targets(
        self, targets: str | list[str], rng: random.Random
    ) -> list[str]:
        """Turns a fault's targets into instance names for one occurrence."""
        names = self.cluster.instance_names
        if targets == "random-instance":
            return [rng.choice(names)]
        if targets == "all-instances":
            return list(names)
        return list(targets)

    def window(self, kind: str, phase: str, **value: Any) -> None:
        """Records the start or end of a fault window in the history."""
        self.history.append("nemesis", "nemesis", kind, {"phase": phase, **value})
        delta = 1 if phase == "start" else -1
        self.active[kind] = self.active.get(kind, 0) + delta
        self.on_window(kind, phase)
