"""A restart of Postgres with a fast shutdown, which keeps its data.

Every pooled connection of the coordinators breaks, and new ones are refused
until Postgres accepts connections again, after about a second.
"""

from __future__ import annotations

import random

from harness.faults import PostgresRestartFault
from harness.nemesis.base import FaultContext
from harness.nemesis.shielded import run_shielded


async def inject(
    fault: PostgresRestartFault, ctx: FaultContext, rng: random.Random
) -> None:
    ctx.window(
        "postgres-restart", "start", targets=["postgres"], method="docker-restart"
    )
    try:
        await run_shielded(ctx.cluster.restart_postgres)
    finally:
        ctx.window(
            "postgres-restart", "end", targets=["postgres"], method="docker-restart"
        )
