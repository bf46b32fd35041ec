"""The faults a scenario can schedule: one model per kind, with shared timing fields.

Every fault happens at fixed times (``start_s``, then every ``every_s``) or on
a seeded random schedule (``schedule: random``: gaps drawn around
``every_s``), each occurrence with ``probability``, and lasts ``duration_s``
where that means something. How each is made is in harness/nemesis/.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# A target list names instances ("coordinator-2"), or picks them per
# occurrence: one at random, or all of them.
TargetPick = Literal["random-instance", "all-instances"]
Peer = Literal["redis", "postgres"]


class _Strict(BaseModel):
    # strict: a YAML true is not a duration and "7" is not a seed.
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, allow_inf_nan=False
    )


class _Timing(_Strict):
    """When a fault happens: fixed times or a seeded random schedule."""

    start_s: float = Field(
        0.0, ge=0, le=3600, description="seconds into the storm of the first occurrence"
    )
    every_s: float | None = Field(
        None,
        gt=0,
        le=3600,
        description="seconds between occurrences; leave out for a single one",
    )
    schedule: Literal["fixed", "random"] = Field(
        "fixed",
        description="'fixed': at start_s, start_s + every_s, ...; 'random': gaps "
        "drawn from an exponential distribution with mean every_s, from the seed",
    )
    probability: float = Field(
        1.0, ge=0, le=1, description="chance that each occurrence takes place"
    )

    @model_validator(mode="after")
    def _random_needs_period(self):
        if self.schedule == "random" and self.every_s is None:
            raise ValueError(
                "schedule 'random' draws gaps around every_s; set every_s, or use "
                "schedule 'fixed' for a single occurrence"
            )
        return self


class _Windowed(_Timing):
    duration_s: float | None = Field(
        2.0,
        ge=0,
        le=3600,
        description="seconds each occurrence lasts; null lasts until the storm ends",
    )


def _targets_field():
    return Field(
        "random-instance",
        description="'random-instance', 'all-instances', or a list of instance "
        "names such as [coordinator-1, coordinator-2]",
    )


def _one_name_as_list(value: object) -> object:
    """Lets ``targets: coordinator-2`` stand for ``targets: [coordinator-2]``."""
    if isinstance(value, str) and value not in ("random-instance", "all-instances"):
        return [value]
    return value


class _OnInstances(_Windowed):
    targets: TargetPick | list[str] = _targets_field()

    _single_target = field_validator("targets", mode="before")(_one_name_as_list)


# --- coordinator instances ---------------------------------------------------------


class KillFault(_OnInstances):
    """SIGKILL of instances, which restart after ``duration_s``."""

    kind: Literal["kill"]
    align: Literal["none", "new-event"] = Field(
        "none",
        description="'new-event' times each kill a random 0..align_max_ms after "
        "the first delivery of a new event, so it meets a slot being taken",
    )
    # The default comes from a measurement: with the reference coordinator on
    # a loaded 2-core machine, aligned kills lost pop-then-record's slot about
    # 70% of the time within 5 ms of delivery, and rarely after 5 ms.
    align_max_ms: float = Field(
        5.0, ge=0, le=5000, description="upper bound of the delay after delivery"
    )


class StopFault(_OnInstances):
    """A graceful stop (SIGTERM, then SIGKILL after ``grace_s``), start after."""

    kind: Literal["stop"]
    grace_s: float = Field(
        5.0, ge=0, le=120, description="seconds between SIGTERM and SIGKILL"
    )


class RestartFault(_Timing):
    """A restart of instances: graceful stop and start at once."""

    kind: Literal["restart"]
    targets: TargetPick | list[str] = _targets_field()

    _single_target = field_validator("targets", mode="before")(_one_name_as_list)
    grace_s: float = Field(5.0, ge=0, le=120)


class PauseFault(_OnInstances):
    """Instances frozen by the cgroup freezer (docker pause) for ``duration_s``."""

    kind: Literal["pause"]


class SigstopFault(_OnInstances):
    """Every process of the instances stopped by SIGSTOP, then SIGCONT."""

    kind: Literal["sigstop"]


class RollingRestartFault(_Timing):
    """Every instance restarted in turn, each back and ready before the next."""

    kind: Literal["rolling-restart"]
    grace_s: float = Field(5.0, ge=0, le=120)
    gap_s: float = Field(
        0.5, ge=0, le=600, description="seconds between one instance and the next"
    )


# --- network -----------------------------------------------------------------------


class PartitionFault(_OnInstances):
    """Instances cut off from Redis or Postgres (packets dropped), whole or one way."""

    kind: Literal["partition"]
    peer: Peer = Field(description="the store the instances are cut off from")
    direction: Literal["both", "outbound", "inbound"] = Field(
        "both",
        description="'outbound' drops what the instances send to the store, "
        "'inbound' what they receive from it, 'both' either",
    )
    duration_s: float | None = Field(3.0, ge=0, le=3600)


class PacketLossFault(_OnInstances):
    """A share of the packets between instances and a store dropped at random."""

    kind: Literal["packet-loss"]
    peer: Peer
    loss_percent: float = Field(gt=0, le=100)
    duration_s: float | None = Field(3.0, ge=0, le=3600)


class LatencyFault(_OnInstances):
    """Delay, with jitter, on the way between instances and a store."""

    kind: Literal["latency"]
    peer: Peer
    delay_ms: float = Field(gt=0, le=60_000)
    jitter_ms: float = Field(0.0, ge=0, le=60_000)
    method: Literal["auto", "netem", "proxy"] = Field(
        "auto",
        description="'netem' needs the kernel's sch_netem; 'proxy' delays in the "
        "TCP proxy the cluster runs before each store; 'auto' picks netem where "
        "the kernel has it, else the proxy. The run records which it used.",
    )
    duration_s: float | None = Field(3.0, ge=0, le=3600)


# --- Redis -------------------------------------------------------------------------


class RedisRestartFault(_Timing):
    """A restart of Redis. With ``data: lose`` it comes back empty.

    A scenario with ``redis_persistence: volatile`` loses data on every
    restart. Data lost this way is blamed on the environment, not the
    coordinator.
    """

    kind: Literal["redis-restart"]
    data: Literal["keep", "lose"] = Field(
        "keep",
        description="'keep' restarts with the append-only file; 'lose' deletes it "
        "first, as a server without persistence would lose everything",
    )


class RedisScriptFlushFault(_Timing):
    """SCRIPT FLUSH: Redis forgets every loaded Lua script."""

    kind: Literal["redis-script-flush"]


class RedisClientKillFault(_Timing):
    """CLIENT KILL of every client connection of Redis (the coordinators' ones)."""

    kind: Literal["redis-client-kill"]


# --- Postgres ----------------------------------------------------------------------


class PostgresRestartFault(_Timing):
    """A restart of Postgres, which keeps its data."""

    kind: Literal["postgres-restart"]


class PostgresTerminateFault(_Timing):
    """pg_terminate_backend of every session the coordinators hold."""

    kind: Literal["postgres-terminate"]


# --- WATCH conflicts -----------------------------------------------------------------


class WatchConflictFault(_Windowed):
    """WATCH conflicts: a neutral write to a watched key aborts the transaction.

    ``mode: proxy`` has the RESP proxy write just before it forwards EXEC, for
    ``fraction`` of the transactions; ``mode: writer`` writes to the batches'
    keys from a background connection at ``writes_per_s``, at random times.
    """

    kind: Literal["watch-conflict"]
    mode: Literal["proxy", "writer"] = "proxy"
    fraction: float = Field(
        0.2, ge=0, le=1, description="proxy mode: share of EXECs made to abort"
    )
    writes_per_s: float = Field(
        200.0, gt=0, le=10_000, description="writer mode: neutral writes per second"
    )
    duration_s: float | None = Field(None, ge=0, le=3600)


Fault = Annotated[
    KillFault
    | StopFault
    | RestartFault
    | PauseFault
    | SigstopFault
    | RollingRestartFault
    | PartitionFault
    | PacketLossFault
    | LatencyFault
    | RedisRestartFault
    | RedisScriptFlushFault
    | RedisClientKillFault
    | PostgresRestartFault
    | PostgresTerminateFault
    | WatchConflictFault,
    Field(discriminator="kind"),
]

FAULT_KINDS: tuple[str, ...] = (
    "kill",
    "stop",
    "restart",
    "pause",
    "sigstop",
    "rolling-restart",
    "partition",
    "packet-loss",
    "latency",
    "redis-restart",
    "redis-script-flush",
    "redis-client-kill",
    "postgres-restart",
    "postgres-terminate",
    "watch-conflict",
)

# Faults during which an instance may fairly leave a request unanswered past
# the client timeout: it is down, frozen, cut off or slowed, or a store it
# waits on is. A WATCH conflict, a script flush or a killed connection is not
# among them: a correct coordinator answers through those.
BLOCKING_KINDS: frozenset[str] = frozenset(
    {
        "kill",
        "stop",
        "restart",
        "pause",
        "sigstop",
        "rolling-restart",
        "partition",
        "packet-loss",
        "latency",
        "redis-restart",
        "postgres-restart",
    }
)
