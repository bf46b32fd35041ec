"""Partitions: instances cut off from Redis or Postgres by dropped packets.

iptables rules in each target instance's network namespace drop the packets
to (``outbound``) or from (``inbound``) every address the instance reaches
the store through: the proxy in front of it and the store itself. The
instance stays up and keeps answering its clients, but each request that
needs the store waits until the store client's own timeout.
packet_loss.py shares this module's window and preflight code.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from harness.errors import PreflightError
from harness.faults import PacketLossFault, PartitionFault
from harness.nemesis.base import FaultContext
from harness.nemesis.shielded import run_shielded
from harness.topology.network import (
    Direction,
    DropRules,
    drop_packets,
    is_root,
    missing_tools,
    new_chain_name,
    peer_addresses,
    remove_drop_rules,
)

# Host tools a drop fault runs; nsenter is in util-linux.
DROP_TOOLS = ("nsenter", "iptables", "iptables-restore")


def preflight(fault: PartitionFault) -> None:
    check_drop_support(fault.kind)


def check_drop_support(kind: str) -> None:
    """Raise PreflightError unless this machine can drop packets in a container."""
    missing = missing_tools(*DROP_TOOLS)
    if missing:
        raise PreflightError(
            f"fault {kind!r} needs {', '.join(missing)} on the host, which this "
            "machine lacks; install them (apt-get install iptables util-linux), "
            f"or leave the {kind} fault out of the scenario"
        )
    if not is_root():
        raise PreflightError(
            f"fault {kind!r} enters containers' network namespaces with nsenter, "
            "which needs root; run the harness as root, or leave the "
            f"{kind} fault out of the scenario"
        )


async def inject(fault: PartitionFault, ctx: FaultContext, rng: random.Random) -> None:
    targets = ctx.resolve_targets(fault.targets, rng)
    await hold_drops(
        ctx,
        fault,
        targets,
        direction=fault.direction,
        probability=None,
        details={"direction": fault.direction},
    )


async def hold_drops(
    ctx: FaultContext,
    fault: PartitionFault | PacketLossFault,
    targets: list[str],
    direction: Direction,
    probability: float | None,
    details: dict[str, Any],
) -> None:
    """Drop packets between the targets and the fault's peer for one occurrence."""
    cluster = ctx.cluster
    kind = fault.kind
    addresses = await asyncio.to_thread(peer_addresses, cluster, fault.peer)
    chain = new_chain_name(kind)
    window = {
        "targets": targets,
        "method": "iptables",
        "peer": fault.peer,
        "addresses": addresses,
        **details,
    }
    applied: list[DropRules] = []
    not_running: list[str] = []
    # The window opens before the first rule, so it covers every dropped packet.
    ctx.window(kind, "start", **window)
    try:
        for target in targets:
            rules = await asyncio.to_thread(
                drop_packets, cluster, target, addresses, direction, chain, probability
            )
            if rules is None:
                not_running.append(target)
            else:
                applied.append(rules)
        await asyncio.sleep(ctx.hold_s(fault.duration_s))
    finally:
        dropped = await run_shielded(heal_drops, cluster, applied)
        ctx.window(
            kind, "end", **window, not_running=not_running, dropped_packets=dropped
        )


def heal_drops(cluster, applied: list[DropRules]) -> dict[str, int | None]:
    """Remove each chain; return the packets each instance's chain dropped.

    An instance maps to None when its chain was already gone, because it
    restarted. Every chain is tried before the first error is raised, so
    one failure does not leave the others in place.
    """
    dropped: dict[str, int | None] = {}
    errors = []
    for rules in applied:
        try:
            dropped[rules.instance] = remove_drop_rules(cluster, rules)
        except Exception as err:  # noqa: BLE001 - raised below, after the others
            errors.append(err)
    if errors:
        raise errors[0]
    return dropped
