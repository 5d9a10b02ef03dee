"""The plain ASGI application: read the body, record the request, route it, answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._engine import Engine, Outlet
from ._state import EmulatorState
from ._wire import JSON, JSON_UTF8, Request, Response, json_response, text_response
from .protocols import anthropic, azure, llama_server, ollama, openai
from .protocols._base import Route

__all__ = ["EmulatorApp"]

Message = MutableMapping[str, Any]


class EmulatorApp:
    """ASGI 3 app serving every protocol from one root."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        engine = Engine(state)
        # Order matters where paths are shared: Anthropic's /v1/models (anthropic-version
        # header) and llama-server's /v1/* (openai_dialect) come before OpenAI's.
        self.routes: list[Route] = [
            *anthropic.routes(state, engine),
            *llama_server.routes(state, engine),
            *azure.routes(state, engine),
            *ollama.routes(state, engine),
            *openai.routes(state, engine),
        ]
        self._shutdown: asyncio.Event | None = None

    def bind(self) -> asyncio.Event:
        """Create the loop-bound shutdown event (call on the server's loop)."""
        self._shutdown = asyncio.Event()
        return self._shutdown

    async def __call__(
        self,
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope.get("type") != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            if message.get("type") == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        request = Request.from_scope(scope, bytes(body))
        self.state.record(request.recorded())
        shutdown = self._shutdown if self._shutdown is not None else asyncio.Event()
        out = Outlet(send, receive, shutdown)
        try:
            for candidate in self.routes:
                if candidate.matches(request):
                    await candidate.handler(request, out)
                    break
            else:
                await out.respond(_not_found(request))
        finally:
            out.close()


def _not_found(request: Request) -> Response:
    """Unknown path, in the shape of the backend that owns that part of the URL space."""
    path = request.path
    if path.startswith("/api/"):
        return text_response(404, "404 page not found")
    if path.startswith("/openai/"):
        return json_response(404, {"error": {"code": "404", "message": "Resource not found"}}, JSON)
    if path.startswith("/v1/"):
        error = {
            "message": f"Invalid URL ({request.method} {path})",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
        return json_response(404, {"error": error}, JSON)
    llama_error = {"code": 404, "message": "File Not Found", "type": "not_found_error"}
    return json_response(404, {"error": llama_error}, JSON_UTF8)
