"""Seeded, paced storms of duplicate events across coordinator instances.

A firing sends one event (a content item or a validation failure) D times at
once, each copy to a different instance in turn, the way a broker with
at-least-once delivery and several consumers does. Firings are paced so that
the requests per second stay at the scenario's rate, for the scenario's
duration, so faults land while batches are filling.

Every distinct event is fired once in its batch's segment of the storm, and
the rest of the storm re-fires events already sent, which exercises the
replay path, after a batch is full too. Both the count of firings and the
time are bounded.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from harness.client import CoordinatorClient
from harness.scenario import Scenario

log = logging.getLogger(__name__)

EventKind = Literal["content", "failure"]
MAX_IN_FLIGHT = 400
REDELIVERY_ROUNDS = 5


@dataclass(frozen=True)
class Event:
    kind: EventKind
    batch_id: str
    key: str

    def request(self) -> tuple[str, str, dict, dict]:
        """Returns the operation kind, the path, the history value and the body."""
        if self.kind == "content":
            value = {"batch_id": self.batch_id, "text_storage_id": self.key}
            body = {"text_storage_id": self.key, "file_name": f"{self.key}.txt"}
            return "content", f"/batches/{self.batch_id}/content", value, body
        value = {"batch_id": self.batch_id, "failure_id": self.key}
        return (
            "failure",
            f"/batches/{self.batch_id}/failures",
            value,
            {"failure_id": self.key},
        )


@dataclass(frozen=True)
class BatchPlan:
    batch_id: str
    slot_ids: list[str]
    events: list[Event]


@dataclass
class StormPlan:
    batches: list[BatchPlan]
    firings: list[Event]
    interval_s: float

    @property
    def events(self) -> list[Event]:
        return [event for batch in self.batches for event in batch.events]

    @property
    def duration_s(self) -> float:
        return len(self.firings) * self.interval_s


def plan_batches(scenario: Scenario, run_tag: str) -> list[BatchPlan]:
    """Names every batch, slot, content and failure of the run.

    ``run_tag`` keeps ids unique when several runs share one cluster.
    """
    plans = []
    for number in range(scenario.batches):
        batch_id = f"{run_tag}-b{number:03d}"
        slots = [f"s{i:04d}" for i in range(scenario.slots_per_batch)]
        events = [
            Event("content", batch_id, f"ts-{i:05d}")
            for i in range(scenario.contents_per_batch)
        ]
        events += [
            Event("failure", batch_id, f"vf-{i:04d}")
            for i in range(scenario.failures_per_batch)
        ]
        plans.append(BatchPlan(batch_id, slots, events))
    return plans


def plan_storm(scenario: Scenario, batches: list[BatchPlan]) -> StormPlan:
    """Orders the firings of the storm from the scenario's seed.

    The storm is cut into one segment per batch. A segment opens with its
    batch's events in random order, fired at full pace like an upload of a
    whole batch, and is filled up with re-fires of events already sent, like
    a broker's redeliveries. So batches fill one after another through the
    whole storm, and a fault at any time meets slots being taken.
    """
    rng = random.Random(scenario.seed)
    firings_per_s = scenario.rate / scenario.duplicates
    wanted = int(firings_per_s * scenario.duration_s)
    segment = wanted / len(batches)

    firings: list[Event] = []
    fired: list[Event] = []
    for number, batch in enumerate(batches):
        events = batch.events[:]
        rng.shuffle(events)
        firings += events
        fired += events
        segment_end = round(segment * (number + 1))
        while len(firings) < segment_end and fired:
            firings.append(rng.choice(fired))

    if len(firings) > wanted:
        log.warning(
            "rate %.0f/s over %.0f s is too few for %d events x %d copies; "
            "the storm will take %.0f s instead",
            scenario.rate,
            scenario.duration_s,
            len(fired),
            scenario.duplicates,
            len(firings) / firings_per_s,
        )
    return StormPlan(batches, firings, 1.0 / firings_per_s)


@dataclass
class Acks:
    """Events whose replies proved them handled: an ok or a definite refusal."""

    handled: set[Event] = field(default_factory=set)

    def record(self, event: Event, type_: str, error: str | None) -> None:
        # A definite refusal from the coordinator counts as handled. A request
        # never sent (instance down, connect refused) does not, so it is sent again.
        if type_ == "ok" or (type_ == "fail" and not _not_sent(error)):
            self.handled.add(event)

    def unhandled(self, events: list[Event]) -> list[Event]:
        return [event for event in events if event not in self.handled]


def _not_sent(error: str | None) -> bool:
    return error in ("instance-down", "connect-refused")


class Storm:
    """Runs the storm and the redelivery pass against the instances."""

    def __init__(
        self,
        plan: StormPlan,
        client: CoordinatorClient,
        instances: list[str],
        duplicates: int,
        seed: int,
        spread_ms: float = 0.0,
        on_firing: Callable[[int], None] = lambda _n: None,
        on_new_event: Callable[[str, str], None] = lambda _batch, _instance: None,
    ) -> None:
        self.plan = plan
        self.client = client
        self.instances = instances
        self.duplicates = duplicates
        self.spread_ms = spread_ms
        self.rng = random.Random(seed + 1)
        self.acks = Acks()
        self.on_firing = on_firing
        self.on_new_event = on_new_event
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.fired = 0
        self._announced: set[Event] = set()

    async def send_copy(self, event: Event, instance: str) -> None:
        f, path, value, body = event.request()
        async with self._in_flight:
            op, _ = await self.client.call(f, instance, "POST", path, value, body)
        self.acks.record(event, op.type, op.value.get("error"))

    async def send_copy_later(
        self, event: Event, instance: str, delay_s: float
    ) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        if event not in self._announced:
            self._announced.add(event)
            self.on_new_event(event.batch_id, instance)
        await self.send_copy(event, instance)

    async def fire(self, event: Event, copies: int) -> None:
        """Sends ``copies`` copies of an event to instances picked at random.

        The copies start within ``spread_ms`` of each other, so two events
        fired close together reach different instances in different orders,
        as they do behind a load balancer fed by a broker.
        """
        sends = [
            self.send_copy_later(
                event,
                self.rng.choice(self.instances),
                self.rng.uniform(0, self.spread_ms) / 1000,
            )
            for _ in range(copies)
        ]
        await asyncio.gather(*sends)

    async def run(self) -> None:
        """Fires every planned event at the planned pace, then waits for replies."""
        tasks: set[asyncio.Task] = set()
        start = time.monotonic()
        try:
            for number, event in enumerate(self.plan.firings):
                delay = start + number * self.plan.interval_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(self.fire(event, self.duplicates))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                self.fired = number + 1
                self.on_firing(self.fired)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def redeliver(self, deadline_s: float) -> int:
        """Sends again every event with no definite reply, in bounded rounds.

        Returns how many events still had none after the last round.
        """
        end = time.monotonic() + deadline_s
        events = self.plan.events
        for round_number in range(REDELIVERY_ROUNDS):
            pending = self.acks.unhandled(events)
            if not pending or time.monotonic() >= end:
                break
            log.info("redelivery round %d: %d events", round_number + 1, len(pending))
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(self.fire(event, 1) for event in pending)),
                    timeout=max(0.1, end - time.monotonic()),
                )
            except TimeoutError:
                break
            if self.acks.unhandled(events):
                await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))
        return len(self.acks.unhandled(events))
