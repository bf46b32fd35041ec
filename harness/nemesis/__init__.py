"""Fault injection: one module per fault kind, scheduled against the storm."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from harness.nemesis.base import FaultContext
from harness.nemesis.kill import run_kills
from harness.nemesis.redis_restart import run_redis_restart
from harness.nemesis.watch_conflict import run_watch_conflicts
from harness.scenario import Fault, KillFault, RedisRestartFault, WatchConflictFault

__all__ = ["FaultContext", "start_faults"]


def _fault_coroutine(fault: Fault, ctx: FaultContext) -> Coroutine[Any, Any, int]:
    if isinstance(fault, KillFault):
        return run_kills(fault, ctx)
    if isinstance(fault, RedisRestartFault):
        return run_redis_restart(fault, ctx)
    if isinstance(fault, WatchConflictFault):
        return run_watch_conflicts(fault, ctx)
    raise TypeError(f"no nemesis for fault kind {fault.kind!r}")


def start_faults(faults: list[Fault], ctx: FaultContext) -> list[asyncio.Task[int]]:
    """Starts one task per fault; each returns how many times its fault took effect."""
    return [
        asyncio.create_task(_fault_coroutine(fault, ctx), name=f"fault-{fault.kind}")
        for fault in faults
    ]
