"""Preflight of the network faults: what a machine without a feature is told.

The detection functions are replaced here, so each message is checked on any
machine. tests/e2e/test_network_faults.py runs the real detection through
the command line.
"""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from harness.errors import PreflightError
from harness.faults import Fault
from harness.nemesis import latency, packet_loss, partition
from harness.nemesis import preflight as preflight_all

FAULT = TypeAdapter(Fault)


def fault(**fields):
    return FAULT.validate_python(fields)


PARTITION = {"kind": "partition", "peer": "redis"}
LOSS = {"kind": "packet-loss", "peer": "postgres", "loss_percent": 20.0}
NETEM = {"kind": "latency", "peer": "redis", "delay_ms": 100.0, "method": "netem"}


@pytest.fixture
def machine(monkeypatch):
    """A machine with every feature; each test takes one away."""
    monkeypatch.setattr(partition, "missing_tools", lambda *tools: [])
    monkeypatch.setattr(partition, "is_root", lambda: True)
    monkeypatch.setattr(packet_loss, "statistic_match_available", lambda: True)
    monkeypatch.setattr(latency, "missing_tools", lambda *tools: [])
    monkeypatch.setattr(latency, "is_root", lambda: True)
    monkeypatch.setattr(latency, "netem_available", lambda: True)
    return monkeypatch


def test_full_machine_passes_every_fault(machine):
    preflight_all([fault(**PARTITION), fault(**LOSS), fault(**NETEM)])


@pytest.mark.parametrize("spec", [PARTITION, LOSS], ids=["partition", "packet-loss"])
def test_drop_without_iptables_names_tools(machine, spec):
    machine.setattr(
        partition, "missing_tools", lambda *tools: ["iptables", "iptables-restore"]
    )

    with pytest.raises(PreflightError) as caught:
        preflight_all([fault(**spec)])

    assert str(caught.value) == (
        f"fault {spec['kind']!r} needs iptables, iptables-restore on the host, "
        "which this machine lacks; install them (apt-get install iptables "
        f"util-linux), or leave the {spec['kind']} fault out of the scenario"
    )
    assert caught.value.exit_code == 2


def test_partition_without_root_says_run_as_root(machine):
    machine.setattr(partition, "is_root", lambda: False)

    with pytest.raises(PreflightError) as caught:
        preflight_all([fault(**PARTITION)])

    assert str(caught.value) == (
        "fault 'partition' enters containers' network namespaces with nsenter, "
        "which needs root; run the harness as root, or leave the partition fault "
        "out of the scenario"
    )


def test_loss_without_statistic_match_names_fallback(machine):
    machine.setattr(packet_loss, "statistic_match_available", lambda: False)

    with pytest.raises(PreflightError) as caught:
        preflight_all([fault(**LOSS)])

    assert str(caught.value) == (
        "fault 'packet-loss' needs the iptables statistic match (xt_statistic), "
        "which this kernel lacks; use kind: partition to drop every packet for a "
        "shorter duration_s, or kind: latency to slow the store down instead"
    )


def test_partition_needs_no_statistic_match(machine):
    machine.setattr(packet_loss, "statistic_match_available", lambda: False)

    preflight_all([fault(**PARTITION)])


def test_netem_without_sch_netem_names_proxy(machine):
    machine.setattr(latency, "netem_available", lambda: False)

    with pytest.raises(PreflightError) as caught:
        preflight_all([fault(**NETEM)])

    assert str(caught.value) == (
        "latency method 'netem' needs the kernel's sch_netem qdisc, which this "
        "kernel lacks (tc: qdisc kind is unknown); use method: proxy (the TCP "
        "proxy) or method: auto"
    )


def test_netem_without_root_names_proxy(machine):
    machine.setattr(latency, "is_root", lambda: False)

    with pytest.raises(PreflightError, match="needs root; run the harness as root"):
        preflight_all([fault(**NETEM)])


@pytest.mark.parametrize("method", ["auto", "proxy"])
def test_latency_without_netem_passes_other_methods(machine, method):
    machine.setattr(latency, "netem_available", lambda: False)
    machine.setattr(latency, "is_root", lambda: False)

    preflight_all([fault(**{**NETEM, "method": method})])


@pytest.mark.parametrize(
    ("method", "netem", "chosen"),
    [
        ("auto", True, "netem"),
        ("auto", False, "tcp-proxy"),
        ("proxy", True, "tcp-proxy"),
        ("netem", True, "netem"),
    ],
)
def test_latency_method_chosen(machine, method, netem, chosen):
    machine.setattr(latency, "netem_available", lambda: netem)

    assert latency.chosen_method(fault(**{**NETEM, "method": method})) == chosen
