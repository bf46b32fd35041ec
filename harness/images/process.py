"""Running the build's external commands with a deadline and a live heartbeat."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from harness.errors import InfrastructureError

TAIL_LINES = 25
# Time a command gets to exit after SIGTERM before it gets SIGKILL.
TERMINATE_GRACE_S = 30


class CommandFailed(Exception):
    """A command that exited with a non-zero code or ran past its deadline."""

    def __init__(self, summary: str, tail: list[str]) -> None:
        super().__init__(summary)
        self.summary = summary
        self.tail = tail

    def output_tail(self) -> str:
        return "\n".join(self.tail) if self.tail else "(no output)"


def run_command(
    command: Sequence[str],
    *,
    timeout_s: float,
    heartbeat_s: float,
    on_heartbeat: Callable[[float, str], None],
    env: dict[str, str] | None = None,
) -> list[str]:
    """Run command to completion and return the last TAIL_LINES of its output.

    Every heartbeat_s seconds on_heartbeat(elapsed seconds, last output line)
    is called, so a long step shows that it is alive. The command runs in its
    own session, and on a timeout or an interrupt (KeyboardInterrupt included)
    its whole process group is stopped before the error propagates.

    Raises CommandFailed on a non-zero exit code or a timeout, and
    InfrastructureError when the program cannot be started.
    """
    try:
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
            env=env,
        )
    except OSError as err:
        raise InfrastructureError(f"cannot start {command[0]!r}: {err}") from err

    # The context closes the output pipe once the command has exited.
    with process:
        return _follow(process, command, timeout_s, heartbeat_s, on_heartbeat)


def _follow(
    process: subprocess.Popen[str],
    command: Sequence[str],
    timeout_s: float,
    heartbeat_s: float,
    on_heartbeat: Callable[[float, str], None],
) -> list[str]:
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    reader = threading.Thread(target=_read_lines, args=(process, tail), daemon=True)
    reader.start()
    started = time.monotonic()
    try:
        while True:
            try:
                returncode = process.wait(timeout=heartbeat_s)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - started
                if elapsed > timeout_s:
                    _stop_group(process)
                    reader.join(timeout=5)
                    raise CommandFailed(
                        f"{command[0]} timed out after {timeout_s:g} s", list(tail)
                    ) from None
                on_heartbeat(elapsed, tail[-1] if tail else "")
    except BaseException:
        _stop_group(process)
        raise

    reader.join(timeout=5)
    if returncode != 0:
        raise CommandFailed(f"{command[0]} exited with code {returncode}", list(tail))
    return list(tail)


def _read_lines(process: subprocess.Popen[str], tail: deque[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        tail.append(line.rstrip())


def _stop_group(process: subprocess.Popen[str]) -> None:
    """Stop the process group that run_command started, SIGTERM then SIGKILL."""
    if process.poll() is not None:
        return
    # The group id equals the pid because the command runs in its own session.
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=TERMINATE_GRACE_S)
    except ProcessLookupError:
        pass
