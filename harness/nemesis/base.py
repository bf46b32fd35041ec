"""What every fault needs: the cluster, the history and a seeded random source."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from harness.history import HistoryWriter
from harness.topology.docker_cluster import DockerCluster


@dataclass
class FaultContext:
    cluster: DockerCluster
    history: HistoryWriter
    rng: random.Random
    storm_start: float
    storm_duration_s: float
    # Faults currently in effect, by kind, for the progress display.
    active: dict[str, int] = field(default_factory=dict)

    async def sleep_until(self, offset_s: float) -> None:
        delay = self.storm_start + offset_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def storm_left_s(self) -> float:
        return self.storm_start + self.storm_duration_s - time.monotonic()

    def window(self, kind: str, phase: str, **value: Any) -> None:
        """Records the start or end of a fault window in the history."""
        self.history.append("nemesis", "nemesis", kind, {"phase": phase, **value})
        delta = 1 if phase == "start" else -1
        self.active[kind] = self.active.get(kind, 0) + delta
