"""Real redis-server and PostgreSQL processes on 127.0.0.1 for store tests.

Each server is started on a free port with its data in a temporary folder and
stopped by the PID this module started, never by name.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, deadline_s: float, what: str) -> None:
    """Probes until a TCP connect to 127.0.0.1:port succeeds or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(
        f"{what} did not accept connections on 127.0.0.1:{port} within {deadline_s} s"
    )


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def wait_for_postgres(server: Server, deadline_s: float) -> None:
    """Probes with ``SELECT 1`` until PostgreSQL returns 1 or the deadline passes.

    An open port is not enough: until startup recovery ends, the server accepts
    TCP connections and then rejects them with "the database system is
    starting up" (asyncpg's CannotConnectNowError).
    """
    deadline = time.monotonic() + deadline_s
    last_error = "no probe ran"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"postgres exited with code {server.process.returncode} before "
                "it accepted a query; pass log_path to start_postgres to see why"
            )
        try:
            probe = subprocess.run(
                [
                    str(PG_BIN / "psql"),
                    "--no-psqlrc",
                    "--tuples-only",
                    "--no-align",
                    "--command",
                    "SELECT 1",
                    f"host=127.0.0.1 port={server.port} user=postgres "
                    "dbname=postgres connect_timeout=2",
                ],
                capture_output=True,
                text=True,
                timeout=5,
            )
        except subprocess.TimeoutExpired:
            last_error = "psql did not finish within 5 s"
        else:
            if probe.returncode == 0 and probe.stdout.strip() == "1":
                return
            last_error = probe.stderr.strip() or f"psql printed {probe.stdout!r}"
        time.sleep(0.1)
    raise TimeoutError(
        f"postgres on 127.0.0.1:{server.port} timed out: SELECT 1 failed for "
        f"{deadline_s} s; last error: {last_error}"
    )


def start_redis(data_dir: Path, port: int | None = None) -> Server:
    """Starts redis-server on ``port`` (a free one when None), without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server not found; run `make test`, which installs "
            "Debian's redis-server package"
        )
    port = port or free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, 10, "redis-server")
    return Server(process, port, f"redis://127.0.0.1:{port}/0")


def _demote_to(user: str):
    record = pwd.getpwnam(user)

    def demote() -> None:
        os.setgid(record.pw_gid)
        os.setuid(record.pw_uid)

    return demote


def start_postgres(data_dir: Path, log_path: Path | None = None) -> Server:
    """Starts PostgreSQL 15 with fsync off; as the postgres user when run as root.

    The server's log goes to ``log_path`` when given (deadlock reports, for
    example), and is discarded otherwise.
    """
    if not (PG_BIN / "postgres").exists():
        raise RuntimeError(
            f"{PG_BIN}/postgres not found; run `make test`, which "
            "installs Debian's postgresql package"
        )
    port = free_port()
    preexec = None
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root.
        record = pwd.getpwnam("postgres")
        os.chown(data_dir, record.pw_uid, record.pw_gid)
        preexec = _demote_to("postgres")
    pgdata = data_dir / "pgdata"
    subprocess.run(
        [
            str(PG_BIN / "initdb"),
            "-D",
            str(pgdata),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=preexec,
    )
    log_file = None if log_path is None else log_path.open("ab")
    try:
        process = subprocess.Popen(
            [
                str(PG_BIN / "postgres"),
                "-D",
                str(pgdata),
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={data_dir}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if log_file is None else log_file,
            preexec_fn=preexec,
        )
    finally:
        if log_file is not None:
            # The server process has its own copy of the descriptor.
            log_file.close()
    server = Server(process, port, f"postgresql://postgres@127.0.0.1:{port}/postgres")
    try:
        wait_for_postgres(server, 20)
    except BaseException:
        server.stop()
        raise
    return server
