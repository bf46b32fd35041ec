"""Packet loss: a share of the packets between instances and a store dropped.

iptables rules with the statistic match in each target instance's network
namespace drop each packet to or from the store with probability
``loss_percent / 100``, in both directions. A round trip of one request and
one reply is lost with probability 1 - (1 - p)^2, and TCP retransmits what
is lost, so requests slow down more often than they fail.
"""

from __future__ import annotations

import random

from harness.errors import PreflightError
from harness.faults import PacketLossFault
from harness.nemesis.base import FaultContext
from harness.nemesis.partition import check_drop_support, hold_drops
from harness.topology.network import statistic_match_available


def preflight(fault: PacketLossFault) -> None:
    check_drop_support(fault.kind)
    if not statistic_match_available():
        raise PreflightError(
            "fault 'packet-loss' needs the iptables statistic match "
            "(xt_statistic), which this kernel lacks; use kind: partition to drop "
            "every packet for a shorter duration_s, or kind: latency to slow "
            "the store down instead"
        )


async def inject(fault: PacketLossFault, ctx: FaultContext, rng: random.Random) -> None:
    targets = ctx.resolve_targets(fault.targets, rng)
    await hold_drops(
        ctx,
        fault,
        targets,
        direction="both",
        probability=fault.loss_percent / 100,
        details={"loss_percent": fault.loss_percent},
    )
