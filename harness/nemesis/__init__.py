"""Fault injection: one module per fault kind, scheduled against the storm.

A nemesis module defines ``async def inject(fault, ctx, rng)``, which makes one
occurrence of its fault, records its window in the history and heals it, even
when cancelled. It may define ``preflight(fault)``, which raises
PreflightError when this machine lacks what the fault needs.
"""

from __future__ import annotations

import asyncio
import importlib
import random
from types import ModuleType

from harness.faults import FAULT_KINDS, Fault
from harness.nemesis.base import DeliveryFeed, FaultContext
from harness.nemesis.schedule import fault_rng, occurrence_times

__all__ = [
    "NEMESIS_MODULES",
    "DeliveryFeed",
    "FaultContext",
    "preflight",
    "start_faults",
]

# Fault kind -> module under harness.nemesis.
NEMESIS_MODULES: dict[str, str] = {kind: kind.replace("-", "_") for kind in FAULT_KINDS}


def nemesis_module(kind: str) -> ModuleType:
    return importlib.import_module(f"harness.nemesis.{NEMESIS_MODULES[kind]}")


def preflight(faults: list[Fault]) -> None:
    """Raises PreflightError, before any container starts, for a fault this
    machine cannot make, naming the missing feature and the fallback."""
    for fault in faults:
        check = getattr(nemesis_module(fault.kind), "preflight", None)
        if check is not None:
            check(fault)


async def run_fault(fault: Fault, ctx: FaultContext, rng: random.Random) -> int:
    """Makes each occurrence of one fault on its schedule and returns how many ran.

    An occurrence starts only after the previous one healed, so a duration
    longer than the period delays the next one rather than overlapping it.
    """
    inject = nemesis_module(fault.kind).inject
    made = 0
    for offset in occurrence_times(fault, rng, ctx.storm_duration_s):
        await ctx.sleep_until(offset)
        if made and ctx.storm_left_s() <= 0:
            # Earlier occurrences ran past the storm, and another one would
            # meet no traffic and only delay the run.
            break
        if rng.random() >= fault.probability:
            continue
        await inject(fault, ctx, rng)
        made += 1
    return made


def start_faults(
    faults: list[Fault], ctx: FaultContext, seed: int
) -> list[asyncio.Task[int]]:
    """Starts one task per fault; each returns how many times its fault took effect."""
    return [
        asyncio.create_task(
            run_fault(fault, ctx, fault_rng(seed, number, fault.kind)),
            name=f"fault-{fault.kind}",
        )
        for number, fault in enumerate(faults)
    ]
