"""`Emulator`: the public face of the wire emulator."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

from ._app import EmulatorApp
from ._behaviours import Behaviour
from ._recording import RecordedRequest
from ._server import ConnectionTracker, ServerThread
from ._state import EmulatorState, OpenAIDialect

__all__ = ["Emulator"]

_ROOT_KINDS = frozenset({"anthropic", "ollama", "llama_server", "azure_openai"})


class Emulator:
    """A real HTTP server on loopback speaking the wire protocols of OpenAI, Azure OpenAI,
    Anthropic, Ollama and llama-server, with scripted replies and injected faults.

        with Emulator() as emu:
            emu.script(Reply.text("Hello there"), Fault.rate_limit(retry_after=0))
            base_url = emu.base_url("openai")          # http://127.0.0.1:PORT/v1

    The server runs uvicorn on a background thread with its own event loop, so it serves sync
    code, async tests and scripts alike. Settings (`token_delay`, `api_key`, `model`,
    `context_window`, `loading`, `openai_dialect`) can be changed while it runs.
    """

    def __init__(
        self,
        *,
        token_delay: float = 0.0,
        first_token_delay: float = 0.0,
        api_key: str | None = None,
        model: str = "emulator-1",
        context_window: int = 4096,
        host: str = "127.0.0.1",
        port: int = 0,
        openai_dialect: OpenAIDialect = "openai",
    ) -> None:
        self._state = EmulatorState(
            token_delay=token_delay,
            first_token_delay=first_token_delay,
            api_key=api_key,
            model=model,
            context_window=context_window,
            openai_dialect=openai_dialect,
        )
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._tracker = ConnectionTracker()
        self._server: ServerThread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Start serving; returns once the socket accepts connections."""
        if self._server is not None:
            return self
        server = ServerThread(
            EmulatorApp(self._state), self._tracker, self._host, self._requested_port
        )
        self._port = server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Stop serving: open connections are closed, stalled streams end at once."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Emulator:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- addresses -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator is not started: call start() or use `with`")
        return self._port

    @property
    def root_url(self) -> str:
        """ "http://127.0.0.1:PORT" (IPv6 hosts are bracketed)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def base_url(self, kind: Any) -> str:
        """What a user passes as `base_url` for a backend kind: OpenAI (and compatibles)
        include `/v1`; Anthropic, Ollama, llama-server and Azure are the server root.
        `kind` is a `BackendKind` or its string value."""
        name = str(getattr(kind, "value", kind))
        if name == "openai":
            return self.root_url + "/v1"
        if name in _ROOT_KINDS:
            return self.root_url
        raise ValueError(
            f"unknown backend kind {name!r}; expected one of openai, azure_openai, anthropic, "
            "ollama, llama_server"
        )

    # -- script --------------------------------------------------------------------------------

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours; each inference request takes the next one (FIFO). A behaviour is
        a `Reply`, a `Fault`, or a function of the `RecordedRequest` returning one."""
        self._state.script(behaviours)

    def set_default(self, reply: Behaviour) -> None:
        """The behaviour used when the script is empty (initially `Reply.echo()`)."""
        self._state.set_default(reply)

    @property
    def pending(self) -> int:
        """Scripted behaviours not consumed yet."""
        return self._state.pending()

    # -- records -------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order (a copy)."""
        return self._state.requests()

    @property
    def last_request(self) -> RecordedRequest:
        requests = self._state.requests()
        if not requests:
            raise LookupError("the emulator has received no request")
        return requests[-1]

    def reset(self) -> None:
        """Clear the script and the recorded requests (settings and default stay)."""
        self._state.reset()

    # -- connections ---------------------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        """TCP connections currently open to the emulator."""
        return self._tracker.open

    @property
    def total_connections(self) -> int:
        """TCP connections accepted since construction."""
        return self._tracker.total

    def wait_for_connections(self, count: int = 0, timeout: float = 5.0) -> bool:
        """Block until at most `count` connections are open; False on timeout. Closing a
        client is asynchronous on the server side: use this rather than sleeping."""
        return self._tracker.wait_at_most(count, timeout)

    async def await_connections(self, count: int = 0, *, within: float = 5.0) -> bool:
        """`wait_for_connections` for async code (does not block the event loop)."""
        return await asyncio.to_thread(self._tracker.wait_at_most, count, within)

    # -- settings ------------------------------------------------------------------------------

    @property
    def token_delay(self) -> float:
        return self._state.token_delay

    @token_delay.setter
    def token_delay(self, value: float) -> None:
        self._state.token_delay = value

    @property
    def first_token_delay(self) -> float:
        return self._state.first_token_delay

    @first_token_delay.setter
    def first_token_delay(self, value: float) -> None:
        self._state.first_token_delay = value

    @property
    def api_key(self) -> str | None:
        return self._state.api_key

    @api_key.setter
    def api_key(self, value: str | None) -> None:
        self._state.api_key = value

    @property
    def model(self) -> str:
        return self._state.model

    @model.setter
    def model(self, value: str) -> None:
        self._state.model = value

    @property
    def context_window(self) -> int:
        return self._state.context_window

    @context_window.setter
    def context_window(self, value: int) -> None:
        self._state.context_window = value

    @property
    def loading(self) -> bool:
        """When True, llama-server endpoints (health included) answer 503 "Loading model"."""
        return self._state.loading

    @loading.setter
    def loading(self, value: bool) -> None:
        self._state.loading = value

    @property
    def openai_dialect(self) -> OpenAIDialect:
        """Who answers `/v1/chat/completions` and `/v1/models`: "openai" (default) or
        "llama_server" (llama-server's OpenAI-compatible shape, errors and timings)."""
        return self._state.openai_dialect

    @openai_dialect.setter
    def openai_dialect(self, value: OpenAIDialect) -> None:
        if value not in ("openai", "llama_server"):
            raise ValueError("openai_dialect is 'openai' or 'llama_server'")
        self._state.openai_dialect = value

    def add_ollama_model(self, name: str) -> None:
        """Make `name` a locally available Ollama model (as if pulled)."""
        self._state.add_ollama_model(name)

    def __repr__(self) -> str:
        where = self.root_url if self._port is not None and self.running else "stopped"
        return f"<Emulator {where} model={self.model!r}>"
