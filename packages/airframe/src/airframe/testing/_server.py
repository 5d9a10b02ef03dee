"""uvicorn on its own thread and event loop, started and stopped from any code.

uvicorn is imported here lazily, when a server starts: importing `airframe.testing` does not
need it. The emulator drives uvicorn's HTTP/1.1 protocol (h11) on an asyncio server it owns,
instead of `uvicorn.Server`, so that start returns as soon as the socket listens and stop does
not wait for uvicorn's 100 ms ticks. It never configures logging.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import EmulatorApp

__all__ = ["ConnectionTracker", "ServerThread"]

_INSTALL_HINT = (
    "airframe.testing needs uvicorn to run the emulator: pip install 'jeeves-airframe[testing]'"
)


class ConnectionTracker:
    """Counts open TCP connections; waiters are woken whenever the count changes."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._open = 0
        self._total = 0

    def opened(self) -> None:
        with self._changed:
            self._open += 1
            self._total += 1
            self._changed.notify_all()

    def closed(self) -> None:
        with self._changed:
            self._open -= 1
            self._changed.notify_all()

    @property
    def open(self) -> int:
        with self._changed:
            return self._open

    @property
    def total(self) -> int:
        with self._changed:
            return self._total

    def wait_at_most(self, count: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._open <= count, timeout)


@functools.cache
def _protocol_class() -> type[asyncio.Protocol]:
    try:
        from uvicorn.protocols.http.h11_impl import H11Protocol
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(_INSTALL_HINT) from exc

    class TrackedH11Protocol(H11Protocol):
        """uvicorn's h11 protocol, counting connections and without access logs."""

        tracker: ConnectionTracker | None = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.access_log = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            # Headers and body go out in separate writes: without TCP_NODELAY, Nagle holds the
            # body until the client's delayed ACK (~40 ms per response on Linux).
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().connection_made(transport)
            if self.tracker is not None:
                self.tracker.opened()

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            if self.tracker is not None:
                self.tracker.closed()

    return TrackedH11Protocol


class ServerThread:
    """One listening socket served by one background thread."""

    def __init__(self, app: EmulatorApp, tracker: ConnectionTracker, host: str, port: int) -> None:
        self._app = app
        self._tracker = tracker
        self._host = host
        self._port = port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> int:
        """Listen, start serving, return the port once the socket accepts connections."""
        _protocol_class()  # fail here, on the caller's thread, when uvicorn is missing
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="airframe-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the emulator did not start in time")
        if self._error is not None:
            raise RuntimeError("the emulator failed to start") from self._error
        port: int = sock.getsockname()[1]
        return port

    def stop(self, timeout: float = 10.0) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already gone
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
        self._thread = None
        self._loop = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(loop))
        except BaseException as exc:  # reported to start() or swallowed at shutdown
            self._error = exc
            self._ready.set()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        import uvicorn
        from uvicorn.server import ServerState

        assert self._sock is not None
        self._loop = loop
        self._stop = asyncio.Event()
        shutdown = self._app.bind()
        config = uvicorn.Config(
            self._app,
            http=_protocol_class(),
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            proxy_headers=False,
            server_header=False,
            date_header=False,
        )
        config.load()
        state = ServerState()
        protocol_class = _protocol_class()
        tracker = self._tracker

        def make_protocol() -> asyncio.Protocol:
            protocol = protocol_class(  # type: ignore[call-arg]
                config=config, server_state=state, app_state={}, _loop=loop
            )
            protocol.tracker = tracker  # type: ignore[attr-defined]
            return protocol

        server = await loop.create_server(make_protocol, sock=self._sock, backlog=1024)
        self._ready.set()
        await self._stop.wait()

        # Stop accepting, wake every sleeping handler, close idle keep-alive connections.
        server.close()
        shutdown.set()
        for connection in list(state.connections):
            connection.shutdown()
        if state.tasks:
            await asyncio.wait(list(state.tasks), timeout=2.0)
        for task in list(state.tasks):
            task.cancel()
        for connection in list(state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        for _ in range(3):  # let connection_lost callbacks run before the loop closes
            await asyncio.sleep(0)
        await server.wait_closed()
