"""Completion types from replies, and Jepsen-style process ids."""

from __future__ import annotations

import pytest

from harness.client import ProcessPool, classify


@pytest.mark.parametrize(
    ("status", "payload", "expected"),
    [
        (
            200,
            {"slot_id": "s1", "created": True},
            ("ok", {"status": 200, "slot_id": "s1", "created": True}),
        ),
        (201, {"batch_id": "b"}, ("ok", {"status": 201})),
        (409, {"error": "no_slot"}, ("fail", {"status": 409, "error": "no_slot"})),
        (404, {"error": "not_found"}, ("fail", {"status": 404, "error": "not_found"})),
        (400, None, ("fail", {"status": 400, "error": "http-400"})),
        (
            503,
            {"error": "contention"},
            ("info", {"status": 503, "error": "contention"}),
        ),
        (500, "oops", ("info", {"status": 500, "error": "http-500"})),
    ],
)
def test_classify(status, payload, expected):
    assert classify(status, payload) == expected


def test_retired_process_never_reused():
    pool = ProcessPool()
    first = pool.acquire()
    second = pool.acquire()
    pool.release(first, retire=True)
    pool.release(second, retire=False)

    assert (first, second) == (0, 1)
    assert pool.acquire() == 1
    assert pool.acquire() == 2
