"""Each faulty strategy's bug, made to happen for real."""

from __future__ import annotations

import asyncio
import time

import pytest

from harness.proxy import ProxyConfig, ProxyServer
from harness.proxy import serve as serve_proxy
from tests.coordinator.conftest import (
    StormReply,
    content_storm,
    running,
    settings_for,
    slots_by_content,
)
from tests.coordinator.test_contract import wait_for_entries
from tests.servers import Server, free_port, start_redis

SLOTS = [f"s{i:02d}" for i in range(40)]


async def test_immediate_spop_never_completes(stores):
    async with running(settings_for(stores, "immediate-spop")) as [coordinator]:
        await coordinator.register("b1", ["s1", "s2", "s3"])
        replies = [await coordinator.content("b1", f"c{i}") for i in range(4)]
        read = await coordinator.read("b1")

    assert [reply.status for reply in replies] == [409, 409, 409, 409]
    # Three SPOPs emptied the set and recorded nothing.
    assert read.body["available"] == []
    assert read.body["assignments"] == {}
    assert await stores.batch_ready_entries() == []
    assert await stores.assignment_rows("b1") == {}


@pytest.mark.timeout(30)
async def test_check_then_act_gives_content_two_slots(stores):
    async with running(settings_for(stores, "check-then-act")) as [coordinator]:
        # Bounded repeats: one storm almost always shows the race.
        for attempt in range(5):
            batch_id = f"b{attempt}"
            await coordinator.register(batch_id, SLOTS)
            replies = await content_storm(
                [coordinator], batch_id, [f"c{i}" for i in range(5)], copies=20
            )
            slots = slots_by_content(replies)
            doubled = {content: s for content, s in slots.items() if len(s) > 1}
            if doubled:
                break
        read = await coordinator.read(batch_id)

    assert doubled != {}
    content, content_slots = next(iter(doubled.items()))
    # Redis records every slot the content took; Postgres kept only one row.
    assert {slot for slot, c in read.body["assignments"].items() if c == content} == (
        content_slots
    )
    rows = await stores.assignment_rows(batch_id)
    assert sum(1 for c in rows.values() if c == content) == 1


async def test_in_memory_double_books_slot(stores):
    settings = [settings_for(stores, "in-memory", f"c{i}") for i in range(2)]
    async with running(*settings) as [first, second]:
        await first.register("b1", ["s1", "s2", "s3", "s4"])
        c0_first = await first.content("b1", "c0")
        # The second instance loads the batch now, with c0 already in Redis.
        c0_second = await second.content("b1", "c0")
        c1_first = await first.content("b1", "c1")
        c2_second = await second.content("b1", "c2")
        c1_second = await second.content("b1", "c1")
        read = await first.read("b1")

    assert c0_first.body == {"slot_id": "s1", "created": True}
    assert c0_second.body == {"slot_id": "s1", "created": False}
    # Both instances believe s2 is free: one slot for two contents.
    assert c1_first.body == {"slot_id": "s2", "created": True}
    assert c2_second.body == {"slot_id": "s2", "created": True}
    # And the second instance does not know c1: one content, two slots.
    assert c1_second.body == {"slot_id": "s3", "created": True}
    assert read.body["assignments"] == {"s1": "c0", "s2": "c2", "s3": "c1"}
    assert read.body["available"] == ["s4"]


@pytest.mark.timeout(30)
async def test_in_memory_storm_breaks_invariants(stores):
    settings = [settings_for(stores, "in-memory", f"c{i}") for i in range(3)]
    contents = [f"c{i:02d}" for i in range(45)]
    async with running(*settings) as coordinators:
        await coordinators[0].register("storm", SLOTS)
        replies = await content_storm(coordinators, "storm", contents, copies=20)

    slots = slots_by_content(replies)
    contents_per_slot: dict[str, set[str]] = {}
    for content, content_slots in slots.items():
        for slot in content_slots:
            contents_per_slot.setdefault(slot, set()).add(content)
    doubled_contents = [c for c, s in slots.items() if len(s) > 1]
    doubled_slots = [s for s, c in contents_per_slot.items() if len(c) > 1]
    assert doubled_contents != []
    assert doubled_slots != []


async def test_pop_then_record_loses_slot_on_store_error(stores):
    async with running(settings_for(stores, "pop-then-record")) as [coordinator]:
        await coordinator.register("b1", ["s1", "s2", "s3"])
        # A real Postgres error between the SPOP and the Redis record.
        await stores.postgres.execute(
            """
            CREATE FUNCTION reject_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.text_storage_id = 'poison' THEN
                    RAISE EXCEPTION 'poison content rejected';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER reject_poison BEFORE INSERT ON slot_assignments
                FOR EACH ROW EXECUTE FUNCTION reject_poison();
            """
        )
        try:
            poisoned = await coordinator.content("b1", "poison")
        finally:
            await stores.postgres.execute(
                "DROP TRIGGER reject_poison ON slot_assignments; "
                "DROP FUNCTION reject_poison()"
            )
        healthy = await coordinator.content("b1", "c1")
        read = await coordinator.read("b1")

    assert poisoned.status == 500
    assert "poison content rejected" in poisoned.body["detail"]
    assert healthy.status == 200
    accounted = set(read.body["available"]) | set(read.body["assignments"])
    lost = {"s1", "s2", "s3"} - accounted
    assert len(lost) == 1
    assert read.body["assignments"] == {healthy.body["slot_id"]: "c1"}


@pytest.mark.timeout(30)
async def test_double_completion_emits_many(stores):
    settings = [settings_for(stores, "double-completion", f"c{i}") for i in range(3)]
    contents = [f"c{i:02d}" for i in range(45)]
    async with running(*settings) as coordinators:
        await coordinators[0].register("storm", SLOTS)
        replies = await content_storm(coordinators, "storm", contents, copies=20)
        final = (await coordinators[0].read("storm")).body

    # The assignments themselves are correct.
    slots = slots_by_content(replies)
    assert all(len(s) == 1 for s in slots.values())
    assert len(final["assignments"]) == 40
    entries = await wait_for_entries(stores, 2)
    assert len(entries) > 1
    full_entries = [e for e in entries if e["assignments"] == final["assignments"]]
    assert len(full_entries) == len(entries)


async def test_double_completion_two_instances_both_emit(stores):
    settings = [settings_for(stores, "double-completion", f"c{i}") for i in range(2)]
    async with running(*settings) as [first, second]:
        await first.register("b1", ["s1", "s2"])
        await first.content("b1", "c1")
        last = await first.content("b1", "c2")
        # A duplicate delivery of the last content reaches the other instance.
        duplicate = await second.content("b1", "c2")

    assert last.body["created"] is True
    assert duplicate.body == {"slot_id": last.body["slot_id"], "created": False}
    entries = await stores.batch_ready_entries()
    assert [entry["batch_id"] for entry in entries] == ["b1", "b1"]
    assert entries[0] == entries[1]


async def start_conflict_proxy(redis_server: Server, fraction: float) -> ProxyServer:
    """Start the RESP proxy in front of the session's Redis on 127.0.0.1."""
    return await serve_proxy(
        ProxyConfig(
            upstream_host="127.0.0.1",
            upstream_port=redis_server.port,
            listen_host="127.0.0.1",
            listen_port=0,
            control_host="127.0.0.1",
            control_port=0,
            watch_conflict_fraction=fraction,
            upstream_connect_timeout_s=2.0,
        )
    )


# Seconds the unbounded-retry request must still be waiting after the correct
# watch strategy gave up under the same conflicts.
SPIN_MARGIN_S = 3.0
# The watch strategy's retry budget in these tests, and the seconds a reply
# may take past it. The attempt running when the budget ends finishes, the
# Postgres row is written, and the test client shares its event loop with the
# apps on a loaded machine.
WATCH_BUDGET_S = 1.0
BUDGET_SLACK_S = 1.0


@pytest.mark.timeout(45)
async def test_unbounded_retry_spins_while_watch_gives_up(stores, redis_server):
    proxy = await start_conflict_proxy(redis_server, fraction=1.0)
    proxied = f"redis://127.0.0.1:{proxy.port}/0"
    settings = [
        settings_for(
            stores,
            "watch",
            "c1",
            redis_url=proxied,
            watch_retry_budget_s=WATCH_BUDGET_S,
        ),
        # The budget setting must not bound unbounded-retry.
        settings_for(
            stores,
            "unbounded-retry",
            "c2",
            redis_url=proxied,
            watch_retry_budget_s=WATCH_BUDGET_S,
        ),
    ]
    try:
        async with running(*settings) as [watch, unbounded]:
            await watch.register("b-watch", ["s1", "s2"])
            await unbounded.register("b-unbounded", ["s1", "s2"])
            # Every EXEC through the proxy now meets a neutral write.
            spinning = asyncio.create_task(unbounded.content("b-unbounded", "c1"))
            started = time.monotonic()
            gave_up = await watch.content("b-watch", "c1")
            watch_elapsed_s = time.monotonic() - started
            await asyncio.sleep(SPIN_MARGIN_S)
            pending_after_margin = not spinning.done()
            spin_conflicts = unbounded.metric(
                "coordinator_watch_conflicts_total", {"strategy": "unbounded-retry"}
            )
            watch_conflicts = watch.metric(
                "coordinator_watch_conflicts_total", {"strategy": "watch"}
            )
            # The conflict ends, and the next attempt of the spinning request
            # succeeds.
            proxy.set_fraction(0.0)
            answered = await asyncio.wait_for(spinning, timeout=5)
            read = await unbounded.read("b-unbounded")
    finally:
        await proxy.close()

    assert (gave_up.status, gave_up.body) == (503, {"error": "contention"})
    assert watch_elapsed_s < WATCH_BUDGET_S + BUDGET_SLACK_S
    # The budget, not WATCH_MAX_RETRIES (50 retries), ended the attempts.
    assert 1.0 < watch_conflicts < 51.0
    assert pending_after_margin is True
    # No backoff: several times the attempts watch made, in a little more time.
    assert spin_conflicts > 3 * watch_conflicts
    assert answered.status == 200
    assert answered.body["created"] is True
    assert read.body["assignments"] == {answered.body["slot_id"]: "c1"}


async def test_lua_partial_write_loses_slot_per_duplicate(stores):
    slots = ["s1", "s2", "s3", "s4", "s5"]
    settings = [
        settings_for(stores, "lua-partial-write", "c1"),
        settings_for(stores, "lua", "c2"),
    ]
    replies: dict[str, list] = {}
    reads: dict[str, dict] = {}
    async with running(*settings) as coordinators:
        batch_ids = ["b-partial", "b-lua"]
        for coordinator, batch_id in zip(coordinators, batch_ids, strict=True):
            await coordinator.register(batch_id, slots)
            replies[batch_id] = [
                await coordinator.content(batch_id, "c1"),
                await coordinator.content(batch_id, "c1"),
                await coordinator.failure(batch_id, "f1"),
                await coordinator.failure(batch_id, "f1"),
                await coordinator.content(batch_id, "c2"),
            ]
            reads[batch_id] = (await coordinator.read(batch_id)).body

    for batch_id in ("b-partial", "b-lua"):
        first, replay, failure, failure_replay, last = replies[batch_id]
        # The replies of both strategies follow the contract.
        assert first.body["created"] is True
        assert replay.body == {"slot_id": first.body["slot_id"], "created": False}
        assert failure.body["created"] is True
        assert failure_replay.body == {
            "slot_id": failure.body["slot_id"],
            "created": False,
        }
        assert last.body["created"] is True
        assert reads[batch_id]["assignments"] == {
            first.body["slot_id"]: "c1",
            last.body["slot_id"]: "c2",
        }
        assert reads[batch_id]["failures"] == {failure.body["slot_id"]: "f1"}
    # lua keeps the two other slots available.
    assert len(reads["b-lua"]["available"]) == 2
    # lua-partial-write: each duplicate's SPOP stayed, so two slots are lost.
    partial = reads["b-partial"]
    assert partial["available"] == []
    recorded_slots = set(partial["assignments"]) | set(partial["failures"])
    assert len(set(slots) - recorded_slots) == 2
    assert partial["completed"] is False
    # The last SPOP emptied the set, so the script announced a short batch.
    assert await stores.batch_ready_entries() == [
        {
            "batch_id": "b-partial",
            "assignments": partial["assignments"],
            "failures": partial["failures"],
        }
    ]


async def test_no_script_reload_fails_after_script_flush(stores):
    settings = [
        settings_for(stores, "no-script-reload", "c1"),
        settings_for(stores, "lua", "c2"),
    ]
    async with running(*settings) as [faulty, lua]:
        await faulty.register("b-faulty", ["s1", "s2", "s3"])
        await lua.register("b-lua", ["s1", "s2", "s3"])
        before = await faulty.content("b-faulty", "c1")
        await stores.redis.script_flush()
        after = [
            await faulty.content("b-faulty", "c2"),
            await faulty.failure("b-faulty", "f1"),
            await faulty.content("b-faulty", "c2"),
        ]
        lua_after = await lua.content("b-lua", "c2")
        read = await faulty.read("b-faulty")
    # A restarted instance loads the script again.
    async with running(settings_for(stores, "no-script-reload", "c1")) as [restarted]:
        restarted_reply = await restarted.content("b-faulty", "c2")

    assert before.status == 200
    assert [reply.status for reply in after] == [503, 503, 503]
    for reply in after:
        assert reply.body["error"] == "unavailable"
        assert "NOSCRIPT" in reply.body["detail"]
        assert "restart the instance" in reply.body["detail"]
    assert read.body["assignments"] == {before.body["slot_id"]: "c1"}
    assert read.body["failures"] == {}
    assert (lua_after.status, lua_after.body["created"]) == (200, True)
    assert (restarted_reply.status, restarted_reply.body["created"]) == (200, True)


async def test_no_script_reload_fails_after_redis_restart(stores, tmp_path):
    port = free_port()
    servers = [start_redis(tmp_path, port)]
    settings = settings_for(
        stores, "no-script-reload", redis_url=servers[0].url, store_retry_s=5.0
    )
    try:
        async with running(settings) as [coordinator]:
            await coordinator.register("b1", ["s1", "s2"])
            before = await coordinator.content("b1", "c1")
            await asyncio.to_thread(servers[0].stop)
            servers.append(await asyncio.to_thread(start_redis, tmp_path, port))
            # This Redis keeps no data across a restart, so the batch is new.
            registered = await coordinator.register("b1", ["s1", "s2"])
            after = await coordinator.content("b1", "c2")
    finally:
        for server in servers:
            server.stop()

    assert (before.status, before.body["created"]) == (200, True)
    assert registered.status == 201
    assert after.status == 503
    assert "NOSCRIPT" in after.body["detail"]


async def duplicate_storm_result(
    stores, strategy: str, contents: list[str], attempts: int
) -> tuple[list[StormReply], dict]:
    """Run up to ``attempts`` storms on three instances; stop at the first 409.

    Return the replies and final state of the last storm.
    """
    settings = [settings_for(stores, strategy, f"c{i}") for i in range(3)]
    async with running(*settings) as coordinators:
        for attempt in range(attempts):
            batch_id = f"storm{attempt}"
            await coordinators[0].register(batch_id, SLOTS)
            replies = await content_storm(
                coordinators, batch_id, contents, copies=20, seed=attempt
            )
            final = (await coordinators[0].read(batch_id)).body
            if any(reply.status == 409 for reply in replies):
                break
    return replies, final


# The race is common: on a 2-core machine, each of 20 such storms had
# rejected contents, about 20 of the 30 per storm; with 2 copies per content,
# about 22 of 30.
@pytest.mark.timeout(50)
async def test_unique_as_failure_rejects_content_holding_slot(stores):
    # Fewer contents than slots, so no copy should ever get no_slot.
    contents = [f"c{i:02d}" for i in range(30)]
    replies, final = await duplicate_storm_result(
        stores, "unique-as-failure", contents, attempts=5
    )

    rejected = {reply.content for reply in replies if reply.status == 409}
    assert rejected != set()
    assert {reply.body["error"] for reply in replies if reply.status == 409} == {
        "no_slot"
    }
    # Every content got a slot, the rejected ones included.
    assert set(final["assignments"].values()) == set(contents)
    # Each rejected content also got 200 replies naming its one slot.
    slots = slots_by_content(replies)
    for content in rejected:
        assert len(slots[content]) == 1
        assert final["assignments"][next(iter(slots[content]))] == content


@pytest.mark.timeout(50)
async def test_postgres_duplicate_storm_rejects_nothing(stores):
    contents = [f"c{i:02d}" for i in range(30)]
    replies, final = await duplicate_storm_result(
        stores, "postgres", contents, attempts=2
    )

    assert {reply.status for reply in replies} == {200}
    assert set(final["assignments"].values()) == set(contents)
