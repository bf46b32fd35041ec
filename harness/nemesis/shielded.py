"""Blocking fault steps that finish even when the run is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def run_shielded(function: Callable[..., T], *args: object) -> T:
    """Runs a blocking step in a thread and waits for it, even when cancelled.

    The end-to-end tests share one cluster, so a container left paused or
    stopped by a cancelled run would break the next test. A heal that started
    while a stop was still running in its thread could also be undone by it.
    A cancellation therefore waits for the step to finish, then propagates.
    """
    step = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(step)
    except asyncio.CancelledError:
        await step
        raise
