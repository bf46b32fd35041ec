"""The coordinator's /metrics after storms, WATCH conflicts and store outages.

Every value is read from the Prometheus text that GET /metrics returns, parsed
with prometheus-client's own parser, as a scraper would read it.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Sequence

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.coordinator.metrics import MAX_GAUGE_BATCHES
from harness.coordinator.store_timing import sql_operation
from tests.coordinator.conftest import Coordinator, Reply, running, settings_for
from tests.coordinator.test_faulty_strategies import start_conflict_proxy
from tests.coordinator.test_store_outage import start_redis_on
from tests.servers import free_port

SLOTS = [f"s{i:02d}" for i in range(12)]
CONTENTS = [f"c{i:02d}" for i in range(15)]
FAILURES = ["f1", "f2"]
COPIES = 4
# Seconds GET /metrics may take while a store is down or hangs.
SCRAPE_LIMIT_S = 1.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(coordinator: Coordinator) -> Samples:
    """GET /metrics and return every sample by name and label set."""
    reply = await coordinator.request("GET", "/metrics")
    assert reply.status == 200, reply.body
    samples: Samples = {}
    for family in text_string_to_metric_families(reply.body):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def values(samples: Samples, name: str, **fixed: str) -> dict[tuple[str, ...], float]:
    """Return the samples of ``name`` whose labels include ``fixed``, keyed by
    the values of their other labels in label-name order."""
    found = {}
    for (sample_name, labels), value in samples.items():
        label_map = dict(labels)
        if sample_name != name:
            continue
        if any(label_map.get(key) != wanted for key, wanted in fixed.items()):
            continue
        rest = tuple(v for k, v in sorted(label_map.items()) if k not in fixed)
        found[rest] = value
    return found


def summed(all_samples: Sequence[Samples], name: str, **fixed: str) -> dict:
    """Add up ``values`` over the scrapes of several instances."""
    total: Counter = Counter()
    for samples in all_samples:
        total.update(values(samples, name, **fixed))
    return dict(total)


def assignment_outcome(reply: Reply) -> str:
    """Return the coordinator_assignment_seconds outcome a reply implies."""
    if reply.status == 200:
        return "assigned" if reply.body["created"] else "replay"
    error = reply.body.get("error") if isinstance(reply.body, dict) else None
    if (reply.status, error) in {
        (409, "no_slot"),
        (404, "not_found"),
        (503, "contention"),
    }:
        return error
    return "error"


async def mixed_storm(
    coordinators: Sequence[Coordinator], batch_id: str, seed: int = 3
) -> list[Reply]:
    """Send COPIES concurrent copies of every content and failure, spread over
    the instances, and return the replies."""
    jobs = [
        (kind, item, (index + copy) % len(coordinators))
        for kind, items in (("content", CONTENTS), ("failure", FAILURES))
        for index, item in enumerate(items)
        for copy in range(COPIES)
    ]
    random.Random(seed).shuffle(jobs)

    async def send(kind: str, item: str, position: int) -> Reply:
        coordinator = coordinators[position]
        if kind == "content":
            return await coordinator.content(batch_id, item)
        return await coordinator.failure(batch_id, item)

    return await asyncio.gather(*(send(*job) for job in jobs))


# Store operations each strategy must have timed after a storm and a read,
# and ones it never sends, so that the labels are shown to follow the commands.
USED_OPERATIONS = {
    "lua": {
        ("redis", "evalsha"),
        ("redis", "exec"),
        ("postgres", "insert"),
    },
    "watch": {
        ("redis", "watch"),
        ("redis", "hget"),
        ("redis", "srandmember"),
        ("redis", "exec"),
        ("postgres", "insert"),
    },
    "postgres": {
        ("postgres", "begin"),
        ("postgres", "select"),
        ("postgres", "insert"),
        ("postgres", "update"),
        ("postgres", "commit"),
    },
}
UNUSED_OPERATIONS = {
    "lua": {("redis", "watch"), ("postgres", "begin")},
    "watch": {("redis", "spop"), ("postgres", "begin")},
    "postgres": {("redis", "exec"), ("redis", "watch")},
}


@pytest.mark.parametrize("strategy", ["lua", "watch", "postgres"])
async def test_storm_metrics_match_replies(stores, strategy):
    settings = [settings_for(stores, strategy, f"c{i}") for i in range(3)]
    async with running(*settings) as coordinators:
        registered = await coordinators[0].register("storm", SLOTS)
        replies = await mixed_storm(coordinators, "storm")
        unknown = await coordinators[1].content("missing", "c00")
        reads = [await c.read("storm") for c in coordinators]
        scrapes = [await scrape(c) for c in coordinators]

    assert registered.status == 201
    assert unknown.status == 404
    expected_outcomes = Counter(assignment_outcome(r) for r in [*replies, unknown])
    assert expected_outcomes["assigned"] == len(SLOTS)
    counts = summed(scrapes, "coordinator_assignment_seconds_count")
    assert counts == {
        (outcome, strategy): float(n) for outcome, n in expected_outcomes.items()
    }

    operations = summed(
        scrapes, "coordinator_store_operation_seconds_count", strategy=strategy
    )
    timed = {(store, operation) for (operation, store), n in operations.items() if n}
    assert USED_OPERATIONS[strategy] <= timed
    assert UNUSED_OPERATIONS[strategy] & timed == set()

    execs = sum(summed(scrapes, "coordinator_exec_total").values())
    aborts = sum(summed(scrapes, "coordinator_exec_aborts_total").values())
    conflicts = sum(summed(scrapes, "coordinator_watch_conflicts_total").values())
    if strategy == "lua":
        # Only the three reads run MULTI/EXEC, because a script takes the slots.
        assert execs == 3.0
    elif strategy == "watch":
        assert execs > len(SLOTS)
    else:
        assert execs == 0.0
    # With no fault injected, every abort is a conflict the strategy saw.
    assert aborts == conflicts

    read = reads[0].body
    assert all(r.body == read for r in reads)
    for samples in scrapes:
        assert values(samples, "coordinator_batch_slots", strategy=strategy) == {
            ("storm", "assigned"): float(len(read["assignments"])),
            ("storm", "available"): float(len(read["available"])),
            ("storm", "failed"): float(len(read["failures"])),
        }
        assert values(samples, "coordinator_batch_capacity") == {
            ("storm", strategy): float(len(SLOTS))
        }
        assert values(samples, "coordinator_batch_completed") == {
            ("storm", strategy): 1.0
        }


async def test_watch_exec_aborts_equal_injected(stores, redis_server):
    # One instance runs one transaction per batch at a time, so the only
    # conflicts are the proxy's neutral writes.
    proxy = await start_conflict_proxy(redis_server, fraction=0.4)
    settings = settings_for(
        stores, "watch", redis_url=f"redis://127.0.0.1:{proxy.port}/0"
    )
    try:
        async with running(settings) as [coordinator]:
            await coordinator.register("b1", SLOTS)
            replies = await asyncio.gather(
                *(coordinator.content("b1", content) for content in CONTENTS)
            )
            proxy_stats = proxy.stats()
            samples = await scrape(coordinator)
    finally:
        await proxy.close()

    assert sorted(r.status for r in replies) == [200] * 12 + [409] * 3
    assert proxy_stats["conflicts_injected"] > 0
    assert values(samples, "coordinator_exec_aborts_total") == {
        ("watch",): float(proxy_stats["conflicts_injected"])
    }
    assert values(samples, "coordinator_exec_total") == {
        ("watch",): float(proxy_stats["transactions"])
    }
    assert values(samples, "coordinator_watch_conflicts_total") == {
        ("watch",): float(proxy_stats["conflicts_injected"])
    }
    assert values(samples, "coordinator_store_errors_total", store="redis") == {
        ("watch",): 0.0
    }


@pytest.fixture
def own_redis(tmp_path):
    server = start_redis_on(free_port(), tmp_path)
    try:
        yield server
    finally:
        # A paused server must run again to handle its SIGTERM.
        if server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


@pytest.mark.parametrize("outage", ["stopped", "paused"])
async def test_metrics_reply_during_redis_outage(stores, own_redis, outage):
    settings = settings_for(stores, "lua", redis_url=own_redis.url, store_retry_s=0.3)
    async with running(settings) as [coordinator]:
        await coordinator.register("b1", ["s1", "s2", "s3"])
        await coordinator.content("b1", "c1")
        before = await scrape(coordinator)
        if outage == "stopped":
            await asyncio.to_thread(own_redis.stop)
        else:
            os.kill(own_redis.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            during = await scrape(coordinator)
            elapsed_s = time.monotonic() - started
        finally:
            if outage == "paused":
                os.kill(own_redis.process.pid, signal.SIGCONT)

    assert elapsed_s < SCRAPE_LIMIT_S
    expected_slots = {
        ("b1", "assigned"): 1.0,
        ("b1", "available"): 2.0,
        ("b1", "failed"): 0.0,
    }
    assert values(before, "coordinator_batch_slots", strategy="lua") == expected_slots
    # The failed reads kept the last values read.
    assert values(during, "coordinator_batch_slots", strategy="lua") == expected_slots
    assert values(during, "coordinator_batch_capacity") == {("b1", "lua"): 3.0}
    assert values(during, "coordinator_batch_completed") == {("b1", "lua"): 0.0}


async def test_unavailable_counted_as_error(stores, own_redis):
    settings = settings_for(stores, "lua", redis_url=own_redis.url, store_retry_s=0.3)
    async with running(settings) as [coordinator]:
        await coordinator.register("b1", ["s1"])
        errors_before = await scrape(coordinator)
        await asyncio.to_thread(own_redis.stop)
        reply = await coordinator.content("b1", "c1")
        samples = await scrape(coordinator)

    assert (reply.status, reply.body["error"]) == (503, "unavailable")
    assert values(samples, "coordinator_assignment_seconds_count") == {
        ("error", "lua"): 1.0
    }
    redis_errors = values(samples, "coordinator_store_errors_total", store="redis")
    old_errors = values(errors_before, "coordinator_store_errors_total", store="redis")
    retries = values(samples, "coordinator_retries_total", reason="store_error")
    # Each attempt within STORE_RETRY_S failed at its one EVALSHA.
    assert retries[("lua",)] >= 1.0
    assert redis_errors[("lua",)] - old_errors[("lua",)] == retries[("lua",)] + 1


async def test_store_errors_count_failed_operations(stores):
    # Earlier tests loaded the scripts into the session's Redis.
    await stores.redis.script_flush()
    async with running(settings_for(stores, "lua")) as [coordinator]:
        await coordinator.register("b1", ["s1", "s2"])
        # The first EVALSHA of each script fails with NOSCRIPT, and redis-py
        # loads the script and sends it again.
        await coordinator.content("b1", "c1")
        # A missing table makes the row INSERT fail with a statement error,
        # which is not retried.
        await stores.postgres.execute("DROP TABLE slot_assignments")
        failed = await coordinator.content("b1", "c2")
        samples = await scrape(coordinator)

    assert failed.status == 500
    assert values(samples, "coordinator_store_errors_total") == {
        ("redis", "lua"): 2.0,
        ("postgres", "lua"): 1.0,
    }
    assert values(
        samples,
        "coordinator_store_operation_seconds_count",
        store="redis",
        operation="script load",
    ) == {("lua",): 2.0}
    assert values(
        samples,
        "coordinator_store_operation_seconds_count",
        store="postgres",
        operation="insert",
    ) == {("lua",): 2.0}
    assert values(samples, "coordinator_assignment_seconds_count") == {
        ("assigned", "lua"): 1.0,
        ("error", "lua"): 1.0,
    }


async def test_batch_gauges_keep_recent_batches(stores):
    batch_ids = [f"b{i:02d}" for i in range(MAX_GAUGE_BATCHES + 6)]
    async with running(settings_for(stores, "lua")) as [coordinator]:
        for batch_id in batch_ids:
            await coordinator.register(batch_id, ["s1"])
        first = await scrape(coordinator)
        # A read makes the oldest batch the most recent one.
        await coordinator.read("b00")
        second = await scrape(coordinator)

    first_batches = {batch for batch, _ in values(first, "coordinator_batch_capacity")}
    assert first_batches == set(batch_ids[6:])
    second_batches = {
        batch for batch, _ in values(second, "coordinator_batch_capacity")
    }
    assert second_batches == {"b00", *batch_ids[7:]}
    assert len(values(second, "coordinator_batch_slots")) == 3 * MAX_GAUGE_BATCHES


async def test_scrape_reads_not_counted(stores):
    async with running(settings_for(stores, "watch")) as [coordinator]:
        await coordinator.register("b1", ["s1"])
        first = await scrape(coordinator)
        second = await scrape(coordinator)

    # Each scrape read b1 with one MULTI/EXEC, which the metrics leave out.
    assert values(first, "coordinator_exec_total") == {("watch",): 0.0}
    assert values(second, "coordinator_exec_total") == {("watch",): 0.0}
    assert values(second, "coordinator_batch_capacity") == {("b1", "watch"): 1.0}


@pytest.mark.parametrize(
    ("query", "operation"),
    [
        ("SELECT 1", "select"),
        ("\n    INSERT INTO t VALUES ($1)", "insert"),
        ("update slots SET state = $1", "update"),
        ("DELETE FROM t", "delete"),
        ("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;", "begin"),
        ("COMMIT;", "commit"),
        ("ROLLBACK", "rollback"),
        ("CREATE TABLE IF NOT EXISTS t (a int)", "other"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "other"),
        ("", "other"),
    ],
)
def test_sql_operation_first_keyword(query, operation):
    assert sql_operation(query) == operation
