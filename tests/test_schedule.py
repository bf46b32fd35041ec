"""Fault schedules: fixed times, seeded random gaps, and probability per occurrence."""

from __future__ import annotations

import asyncio
import random

import pytest

from harness import nemesis
from harness.faults import KillFault, PauseFault, RedisScriptFlushFault
from harness.nemesis.base import FaultContext
from harness.nemesis.schedule import fault_rng, occurrence_times


def times(fault, storm_s: float, seed: int = 1) -> list[float]:
    return [round(t, 3) for t in occurrence_times(fault, random.Random(seed), storm_s)]


def test_fixed_period_stops_before_storm_end():
    fault = KillFault(kind="kill", start_s=1, every_s=2)

    assert times(fault, 7) == [1.0, 3.0, 5.0]


def test_single_occurrence_at_storm_end_still_happens():
    fault = RedisScriptFlushFault(kind="redis-script-flush", start_s=5)

    assert times(fault, 5) == [5.0]
    assert times(fault, 4.9) == []


def test_random_schedule_same_seed_same_times():
    fault = PauseFault(kind="pause", every_s=1, schedule="random")

    first = times(fault, 30, seed=4)

    assert first == times(fault, 30, seed=4)
    assert first != times(fault, 30, seed=5)
    # Exponential gaps with mean 1 s: about 30 in 30 s, never evenly spaced.
    assert 15 <= len(first) <= 50
    gaps = {round(b - a, 3) for a, b in zip(first, first[1:], strict=False)}
    assert len(gaps) > 10


def test_random_schedule_needs_period():
    with pytest.raises(ValueError, match="schedule 'random' draws gaps around"):
        PauseFault(kind="pause", schedule="random")


def test_fault_sources_independent_of_each_other():
    # Adding a fault before another must not shift the other's draws.
    assert fault_rng(7, 1, "pause").random() == fault_rng(7, 1, "pause").random()
    assert fault_rng(7, 0, "pause").random() != fault_rng(7, 1, "pause").random()


class RecordingContext(FaultContext):
    def __init__(self, storm_s: float) -> None:
        loop_time = asyncio.get_running_loop().time()
        super().__init__(
            cluster=None,  # type: ignore[arg-type]
            history=None,  # type: ignore[arg-type]
            storm_start=loop_time,
            storm_duration_s=storm_s,
        )


async def test_probability_skips_occurrences(monkeypatch):
    made: list[float] = []

    async def inject(fault, ctx, rng):
        made.append(fault.start_s)

    monkeypatch.setattr(
        nemesis, "nemesis_module", lambda kind: type("M", (), {"inject": inject})
    )
    monkeypatch.setattr(FaultContext, "sleep_until", _no_sleep)
    ctx = RecordingContext(storm_s=100)
    fault = PauseFault(kind="pause", every_s=1, probability=0.25)

    count = await nemesis.run_fault(fault, ctx, random.Random(3))

    # 100 occurrences planned, each kept with probability 0.25.
    assert count == len(made)
    assert 10 <= count <= 45


async def test_probability_zero_makes_nothing(monkeypatch):
    async def inject(fault, ctx, rng):
        raise AssertionError("an occurrence with probability 0 took place")

    monkeypatch.setattr(
        nemesis, "nemesis_module", lambda kind: type("M", (), {"inject": inject})
    )
    monkeypatch.setattr(FaultContext, "sleep_until", _no_sleep)
    fault = PauseFault(kind="pause", every_s=1, probability=0)

    assert await nemesis.run_fault(fault, RecordingContext(10), random.Random(3)) == 0


async def _no_sleep(self, offset_s: float) -> None:
    return None


def test_every_kind_has_a_nemesis_module():
    from harness.faults import FAULT_KINDS

    for kind in FAULT_KINDS:
        module = nemesis.nemesis_module(kind)
        assert callable(module.inject), kind
