"""When each occurrence of a fault happens: fixed times or a seeded random schedule."""

from __future__ import annotations

import random
from collections.abc import Iterator

from harness.faults import Fault


def occurrence_times(
    fault: Fault, rng: random.Random, storm_s: float
) -> Iterator[float]:
    """Yields the planned start of each occurrence, in seconds into the storm.

    Only starts before the storm's end are yielded, but a single occurrence at
    exactly the end still happens: a scenario may aim a fault at the last
    moment on purpose. A random schedule draws each gap from an exponential
    distribution with mean ``every_s``, so occurrences cluster and spread out
    as independent failures do.
    """
    if fault.every_s is None:
        if fault.start_s <= storm_s:
            yield fault.start_s
        return
    offset = fault.start_s
    if fault.schedule == "random":
        offset += rng.expovariate(1 / fault.every_s)
    while offset < storm_s:
        yield offset
        if fault.schedule == "random":
            offset += rng.expovariate(1 / fault.every_s)
        else:
            offset += fault.every_s


def fault_rng(seed: int, number: int, kind: str) -> random.Random:
    """Returns a random source per fault, so one fault's draws never shift another's."""
    return random.Random(f"{seed}/{number}/{kind}")
