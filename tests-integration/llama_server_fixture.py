"""Start and stop real ``llama-server`` processes for integration tests.

Plain helpers (no pytest import needed) plus pytest fixtures; ``conftest.py`` re-exports the
fixtures. Binary lookup order:

1. ``LLAMA_SERVER_BIN`` (must point to an executable, else a hard error),
2. the cache written by ``scripts/build_llama_server.sh``
   (``${XDG_CACHE_HOME:-~/.cache}/airframe/llama-server-0.3.36/llama-server``),
3. in CI only (``CI`` set to a truthy value): run the build script.

Outside CI a missing binary skips the tests; in CI it fails them.

Fixtures:

- ``llama_server_bin`` (session): ``Path`` to the binary.
- ``tiny_model_path`` (session): the tiny random GGUF from ``tinymodel.py``.
- ``llama_server_factory`` (function): ``factory(**kwargs) -> LlamaServer``; call it twice for
  two nodes. Every server it started is stopped at test teardown.
- ``llama_server`` (module): one ready server shared by the tests of a module.
- ``llama_server_loading`` (function): a server held in the model-loading state (``/health``
  answers 503) for as long as the test runs; see ``start_llama_server_stuck_loading``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import pytest

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build_llama_server.sh"

DEFAULT_CTX = 256
DEFAULT_PARALLEL = 4
STARTUP_DEADLINE_S = 60.0
POLL_INTERVAL_S = 0.02
STOP_GRACE_S = 10.0
BUILD_DEADLINE_S = 3600.0

__all__ = [
    "DEFAULT_CTX",
    "DEFAULT_PARALLEL",
    "LlamaServer",
    "LlamaServerError",
    "LlamaServerFactory",
    "cached_binary_path",
    "find_llama_server_binary",
    "free_port",
    "in_ci",
    "llama_server",
    "llama_server_bin",
    "llama_server_factory",
    "llama_server_loading",
    "start_llama_server",
    "start_llama_server_stuck_loading",
    "tiny_model_path",
]


class LlamaServerError(RuntimeError):
    """llama-server could not be found, started, or did not become healthy."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def cached_binary_path() -> Path:
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (
        Path(cache_home) / "airframe" / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}" / "llama-server"
    )


def _build_binary() -> Path:
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=BUILD_DEADLINE_S,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        raise LlamaServerError(f"{BUILD_SCRIPT.name} failed (exit {proc.returncode}):\n{tail}")
    path = Path(lines[-1])
    if not os.access(path, os.X_OK):
        raise LlamaServerError(f"{BUILD_SCRIPT.name} printed {path}, which is not executable")
    return path


def find_llama_server_binary(*, build: bool | None = None) -> tuple[Path | None, str]:
    """Return ``(path, "")`` or ``(None, reason)``.

    ``build`` defaults to :func:`in_ci`. A ``LLAMA_SERVER_BIN`` that is set but unusable is an
    error, not a skip: somebody asked for that binary explicitly.
    """
    env = os.environ.get("LLAMA_SERVER_BIN", "").strip()
    if env:
        path = Path(env).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise LlamaServerError(f"LLAMA_SERVER_BIN={env} is not an executable file")
        return path, ""
    cached = cached_binary_path()
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached, ""
    if build if build is not None else in_ci():
        return _build_binary(), ""
    return None, (
        f"llama-server not found (set LLAMA_SERVER_BIN or run scripts/{BUILD_SCRIPT.name})"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LlamaServer:
    """A running llama-server process. ``stop()`` is idempotent."""

    base_url: str
    port: int
    process: subprocess.Popen[bytes]
    model_path: Path
    log_path: Path
    args: list[str]
    _log_file: IO[bytes] | None = field(repr=False, default=None)
    _before_stop: list[Callable[[], None]] = field(repr=False, default_factory=list)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def health(self, timeout: float = 2.0) -> httpx.Response:
        return httpx.get(f"{self.base_url}/health", timeout=timeout)

    def wait_ready(self, deadline_s: float = STARTUP_DEADLINE_S) -> None:
        """Poll ``/health`` until 200. 503 (loading) and refused connections are expected."""
        deadline = time.monotonic() + deadline_s
        last = "no response yet"
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise LlamaServerError(
                        f"llama-server exited with code {code} before becoming ready "
                        f"(args: {' '.join(self.args)})\n--- log tail ---\n{self.log_tail()}"
                    )
                try:
                    resp = client.get(f"{self.base_url}/health")
                except httpx.TransportError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                else:
                    if resp.status_code == 200:
                        return
                    last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if time.monotonic() > deadline:
                    raise LlamaServerError(
                        f"llama-server on port {self.port} not healthy after {deadline_s:.0f}s "
                        f"(last: {last})\n--- log tail ---\n{self.log_tail()}"
                    )
                time.sleep(POLL_INTERVAL_S)

    def stop(self) -> None:
        while self._before_stop:
            with contextlib.suppress(Exception):
                self._before_stop.pop()()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_GRACE_S)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> LlamaServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _server_args(
    binary: Path,
    model: Path,
    port: int,
    *,
    ctx: int,
    parallel: int,
    kv_unified: bool,
    extra_args: Sequence[str],
) -> list[str]:
    if kv_unified:
        # One KV pool of `ctx` cells shared by all slots (llama-server's default when -np is
        # auto): one request may use all of it, but concurrent requests compete for it and
        # running out mid-generation is an in-band SSE error ("Context size has been exceeded.").
        kv = ["-c", str(ctx), "--kv-unified"]
    else:
        # Each slot owns exactly `ctx` cells (llama-server splits -c evenly across slots), so a
        # request's context limit is `ctx` whatever other requests are doing: deterministic.
        kv = ["-c", str(ctx * parallel), "--no-kv-unified"]
    return [
        str(binary),
        "-m",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *kv,
        "-np",
        str(parallel),
        "--ignore-eos",
        "--slots",
        "--metrics",
        "--no-webui",
        "--no-warmup",
        "-t",
        "1",
        *extra_args,
    ]


def _child_env() -> dict[str, str]:
    # LLAMA_ARG_* variables from the caller's environment would silently change the server.
    return {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_ARG_")}


def _spawn(
    binary: Path,
    model: Path,
    *,
    ctx: int,
    parallel: int,
    kv_unified: bool,
    extra_args: Sequence[str],
    log_dir: Path | None,
) -> LlamaServer:
    port = free_port()
    args = _server_args(
        binary,
        model,
        port,
        ctx=ctx,
        parallel=parallel,
        kv_unified=kv_unified,
        extra_args=extra_args,
    )
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="llama-server-log-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"llama-server-{port}.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=_child_env(),
    )
    return LlamaServer(
        base_url=f"http://127.0.0.1:{port}",
        port=port,
        process=process,
        model_path=model,
        log_path=log_path,
        args=args,
        _log_file=log_file,
    )


def start_llama_server(
    binary: Path,
    model: Path,
    *,
    ctx: int = DEFAULT_CTX,
    parallel: int = DEFAULT_PARALLEL,
    kv_unified: bool = False,
    extra_args: Sequence[str] = (),
    log_dir: Path | None = None,
    wait: bool = True,
    deadline_s: float = STARTUP_DEADLINE_S,
    attempts: int = 3,
) -> LlamaServer:
    """Start llama-server on a free port; with ``wait`` block until ``/health`` is 200.

    ``ctx`` is the context size of each slot (the ``n_ctx`` a request sees); see
    ``_server_args`` for ``kv_unified``. ``extra_args`` are appended to the command line.

    A lost race for the port (another process took it between probing and binding) is retried.
    """
    for attempt in range(attempts):
        server = _spawn(
            binary,
            model,
            ctx=ctx,
            parallel=parallel,
            kv_unified=kv_unified,
            extra_args=extra_args,
            log_dir=log_dir,
        )
        if not wait:
            return server
        try:
            server.wait_ready(deadline_s)
        except LlamaServerError:
            server.stop()
            if attempt + 1 < attempts and "bind" in server.log_tail().lower():
                continue
            raise
        return server
    raise AssertionError("unreachable")


def start_llama_server_stuck_loading(
    binary: Path,
    *,
    ctx: int = DEFAULT_CTX,
    parallel: int = DEFAULT_PARALLEL,
    extra_args: Sequence[str] = (),
    log_dir: Path | None = None,
    deadline_s: float = STARTUP_DEADLINE_S,
) -> LlamaServer:
    """Start a llama-server that stays in the "loading model" state until stopped.

    The model path is a named pipe nobody writes to, so the server's HTTP listener is up (it
    starts before the model is loaded) while the loader blocks opening the model: ``/health``
    and the inference endpoints answer 503 for as long as the caller wants, deterministically.
    This server never becomes ready; ``stop()`` releases the pipe and ends the process.
    Returns once ``/health`` has answered 503 at least once. POSIX only.
    """
    if not hasattr(os, "mkfifo"):
        raise LlamaServerError("named pipes are not available on this platform")
    fifo_dir = Path(tempfile.mkdtemp(prefix="llama-server-fifo-"))
    fifo = fifo_dir / "model.gguf"
    os.mkfifo(fifo)
    server = _spawn(
        binary,
        fifo,
        ctx=ctx,
        parallel=parallel,
        kv_unified=False,
        extra_args=extra_args,
        log_dir=log_dir,
    )

    def release() -> None:
        # Make the loader fail fast so the server exits by itself instead of sitting in open()
        # through SIGTERM: open the write end (non-blocking; ENXIO if nobody is blocked on the
        # pipe right now), remove the pipe so any later open() gets ENOENT (the server opens the
        # model more than once), then close the write end so a blocked reader sees EOF.
        fd: int | None = None
        with contextlib.suppress(OSError):
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        shutil.rmtree(fifo_dir, ignore_errors=True)
        if fd is not None:
            os.close(fd)

    server._before_stop.append(release)
    deadline = time.monotonic() + deadline_s
    with httpx.Client(timeout=2.0) as client:
        while True:
            if server.process.poll() is not None:
                server.stop()
                raise LlamaServerError(
                    f"llama-server exited while it should be loading\n--- log tail ---\n"
                    f"{server.log_tail()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{server.base_url}/health").status_code == 503:
                    return server
            if time.monotonic() > deadline:
                server.stop()
                raise LlamaServerError(
                    f"llama-server never answered 503 while loading\n--- log tail ---\n"
                    f"{server.log_tail()}"
                )
            time.sleep(POLL_INTERVAL_S)


# --------------------------------------------------------------------------- pytest fixtures


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    try:
        path, reason = find_llama_server_binary()
    except LlamaServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    if path is None:
        if in_ci():
            pytest.fail(f"CI: {reason}", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tinymodel import make_tiny_gguf

    return make_tiny_gguf(tmp_path_factory.mktemp("tiny-model") / "tiny-llama.gguf")


LlamaServerFactory = Callable[..., LlamaServer]


@pytest.fixture
def llama_server_factory(
    llama_server_bin: Path,
    tiny_model_path: Path,
    tmp_path: Path,
) -> Iterator[LlamaServerFactory]:
    """``factory(model=None, *, ctx=256, parallel=4, kv_unified=False, extra_args=(), wait=True)``.

    Returns a ``LlamaServer``; with ``wait=False`` it may still be loading (call
    ``wait_ready()``). All servers are stopped at teardown.
    """
    started: list[LlamaServer] = []

    def factory(
        model: Path | None = None,
        *,
        ctx: int = DEFAULT_CTX,
        parallel: int = DEFAULT_PARALLEL,
        kv_unified: bool = False,
        extra_args: Sequence[str] = (),
        wait: bool = True,
    ) -> LlamaServer:
        server = start_llama_server(
            llama_server_bin,
            model or tiny_model_path,
            ctx=ctx,
            parallel=parallel,
            kv_unified=kv_unified,
            extra_args=extra_args,
            log_dir=tmp_path / "llama-server-logs",
            wait=wait,
        )
        started.append(server)
        return server

    yield factory
    for server in reversed(started):
        server.stop()


@pytest.fixture(scope="module")
def llama_server(
    llama_server_bin: Path,
    tiny_model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LlamaServer]:
    server = start_llama_server(
        llama_server_bin,
        tiny_model_path,
        log_dir=tmp_path_factory.mktemp("llama-server-logs"),
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def llama_server_loading(llama_server_bin: Path, tmp_path: Path) -> Iterator[LlamaServer]:
    server = start_llama_server_stuck_loading(llama_server_bin, log_dir=tmp_path / "logs")
    try:
        yield server
    finally:
        server.stop()
