"""The HTTP contract, for every strategy, one app at a time."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from harness.coordinator import STRATEGY_NAMES
from tests.coordinator.conftest import running, settings_for

# immediate-spop can never assign, so it has its own contract test below.
ASSIGNING = [name for name in STRATEGY_NAMES if name != "immediate-spop"]
# lua-partial-write loses a slot on every replay, which the contract test's
# replays would show as a full batch; test_faulty_strategies.py covers it.
REPLAYING = [name for name in ASSIGNING if name != "lua-partial-write"]


async def wait_for_entries(stores, count: int, timeout_s: float = 10.0) -> list:
    """Poll the stream until it has ``count`` entries; the postgres relay is async.

    The deadline is generous because a loaded machine delays the relay, and the
    poll returns as soon as the entries are there.
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        entries = await stores.batch_ready_entries()
        if len(entries) >= count or asyncio.get_running_loop().time() > deadline:
            return entries
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
async def test_registration_idempotent_by_slots(stores, strategy):
    async with running(settings_for(stores, strategy)) as [coordinator]:
        first = await coordinator.register("b1", ["s1", "s2"])
        same = await coordinator.register("b1", ["s2", "s1"])
        other = await coordinator.register("b1", ["s1", "s3"])
        read = await coordinator.read("b1")

    assert (first.status, first.body) == (201, {"batch_id": "b1"})
    assert (same.status, same.body) == (200, {"batch_id": "b1"})
    assert (other.status, other.body) == (409, {"error": "conflict"})
    assert read.status == 200
    assert read.body == {
        "batch_id": "b1",
        "capacity": 2,
        "available": ["s1", "s2"],
        "assignments": {},
        "failures": {},
        "completed": False,
    }


@pytest.mark.parametrize("strategy", REPLAYING)
async def test_content_and_failure_contract(stores, strategy):
    async with running(settings_for(stores, strategy)) as [coordinator]:
        await coordinator.register("b1", ["s1", "s2", "s3"])
        first = await coordinator.content("b1", "c1")
        replay = await coordinator.content("b1", "c1")
        half = await coordinator.read("b1")
        failure = await coordinator.failure("b1", "f1")
        failure_again = await coordinator.failure("b1", "f1")
        last = await coordinator.content("b1", "c2")
        rejected = await coordinator.content("b1", "c3")
        rejected_failure = await coordinator.failure("b1", "f2")
        replay_after_full = await coordinator.content("b1", "c1")
        failure_after_full = await coordinator.failure("b1", "f1")
        full = await coordinator.read("b1")

    slot_c1 = first.body["slot_id"]
    slot_f1 = failure.body["slot_id"]
    slot_c2 = last.body["slot_id"]
    assert first.status == 200
    assert first.body["created"] is True
    assert (replay.status, replay.body) == (200, {"slot_id": slot_c1, "created": False})
    assert half.body["available"] == sorted({"s1", "s2", "s3"} - {slot_c1})
    assert half.body["completed"] is False
    assert failure.status == 200
    assert failure.body["created"] is True
    assert failure_again.body == {"slot_id": slot_f1, "created": False}
    assert last.status == 200
    assert last.body["created"] is True
    assert {slot_c1, slot_f1, slot_c2} == {"s1", "s2", "s3"}
    assert (rejected.status, rejected.body) == (409, {"error": "no_slot"})
    assert (rejected_failure.status, rejected_failure.body) == (
        409,
        {"error": "no_slot"},
    )
    assert replay_after_full.status == 200
    assert replay_after_full.body == {"slot_id": slot_c1, "created": False}
    assert failure_after_full.body == {"slot_id": slot_f1, "created": False}
    assert full.body == {
        "batch_id": "b1",
        "capacity": 3,
        "available": [],
        "assignments": {slot_c1: "c1", slot_c2: "c2"},
        "failures": {slot_f1: "f1"},
        "completed": True,
    }
    assert await stores.assignment_rows("b1") == {slot_c1: "c1", slot_c2: "c2"}

    entries = await wait_for_entries(stores, 1)
    expected_entry = {
        "batch_id": "b1",
        "assignments": {slot_c1: "c1", slot_c2: "c2"},
        "failures": {slot_f1: "f1"},
    }
    if strategy == "double-completion":
        # Its bug: the replays after the batch was full emitted again.
        assert entries[0] == expected_entry
        assert len(entries) == 3
    else:
        assert entries == [expected_entry]


@pytest.mark.parametrize("strategy", ASSIGNING)
async def test_batch_completed_by_failure(stores, strategy):
    async with running(settings_for(stores, strategy)) as [coordinator]:
        await coordinator.register("b1", ["s1", "s2"])
        content = await coordinator.content("b1", "c1")
        failure = await coordinator.failure("b1", "f1")
        read = await coordinator.read("b1")

    assert read.body["completed"] is True
    expected_entry = {
        "batch_id": "b1",
        "assignments": {content.body["slot_id"]: "c1"},
        "failures": {failure.body["slot_id"]: "f1"},
    }
    assert await wait_for_entries(stores, 1) == [expected_entry]


def test_immediate_spop_listed_as_strategy():
    assert "immediate-spop" in STRATEGY_NAMES
    assert set(ASSIGNING) == set(STRATEGY_NAMES) - {"immediate-spop"}


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
async def test_unknown_batch_not_found(stores, strategy):
    async with running(settings_for(stores, strategy)) as [coordinator]:
        content = await coordinator.content("nope", "c1")
        failure = await coordinator.failure("nope", "f1")
        read = await coordinator.read("nope")

    assert (content.status, content.body) == (404, {"error": "not_found"})
    assert (failure.status, failure.body) == (404, {"error": "not_found"})
    assert (read.status, read.body) == (404, {"error": "not_found"})


BAD_REGISTRATIONS = [
    (b"not json", "not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[]", "request body is a JSON array; expected a JSON object"),
    (b"{}", "field 'batch_id' is missing"),
    (b'{"batch_id": "", "slot_ids": ["a"]}', "field 'batch_id' is empty"),
    (b'{"batch_id": 5, "slot_ids": ["a"]}', "field 'batch_id' is a JSON number"),
    (b'{"batch_id": "a/b", "slot_ids": ["a"]}', "field 'batch_id' 'a/b' contains '/'"),
    (b'{"batch_id": "b"}', "field 'slot_ids' is missing"),
    (b'{"batch_id": "b", "slot_ids": []}', "field 'slot_ids' is empty"),
    (b'{"batch_id": "b", "slot_ids": "a"}', "field 'slot_ids' is a JSON string"),
    (b'{"batch_id": "b", "slot_ids": ["a", "a"]}', "field 'slot_ids' repeats ['a']"),
    (b'{"batch_id": "b", "slot_ids": ["a", 3]}', "slot_ids[1] is a JSON number"),
    (b'{"batch_id": "b", "slot_ids": ["a", ""]}', "slot_ids[1] is empty"),
    (
        json.dumps({"batch_id": "b", "slot_ids": [f"s{i}" for i in range(10_001)]}),
        "field 'slot_ids' has 10001 slot ids; expected at most 10000",
    ),
    (
        json.dumps({"batch_id": "b" * 257, "slot_ids": ["a"]}),
        "field 'batch_id' has 257 characters; expected at most 256",
    ),
]

BAD_CONTENTS = [
    (b"{}", "field 'text_storage_id' is missing"),
    (b'{"text_storage_id": "t"}', "field 'file_name' is missing"),
    (b'{"text_storage_id": "", "file_name": "f"}', "field 'text_storage_id' is empty"),
    (
        b'{"text_storage_id": null, "file_name": "f"}',
        "field 'text_storage_id' is a JSON null",
    ),
    (b'{"text_storage_id": "t", "file_name": ""}', "field 'file_name' is empty"),
]

BAD_FAILURES = [
    (b"{}", "field 'failure_id' is missing"),
    (b'{"failure_id": ["x"]}', "field 'failure_id' is a JSON array"),
    (b'{"failure_id": true}', "field 'failure_id' is a JSON boolean"),
]


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
async def test_bad_input_rejected_with_field(stores, strategy):
    cases = (
        [("/batches", body, detail) for body, detail in BAD_REGISTRATIONS]
        + [("/batches/b1/content", body, detail) for body, detail in BAD_CONTENTS]
        + [("/batches/b1/failures", body, detail) for body, detail in BAD_FAILURES]
    )
    async with running(settings_for(stores, strategy)) as [coordinator]:
        await coordinator.register("b1", ["s1"])
        for path, body, detail in cases:
            reply = await coordinator.request("POST", path, data=body)
            assert reply.status == 400, (path, body[:60], reply.body)
            assert reply.body["error"] == "bad_request", (path, body[:60])
            assert detail in reply.body["detail"], (path, body[:60], reply.body)
        read = await coordinator.read("b1")

    # None of the bad requests took a slot.
    assert read.body["available"] == ["s1"]


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
async def test_largest_batch_registered(stores, strategy):
    slot_ids = [f"slot-{i:05d}" for i in range(10_000)]
    async with running(settings_for(stores, strategy)) as [coordinator]:
        registered = await coordinator.register("big", slot_ids)
        again = await coordinator.register("big", list(reversed(slot_ids)))
        read = await coordinator.read("big")

    assert registered.status == 201
    assert again.status == 200
    assert read.body["capacity"] == 10_000
    assert read.body["available"] == slot_ids


async def test_immediate_spop_loses_slot_and_refuses(stores):
    async with running(settings_for(stores, "immediate-spop")) as [coordinator]:
        await coordinator.register("b1", ["s1", "s2", "s3"])
        content = await coordinator.content("b1", "c1")
        failure = await coordinator.failure("b1", "f1")
        read = await coordinator.read("b1")

    assert (content.status, content.body) == (409, {"error": "no_slot"})
    assert (failure.status, failure.body) == (409, {"error": "no_slot"})
    # Two slots were popped by the SPOPs and recorded nowhere.
    assert len(read.body["available"]) == 1
    assert read.body["assignments"] == {}
    assert read.body["failures"] == {}
    assert coordinator.metric(
        "coordinator_watch_conflicts_total", {"strategy": "immediate-spop"}
    ) == pytest.approx(2.0)


async def test_unknown_route_and_method_json(stores):
    async with running(settings_for(stores, "lua")) as [coordinator]:
        missing = await coordinator.request("GET", "/nothing")
        wrong_method = await coordinator.request("DELETE", "/batches")

    assert missing.status == 404
    assert missing.body == {"error": "not_found", "detail": "no route for GET /nothing"}
    assert wrong_method.status == 405
    assert wrong_method.body["error"] == "method_not_allowed"
    assert "allowed: POST" in wrong_method.body["detail"]


async def test_unexpected_error_500_json(stores, monkeypatch, caplog):
    async with running(settings_for(stores, "lua")) as [coordinator]:

        async def broken_read(batch_id):
            raise RuntimeError(f"disk on fire under {batch_id}")

        monkeypatch.setattr(coordinator.state.strategy, "read_batch", broken_read)
        with caplog.at_level(logging.ERROR, logger="harness.coordinator.app"):
            reply = await coordinator.read("b1")

    assert reply.status == 500
    assert reply.body["error"] == "internal"
    assert "RuntimeError: disk on fire under b1" in reply.body["detail"]
    assert [record.message for record in caplog.records] == [
        "unexpected error in GET /batches/b1"
    ]


@pytest.mark.parametrize("strategy", ["lua", "postgres"])
async def test_health_names_instance_and_strategy(stores, strategy):
    settings = settings_for(stores, strategy, instance_id="node-7")
    async with running(settings) as [coordinator]:
        reply = await coordinator.request("GET", "/health")

    assert reply.status == 200
    assert reply.body == {"status": "ok", "instance": "node-7", "strategy": strategy}


async def test_metrics_count_requests_and_latency(stores):
    async with running(settings_for(stores, "lua")) as [coordinator]:
        await coordinator.register("b1", ["s1"])
        await coordinator.content("b1", "c1")
        await coordinator.content("b1", "c1")
        await coordinator.content("b1", "c2")
        reply = await coordinator.request("GET", "/metrics")

    assert reply.status == 200
    lines = set(reply.body.splitlines())
    expected = {
        'coordinator_requests_total{outcome="created",route="register"} 1.0',
        'coordinator_requests_total{outcome="assigned",route="content"} 1.0',
        'coordinator_requests_total{outcome="replay",route="content"} 1.0',
        'coordinator_requests_total{outcome="no_slot",route="content"} 1.0',
        'coordinator_assignment_seconds_count{outcome="assigned",strategy="lua"} 1.0',
        'coordinator_assignment_seconds_count{outcome="replay",strategy="lua"} 1.0',
        'coordinator_assignment_seconds_count{outcome="no_slot",strategy="lua"} 1.0',
        'coordinator_completions_emitted_total{strategy="lua"} 1.0',
        'coordinator_info{instance_id="c1",strategy="lua"} 1.0',
    }
    assert expected - lines == set()
