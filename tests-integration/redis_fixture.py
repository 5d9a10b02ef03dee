"""Start, kill and restart real ``redis-server`` processes for integration tests.

Plain helpers (no pytest needed) plus pytest fixtures; ``conftest.py`` re-exports the fixtures.
The binary is ``REDIS_SERVER_BIN`` if set (it must be executable), else ``redis-server`` on PATH.
Outside CI a missing binary skips the tests with a one-line reason; in CI (``CI`` set) it fails
them (``.ci/run`` installs the Debian package).

Each server listens on a free loopback port with persistence off (``--save '' --appendonly
no``). Readiness is the server's own "Ready to accept connections" log line followed by a PING
answered PONG: no fixed sleeps, one deadline.

Fixtures:

- ``redis_server_bin`` (session): ``Path`` to the binary.
- ``redis_server`` (function): a fresh ``RedisServer``, stopped at teardown.
- ``redis_server_factory`` (function): ``factory() -> RedisServer`` for several servers.

Several OS processes: ``run_workers(jobs)`` starts one Python process per ``(role, kwargs)`` job
running ``redis_workers.py`` (lean: no pytest import), waits until every one is ready, releases
them together through their stdin (a start barrier without sleeps), and returns each one's JSON
result.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

STARTUP_DEADLINE_S = 20.0
STOP_GRACE_S = 10.0
WORKER_DEADLINE_S = 180.0
READY_LINE = b"Ready to accept connections"

__all__ = [
    "RedisServer",
    "RedisServerError",
    "find_redis_server_binary",
    "finish_worker",
    "in_ci",
    "ping",
    "read_json",
    "redis_server",
    "redis_server_bin",
    "redis_server_factory",
    "run_workers",
    "send_line",
    "start_redis_server",
    "start_worker",
]


class RedisServerError(RuntimeError):
    """redis-server could not be found or started."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def find_redis_server_binary() -> tuple[Path | None, str]:
    """``(path, "")`` or ``(None, reason)``. A set but unusable ``REDIS_SERVER_BIN`` is an error."""
    env = os.environ.get("REDIS_SERVER_BIN", "").strip()
    if env:
        path = Path(env).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise RedisServerError(f"REDIS_SERVER_BIN={env} is not an executable file")
        return path, ""
    found = shutil.which("redis-server")
    if found:
        return Path(found), ""
    return None, "redis-server not found (apt-get install redis-server, or set REDIS_SERVER_BIN)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ping(port: int, timeout: float = 2.0) -> bool:
    """True when a Redis on 127.0.0.1:port answers PING with PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """A running redis-server. ``stop()`` is idempotent; ``kill()`` then ``restart()`` brings
    an empty server back on the same port (persistence is off)."""

    binary: Path
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    log: list[str] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def args(self) -> list[str]:
        return [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--loglevel", "notice",
            "--logfile", "",
        ]  # fmt: skip

    def start(self, deadline_s: float = STARTUP_DEADLINE_S) -> None:
        """Start the process and return once it logged readiness and answered PING."""
        if self.running:
            raise RedisServerError(f"redis-server on port {self.port} is already running")
        self.log.clear()
        self.process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self._wait_ready(deadline_s)

    def _wait_ready(self, deadline_s: float) -> None:
        proc = self.process
        assert proc is not None
        assert proc.stdout is not None
        deadline = time.monotonic() + deadline_s
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while READY_LINE not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.stop()
                    raise RedisServerError(
                        f"redis-server on port {self.port} not ready after {deadline_s:.0f}s:\n"
                        + buffer.decode(errors="replace")[-2000:]
                    )
                if not selector.select(timeout=remaining):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:  # the process exited
                    proc.wait(timeout=STOP_GRACE_S)
                    raise RedisServerError(
                        f"redis-server exited with code {proc.returncode} before becoming ready "
                        f"({' '.join(self.args)}):\n" + buffer.decode(errors="replace")[-2000:]
                    )
                buffer += chunk
        self.log.extend(buffer.decode(errors="replace").splitlines())
        # The pipe is not read any more: send later output nowhere so the server never blocks.
        proc.stdout.close()
        if not ping(self.port):
            raise RedisServerError(f"redis-server on port {self.port} logged ready but no PONG")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown, sockets reset."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_GRACE_S)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_GRACE_S)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_redis_server(binary: Path, workdir: Path, *, attempts: int = 5) -> RedisServer:
    """A ready server on a free loopback port (a port taken meanwhile is retried)."""
    last: RedisServerError | None = None
    for _ in range(attempts):
        server = RedisServer(binary, free_port(), workdir)
        try:
            server.start()
        except RedisServerError as exc:  # most likely "Address already in use": next port
            last = exc
            continue
        return server
    assert last is not None
    raise last


# -- worker processes ----------------------------------------------------------------------------


WORKERS_SCRIPT = Path(__file__).resolve().parent / "redis_workers.py"


def start_worker(role: str, kwargs: Mapping[str, Any]) -> subprocess.Popen[str]:
    """One `redis_workers.py ROLE KWARGS` process, imported and waiting for "go" on stdin."""
    proc = subprocess.Popen(
        [sys.executable, str(WORKERS_SCRIPT), role, json.dumps(dict(kwargs))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        _, err = proc.communicate(timeout=WORKER_DEADLINE_S)
        raise RuntimeError(f"worker {role} failed to start:\n{err[-3000:]}")
    return proc


def send_line(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def read_json(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The worker's next output line, parsed (a worker that died instead is an error)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        _, err = proc.communicate(timeout=WORKER_DEADLINE_S)
        raise RuntimeError(f"worker exited with {proc.returncode}:\n{err[-3000:]}")
    result: dict[str, Any] = json.loads(line)
    return result


def finish_worker(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Wait for the worker to exit and return its last JSON line."""
    out, err = proc.communicate(timeout=WORKER_DEADLINE_S)
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"worker exited with {proc.returncode}:\n{err[-3000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def run_workers(jobs: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Run one worker per `(role, kwargs)` job, all released at the same moment."""
    procs: list[subprocess.Popen[str]] = []
    try:
        procs.extend(start_worker(role, kwargs) for role, kwargs in jobs)
        for proc in procs:  # the barrier: every worker is imported before any starts
            send_line(proc, "go")
        return [finish_worker(proc) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


# -- pytest fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server_bin() -> Path:
    path, reason = find_redis_server_binary()
    if path is None:
        if in_ci():
            pytest.fail(f"{reason}; CI must provide it (.ci/run installs the Debian package)")
        pytest.skip(reason)
    return path


@pytest.fixture
def redis_server_factory(redis_server_bin: Path) -> Iterator[Callable[[], RedisServer]]:
    servers: list[RedisServer] = []
    with tempfile.TemporaryDirectory(prefix="avionics-redis-") as tmp:

        def factory() -> RedisServer:
            workdir = Path(tmp) / str(len(servers))
            workdir.mkdir()
            server = start_redis_server(redis_server_bin, workdir)
            servers.append(server)
            return server

        try:
            yield factory
        finally:
            for server in servers:
                with contextlib.suppress(Exception):
                    server.stop()


@pytest.fixture
def redis_server(redis_server_factory: Callable[[], RedisServer]) -> RedisServer:
    return redis_server_factory()
