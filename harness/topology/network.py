"""Network faults on a cluster: packet drops, netem delay and proxy latency.

Drops and netem qdiscs are made from the host inside a container's network
namespace, entered with ``nsenter -t <pid> -n``. The host's own iptables and
tc binaries run there, so the image needs neither those tools nor the
NET_ADMIN capability. Each fault occurrence puts its iptables rules in a
chain of its own, so healing removes exactly those rules and no other.

A restarted container has a new network namespace with none of the rules,
so healing it finds nothing to remove and does nothing.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from harness.errors import InfrastructureError
from harness.topology.docker_cluster import http_json

if TYPE_CHECKING:
    from harness.topology.docker_cluster import DockerCluster

log = logging.getLogger(__name__)

Peer = Literal["redis", "postgres"]
Direction = Literal["both", "outbound", "inbound"]

# The members an instance reaches each store through: the proxy in front of
# it and, for an image that connects straight to the store, the store itself.
PEER_MEMBERS: dict[str, tuple[str, ...]] = {
    "redis": ("redis-proxy", "redis"),
    "postgres": ("postgres-proxy", "postgres"),
}
# The proxy that delays each store's traffic when the kernel has no netem.
LATENCY_PROXY: dict[str, str] = {"redis": "redis-proxy", "postgres": "postgres-proxy"}

COMMAND_TIMEOUT_S = 10.0
# iptables limits chain names to 28 characters.
MAX_CHAIN_LENGTH = 28


# --- addresses ------------------------------------------------------------------


def peer_addresses(cluster: DockerCluster, peer: Peer) -> list[str]:
    """Return every address an instance reaches ``peer`` through."""
    addresses = []
    for name in PEER_MEMBERS[peer]:
        if name not in cluster.members:
            continue
        address = cluster.member_address(name)
        if address is None:
            raise InfrastructureError(
                f"{name} has no address on network {_network_name(cluster)}; it "
                "may have stopped. Check `docker ps` while the run lasts"
            )
        addresses.append(address)
    if not addresses:
        raise InfrastructureError(
            f"the cluster has none of {', '.join(PEER_MEMBERS[peer])}, so there is "
            f"nothing to cut the instances off from for peer {peer!r}"
        )
    return addresses


def _network_name(cluster: DockerCluster) -> str:
    if cluster.network is None:
        raise InfrastructureError("the cluster has no network: start it first")
    return cluster.network.name


# --- commands in a container's network namespace ----------------------------------


def run_in_namespace(
    pid: int, *command: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a host command in the network namespace of process ``pid``."""
    try:
        return subprocess.run(
            ["nsenter", "-t", str(pid), "-n", *command],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise InfrastructureError(
            f"{' '.join(command)} in the network namespace of PID {pid} did not "
            f"finish within {COMMAND_TIMEOUT_S:.0f} s"
        ) from err


def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        raise InfrastructureError(
            f"{what} failed with exit code {result.returncode}: "
            f"{result.stderr.strip() or result.stdout.strip()}; run `harness doctor` "
            "to see which network features this machine has"
        )


# --- dropped packets ----------------------------------------------------------------


@dataclass(frozen=True)
class DropRules:
    """The iptables chain of one fault occurrence in one instance's namespace."""

    instance: str
    pid: int
    chain: str
    # The built-in chains that jump to ``chain``: OUTPUT, INPUT or both.
    hooks: tuple[str, ...]


def new_chain_name(kind: str) -> str:
    """Return a chain name of one fault occurrence, such as harness-partition-1a2b3c."""
    name = f"harness-{kind}-{secrets.token_hex(3)}"
    if len(name) > MAX_CHAIN_LENGTH:
        raise ValueError(
            f"chain name {name!r} is longer than iptables allows "
            f"({MAX_CHAIN_LENGTH} characters); use a shorter kind"
        )
    return name


def drop_packets(
    cluster: DockerCluster,
    instance: str,
    addresses: list[str],
    direction: Direction,
    chain: str,
    probability: float | None = None,
) -> DropRules | None:
    """Drop packets between ``instance`` and ``addresses``.

    'outbound' drops what the instance sends to the addresses, 'inbound' what
    it receives from them. With ``probability`` each packet is dropped with
    that chance (the iptables statistic match), else every one is. Returns
    None, with nothing changed, when the instance is not running.
    """
    pid = cluster.container_pid(instance)
    if pid is None:
        return None
    hooks = []
    rules = []
    if direction in ("both", "outbound"):
        hooks.append("OUTPUT")
        rules += [["-d", address] for address in addresses]
    if direction in ("both", "inbound"):
        hooks.append("INPUT")
        rules += [["-s", address] for address in addresses]
    match = []
    if probability is not None:
        match = [
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            f"{probability:.6f}",
        ]

    # One iptables-restore applies the chain, its rules and the jumps at
    # once, so a failure leaves nothing half made.
    lines = ["*filter", f":{chain} - [0:0]"]
    lines += [" ".join(["-A", chain, *rule, *match, "-j", "DROP"]) for rule in rules]
    lines += [f"-I {hook} 1 -j {chain}" for hook in hooks]
    lines += ["COMMIT", ""]
    result = run_in_namespace(
        pid, "iptables-restore", "--noflush", "-w", "5", stdin="\n".join(lines)
    )
    if result.returncode != 0 and cluster.container_pid(instance) != pid:
        # The instance restarted meanwhile, into a namespace with no rules.
        return None
    _check(result, f"adding chain {chain} in {instance}")
    return DropRules(instance=instance, pid=pid, chain=chain, hooks=tuple(hooks))


def remove_drop_rules(cluster: DockerCluster, rules: DropRules) -> int | None:
    """Remove the chain of one occurrence and return how many packets it dropped.

    Returns None when the chain is gone: an instance that restarted or
    stopped since has none, and that is no error.
    """
    pid = cluster.container_pid(rules.instance)
    if pid != rules.pid:
        return None
    # iptables-save lists every chain with its rules' counters. Listing one
    # missing chain fails with messages that differ between the legacy and
    # the nf_tables iptables, so the whole table is read instead.
    saved = run_in_namespace(pid, "iptables-save", "-c", "-t", "filter")
    if saved.returncode != 0 and cluster.container_pid(rules.instance) != pid:
        return None
    _check(saved, f"listing the iptables rules of {rules.instance}")
    dropped = dropped_packets(saved.stdout, rules.chain)
    if dropped is None:
        return None
    # Only the jumps still there: deleting a missing rule fails the restore.
    rule_lines = {line.partition(" ")[2] for line in saved.stdout.splitlines()}
    hooks = [
        hook for hook in rules.hooks if f"-A {hook} -j {rules.chain}" in rule_lines
    ]
    lines = ["*filter"]
    lines += [f"-D {hook} -j {rules.chain}" for hook in hooks]
    lines += [f"-F {rules.chain}", f"-X {rules.chain}", "COMMIT", ""]
    result = run_in_namespace(
        pid, "iptables-restore", "--noflush", "-w", "5", stdin="\n".join(lines)
    )
    if result.returncode != 0 and cluster.container_pid(rules.instance) != pid:
        return None
    _check(result, f"removing chain {rules.chain} in {rules.instance}")
    return dropped


def dropped_packets(saved: str, chain: str) -> int | None:
    """Sum the packet counters of ``chain``'s rules in ``iptables-save -c`` output.

    Returns None when the output has no such chain.
    """
    lines = saved.splitlines()
    if not any(line.startswith(f":{chain} ") for line in lines):
        return None
    total = 0
    for line in lines:
        # "[12:720] -A harness-partition-1a2b3c -d 172.18.0.3/32 -j DROP"
        counters, _, rule = line.partition(" ")
        if rule.startswith(f"-A {chain} ") and counters.startswith("["):
            total += int(counters[1:].split(":")[0])
    return total


def list_chains(cluster: DockerCluster, instance: str) -> list[str]:
    """Return the names of the fault chains now in an instance's namespace."""
    pid = cluster.container_pid(instance)
    if pid is None:
        return []
    result = run_in_namespace(pid, "iptables", "-w", "5", "-S")
    _check(result, f"listing the iptables rules of {instance}")
    return [
        line.split()[1]
        for line in result.stdout.splitlines()
        if line.startswith("-N harness-")
    ]


# --- netem -------------------------------------------------------------------------


@dataclass(frozen=True)
class NetemQdisc:
    """The netem qdisc of one latency occurrence on one instance's interface."""

    instance: str
    pid: int
    interface: str


def add_netem_delay(
    cluster: DockerCluster,
    instance: str,
    addresses: list[str],
    delay_ms: float,
    jitter_ms: float,
) -> NetemQdisc | None:
    """Delay what ``instance`` sends to ``addresses`` with a netem qdisc.

    A prio qdisc with a fourth band, which the default priority map never
    uses, takes only the packets that a u32 filter sends there by
    destination, so the instance's replies to clients are not delayed.
    Returns None when the instance is not running.
    """
    # NOTE: never run yet. The kernel this was written on has neither
    # sch_netem nor sch_prio, so these tc commands are untested.
    pid = cluster.container_pid(instance)
    if pid is None:
        return None
    own_address = cluster.member_address(instance)
    interface = _interface_with_address(pid, own_address, instance)
    delay = f"{delay_ms:.3f}ms"
    jitter = [f"{jitter_ms:.3f}ms"] if jitter_ms > 0 else []
    tc = ["tc"]
    commands = [
        [
            *tc,
            "qdisc",
            "add",
            "dev",
            interface,
            "root",
            "handle",
            "1:",
            "prio",
            "bands",
            "4",
        ],
        [
            *tc,
            "qdisc",
            "add",
            "dev",
            interface,
            "parent",
            "1:4",
            "handle",
            "40:",
            "netem",
            "delay",
            delay,
            *jitter,
        ],
    ]
    commands += [
        [
            *tc,
            "filter",
            "add",
            "dev",
            interface,
            "parent",
            "1:",
            "protocol",
            "ip",
            "prio",
            "1",
            "u32",
            "match",
            "ip",
            "dst",
            f"{address}/32",
            "flowid",
            "1:4",
        ]
        for address in addresses
    ]
    qdisc = NetemQdisc(instance=instance, pid=pid, interface=interface)
    for command in commands:
        result = run_in_namespace(pid, *command)
        if result.returncode != 0:
            remove_netem_delay(cluster, qdisc)
            _check(result, f"{' '.join(command)} in {instance}")
    return qdisc


def remove_netem_delay(cluster: DockerCluster, qdisc: NetemQdisc) -> bool:
    """Remove the qdisc; return False when the instance restarted or stopped since."""
    if cluster.container_pid(qdisc.instance) != qdisc.pid:
        return False
    result = run_in_namespace(
        qdisc.pid, "tc", "qdisc", "del", "dev", qdisc.interface, "root"
    )
    return result.returncode == 0


def _interface_with_address(pid: int, address: str | None, instance: str) -> str:
    result = run_in_namespace(pid, "ip", "-o", "-4", "addr", "show")
    _check(result, f"listing the interfaces of {instance}")
    for line in result.stdout.splitlines():
        fields = line.split()
        # "2: eth0    inet 172.18.0.5/16 brd ..." -> eth0 and 172.18.0.5
        if address and len(fields) >= 4 and fields[3].split("/")[0] == address:
            return fields[1].split("@")[0]
    raise InfrastructureError(
        f"no interface of {instance} has address {address!r} on the run's network"
    )


# --- proxy latency --------------------------------------------------------------------


def set_proxy_latency(
    cluster: DockerCluster,
    proxy: str,
    delay_ms: float,
    jitter_ms: float,
    clients: list[str] | None,
) -> None:
    """Make ``proxy`` delay what ``clients`` send (None: every client)."""
    status, body = http_json(
        cluster.url(proxy) + "/latency",
        method="POST",
        body={"delay_ms": delay_ms, "jitter_ms": jitter_ms, "clients": clients},
    )
    if status != 200:
        raise InfrastructureError(f"{proxy} rejected the latency setting: {body}")


def clear_proxy_latency(
    cluster: DockerCluster, proxy: str, clients: list[str] | None
) -> None:
    """Remove the delay of ``clients`` (None: every client's) from ``proxy``."""
    status, body = http_json(
        cluster.url(proxy) + "/latency/clear", method="POST", body={"clients": clients}
    )
    if status != 200:
        raise InfrastructureError(f"{proxy} rejected clearing latency: {body}")


def proxy_stats(cluster: DockerCluster, proxy: str) -> dict:
    return http_json(cluster.url(proxy) + "/stats")[1]


# --- what this machine supports -----------------------------------------------------


def missing_tools(*tools: str) -> list[str]:
    """Return the tools in ``tools`` that are not on the PATH."""
    return [tool for tool in tools if shutil.which(tool) is None]


def is_root() -> bool:
    return os.geteuid() == 0


@functools.cache
def netem_available() -> bool:
    """Tell whether tc can add a netem qdisc, tried in a namespace of its own.

    A new, empty network namespace from ``unshare -n`` is thrown away when
    the command exits, so the check changes nothing on the host. It needs root.
    """
    return _try_in_new_namespace(
        "ip link set lo up && tc qdisc add dev lo root netem delay 1ms"
    )


@functools.cache
def statistic_match_available() -> bool:
    """Tell whether iptables has the statistic match, which random drops use."""
    return _try_in_new_namespace(
        "iptables -w 5 -A OUTPUT -m statistic --mode random --probability 0.5 -j DROP"
    )


def _try_in_new_namespace(script: str) -> bool:
    if not is_root() or missing_tools("unshare", "sh"):
        return False
    try:
        result = subprocess.run(
            ["unshare", "-n", "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("could not run %r in a new network namespace: %s", script, err)
        return False
    return result.returncode == 0
