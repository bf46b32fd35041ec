"""Each faulty strategy's bug, made to happen for real."""

from __future__ import annotations

import pytest

from tests.coordinator.conftest import (
    content_storm,
    running,
    settings_for,
    slots_by_content,
)
from tests.coordinator.test_contract import wait_for_entries

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
