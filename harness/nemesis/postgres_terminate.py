"""pg_terminate_backend of every client session: the coordinators' pooled ones.

Postgres stays up, so only the sessions break: a coordinator must notice the
closed connection in its pool and repeat the transaction on a new one.
"""

from __future__ import annotations

import random

from harness.faults import PostgresTerminateFault
from harness.nemesis.base import FaultContext
from harness.nemesis.shielded import run_shielded


async def inject(
    fault: PostgresTerminateFault, ctx: FaultContext, rng: random.Random
) -> None:
    ctx.window(
        "postgres-terminate",
        "start",
        targets=["postgres"],
        method="pg_terminate_backend",
    )
    terminated: list[int] = []
    try:
        terminated = await run_shielded(ctx.cluster.terminate_postgres_backends)
    finally:
        ctx.window(
            "postgres-terminate",
            "end",
            targets=["postgres"],
            method="pg_terminate_backend",
            terminated=len(terminated),
        )
