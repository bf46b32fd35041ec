"""Running the build's commands: output tails, deadlines, heartbeats."""

from __future__ import annotations

import time

import pytest

from harness.images.process import CommandFailed, run_command


def test_run_command_returns_output_tail() -> None:
    tail = run_command(
        ["sh", "-c", "echo one; echo two >&2"],
        timeout_s=30,
        heartbeat_s=1,
        on_heartbeat=lambda elapsed, line: None,
    )

    assert tail == ["one", "two"]


def test_run_command_failure_keeps_output() -> None:
    with pytest.raises(CommandFailed) as caught:
        run_command(
            ["sh", "-c", "echo fetching; echo 'E: mirror down'; exit 3"],
            timeout_s=30,
            heartbeat_s=1,
            on_heartbeat=lambda elapsed, line: None,
        )

    assert caught.value.summary == "sh exited with code 3"
    assert caught.value.tail == ["fetching", "E: mirror down"]


def test_run_command_timeout_stops_process_group() -> None:
    heartbeats: list[str] = []

    with pytest.raises(CommandFailed) as caught:
        # The background sleep is in the same process group as sh. Its pid
        # is printed so that the test can check that the timeout stopped it.
        run_command(
            ["sh", "-c", "sleep 60 & echo $!; wait"],
            timeout_s=0.5,
            heartbeat_s=0.1,
            on_heartbeat=lambda elapsed, line: heartbeats.append(line),
        )

    assert caught.value.summary == "sh timed out after 0.5 s"
    child_pid = int(caught.value.tail[0])
    assert str(child_pid) in heartbeats
    assert process_gone(child_pid, deadline_s=5) is True


def process_gone(pid: int, deadline_s: float) -> bool:
    """Return whether pid exits, or is a zombie left to reap, before the deadline."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                # The state follows the command name, which is in brackets.
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False
