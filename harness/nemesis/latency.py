"""Latency with jitter between instances and a store: tc netem, or the proxies.

``method: netem`` puts a netem qdisc on each target instance's interface for
the packets it sends to the store. ``method: proxy`` has the proxy in front
of the store (redis-proxy, or the TCP relay postgres-proxy) hold back what
the target instances send, by their addresses. ``method: auto`` uses netem
where the kernel has it, else the proxy. Either way one round trip to the
store takes about ``delay_ms`` longer (plus or minus ``jitter_ms``), and the
window records the method used as ``netem`` or ``tcp-proxy``.
"""

from __future__ import annotations

import asyncio
import random

from harness.errors import PreflightError
from harness.faults import LatencyFault
from harness.nemesis.base import FaultContext
from harness.nemesis.shielded import run_shielded
from harness.topology.network import (
    LATENCY_PROXY,
    NetemQdisc,
    add_netem_delay,
    clear_proxy_latency,
    is_root,
    missing_tools,
    netem_available,
    peer_addresses,
    remove_netem_delay,
    set_proxy_latency,
)

NETEM_TOOLS = ("nsenter", "tc", "ip", "unshare")


def preflight(fault: LatencyFault) -> None:
    if fault.method != "netem":
        return
    missing = missing_tools(*NETEM_TOOLS)
    if missing:
        raise PreflightError(
            f"latency method 'netem' needs {', '.join(missing)} on the host, which "
            "this machine lacks; install iproute2 and util-linux, or use method: "
            "proxy (the TCP proxy) or method: auto"
        )
    if not is_root():
        raise PreflightError(
            "latency method 'netem' enters containers' network namespaces with "
            "nsenter, which needs root; run the harness as root, or use method: "
            "proxy (the TCP proxy) or method: auto"
        )
    if not netem_available():
        raise PreflightError(
            "latency method 'netem' needs the kernel's sch_netem qdisc, which this "
            "kernel lacks (tc: qdisc kind is unknown); use method: proxy (the TCP "
            "proxy) or method: auto"
        )


def chosen_method(fault: LatencyFault) -> str:
    """Return 'netem' or 'tcp-proxy', the way this occurrence delays packets."""
    if fault.method == "netem" or (fault.method == "auto" and netem_available()):
        return "netem"
    return "tcp-proxy"


async def inject(fault: LatencyFault, ctx: FaultContext, rng: random.Random) -> None:
    targets = ctx.resolve_targets(fault.targets, rng)
    if chosen_method(fault) == "netem":
        await _with_netem(fault, ctx, targets)
    else:
        await _with_proxy(fault, ctx, targets)


async def _with_proxy(
    fault: LatencyFault, ctx: FaultContext, targets: list[str]
) -> None:
    cluster = ctx.cluster
    proxy = LATENCY_PROXY[fault.peer]
    # The proxy tells clients apart by source address only.
    addresses = {
        target: await asyncio.to_thread(cluster.member_address, target)
        for target in targets
    }
    clients = [address for address in addresses.values() if address]
    not_running = [target for target, address in addresses.items() if not address]
    window = {
        "targets": targets,
        "method": "tcp-proxy",
        "peer": fault.peer,
        "proxy": proxy,
        "delay_ms": fault.delay_ms,
        "jitter_ms": fault.jitter_ms,
        "clients": clients,
    }
    ctx.window("latency", "start", **window)
    try:
        if clients:
            await asyncio.to_thread(
                set_proxy_latency,
                cluster,
                proxy,
                fault.delay_ms,
                fault.jitter_ms,
                clients,
            )
        await asyncio.sleep(ctx.hold_s(fault.duration_s))
    finally:
        if clients:
            await run_shielded(clear_proxy_latency, cluster, proxy, clients)
        ctx.window("latency", "end", **window, not_running=not_running)


async def _with_netem(
    fault: LatencyFault, ctx: FaultContext, targets: list[str]
) -> None:
    cluster = ctx.cluster
    addresses = await asyncio.to_thread(peer_addresses, cluster, fault.peer)
    window = {
        "targets": targets,
        "method": "netem",
        "peer": fault.peer,
        "addresses": addresses,
        "delay_ms": fault.delay_ms,
        "jitter_ms": fault.jitter_ms,
    }
    applied: list[NetemQdisc] = []
    not_running: list[str] = []
    ctx.window("latency", "start", **window)
    try:
        for target in targets:
            qdisc = await asyncio.to_thread(
                add_netem_delay,
                cluster,
                target,
                addresses,
                fault.delay_ms,
                fault.jitter_ms,
            )
            if qdisc is None:
                not_running.append(target)
            else:
                applied.append(qdisc)
        await asyncio.sleep(ctx.hold_s(fault.duration_s))
    finally:
        await run_shielded(_remove_all, cluster, applied)
        ctx.window("latency", "end", **window, not_running=not_running)


def _remove_all(cluster, applied: list[NetemQdisc]) -> None:
    for qdisc in applied:
        remove_netem_delay(cluster, qdisc)
