"""Storm planning: seeded, bounded, every event fired, batches in order."""

from __future__ import annotations

from pathlib import Path

from harness.scenario import load_scenario
from harness.workload import Acks, Event, plan_batches, plan_storm

ROOT = Path(__file__).resolve().parents[1]


def smoke(**changes):
    scenario = load_scenario(ROOT / "scenarios/smoke.yaml")
    return scenario.model_copy(update=changes)


def test_plan_is_seeded():
    scenario = smoke()
    first = plan_storm(scenario, plan_batches(scenario, "r"))
    second = plan_storm(scenario, plan_batches(scenario, "r"))
    other = plan_storm(smoke(seed=8), plan_batches(scenario, "r"))

    assert first.firings == second.firings
    assert first.firings != other.firings


def test_plan_fires_every_event():
    scenario = smoke()
    plan = plan_storm(scenario, plan_batches(scenario, "r"))

    assert set(plan.firings) == set(plan.events)
    assert len(plan.events) == 10 * (45 + 2)


def test_plan_is_bounded_by_rate_and_duration():
    scenario = smoke()
    plan = plan_storm(scenario, plan_batches(scenario, "r"))

    # 400 requests/s, 10 copies each, 30 s: 1200 firings of 1/40 s each.
    assert len(plan.firings) == 1200
    assert plan.interval_s == 1 / 40
    assert plan.duration_s == 30


def test_plan_stretches_when_rate_too_low():
    scenario = smoke(rate=100, duration_s=5)
    plan = plan_storm(scenario, plan_batches(scenario, "r"))

    # 470 events at 10 firings/s cannot fit in 5 s: each is fired once, in 47 s.
    assert len(plan.firings) == 470
    assert plan.duration_s == 47


def test_batches_open_in_order():
    scenario = smoke()
    plan = plan_storm(scenario, plan_batches(scenario, "r"))

    first_seen: dict[str, int] = {}
    for position, event in enumerate(plan.firings):
        first_seen.setdefault(event.batch_id, position)
    order = sorted(first_seen, key=first_seen.get)
    assert order == [f"r-b{number:03d}" for number in range(10)]
    # Each batch's new events come first in its segment of 120 firings.
    assert first_seen["r-b003"] == 360


def test_refires_only_events_already_sent():
    scenario = smoke()
    plan = plan_storm(scenario, plan_batches(scenario, "r"))

    sent: set[Event] = set()
    for position, event in enumerate(plan.firings):
        if event in sent:
            continue
        # A new event opens its batch's segment, before any re-fire in it.
        segment_start = 120 * int(event.batch_id[-3:])
        assert position < segment_start + 47
        sent.add(event)


def test_acks_redeliver_unsent_and_unknown():
    a, b, c, d, e = (Event("content", "b", key) for key in "abcde")
    acks = Acks()
    acks.record(a, "ok", None)
    acks.record(b, "fail", "no_slot")
    acks.record(c, "fail", "instance-down")
    acks.record(d, "info", "timeout")
    acks.record(e, "fail", "connect-refused")

    assert acks.unhandled([a, b, c, d, e]) == [c, d, e]
