"""The shared script and fault engine: one inference request in, the scripted bytes out.

For every inference request the engine asks the endpoint to authenticate and parse it, pops the
next behaviour, resolves a reply into a `Turn`, has the endpoint render it, then sends the bytes
itself, applying token delays and the fault (stall, drop, bad events, missing terminator...).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import replace
from typing import Any

from ._behaviours import Fault, Reply, error_kind_for_status
from ._state import EmulatorState
from ._turn import Turn, build_turn
from ._wire import Frame, Request, Response
from .protocols._base import Call, ChatEndpoint, ErrorSpec

__all__ = ["Engine", "Outlet"]

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]

_BATCH = 64 * 1024
_MARK = "@@EMULATOR-INVALID-UTF8@@"
_BAD_BYTES = b"\xff\xfe"


def merge_headers(*groups: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Later groups win; names compared case-insensitively."""
    merged: dict[str, tuple[str, str]] = {}
    for group in groups:
        for name, value in group:
            merged[name.lower()] = (name.lower(), value)
    return list(merged.values())


class Outlet:
    """The response side of one request: start / write / end, sleeps that wake early on
    shutdown or client disconnect, and an abrupt close of the TCP connection."""

    def __init__(self, send: Send, receive: Receive, shutdown: asyncio.Event) -> None:
        self._send = send
        self._receive = receive
        self._shutdown = shutdown
        # uvicorn passes its RequestResponseCycle.send: the cycle knows the transport and
        # whether the client went away.
        self._cycle = getattr(send, "__self__", None)
        self._watch: asyncio.Future[Message] | None = None
        self.started = False
        self.ended = False

    @property
    def closed(self) -> bool:
        """The client disconnected or the emulator is stopping."""
        if getattr(self._cycle, "disconnected", False) is True:
            return True
        if self._watch is not None and self._watch.done():
            return True
        return self._shutdown.is_set()

    def _watcher(self) -> asyncio.Future[Message]:
        if self._watch is None:
            self._watch = asyncio.ensure_future(self._receive())
        return self._watch

    async def start(self, status: int, headers: Sequence[tuple[str, str]]) -> None:
        self.started = True
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            }
        )

    async def write(self, data: bytes) -> None:
        if data and not self.closed:
            await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, data: bytes = b"") -> None:
        self.ended = True
        if not getattr(self._cycle, "disconnected", False):
            await self._send({"type": "http.response.body", "body": data, "more_body": False})

    async def respond(self, response: Response) -> None:
        headers = merge_headers(response.headers, [("content-length", str(len(response.body)))])
        await self.start(response.status, headers)
        await self.end(response.body)

    async def sleep(self, seconds: float) -> bool:
        """Wait `seconds`; False when woken early by shutdown or the client going away."""
        if self.closed:
            return False
        if seconds <= 0:
            return True
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self._shutdown.wait())
        watcher: asyncio.Future[Any] = self._watcher()
        try:
            done, _ = await asyncio.wait(
                {stopping, watcher},
                timeout=seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stopping.cancel()
        return not done

    async def abort(self) -> None:
        """Close the TCP connection now (whatever was written is flushed first, then FIN):
        the client sees the body end without its terminator or full length."""
        transport = getattr(self._cycle, "transport", None)
        if transport is None or not isinstance(transport, asyncio.BaseTransport):
            raise ConnectionAbortedError("emulator dropped the connection")
        transport.close()
        # Let uvicorn notice the disconnect so it does not complain about an unfinished response.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._watcher()), timeout=2.0)
        self.ended = True

    def close(self) -> None:
        if self._watch is not None and not self._watch.done():
            self._watch.cancel()


class _Emitter:
    """Writes stream events, batching them when no delay applies."""

    def __init__(self, state: EmulatorState, out: Outlet) -> None:
        self._state = state
        self._out = out
        self._first = True

    async def frames(self, frames: Sequence[Frame]) -> bool:
        out = self._out
        buffer = bytearray()
        for frame in frames:
            if frame.token:
                delay = self._state.first_token_delay if self._first else self._state.token_delay
                self._first = False
                if delay > 0:
                    if buffer:
                        await out.write(bytes(buffer))
                        buffer.clear()
                    if not await out.sleep(delay):
                        return False
            buffer += frame.data
            if len(buffer) >= _BATCH:
                await out.write(bytes(buffer))
                buffer.clear()
                if out.closed:
                    return False
        if buffer:
            await out.write(bytes(buffer))
        return not out.closed

    async def raw(self, chunks: Sequence[bytes]) -> bool:
        await self._out.write(b"".join(chunks))
        return not self._out.closed


class Engine:
    """Runs the script for inference endpoints."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def handler(self, endpoint: ChatEndpoint) -> Callable[[Request, Outlet], Awaitable[None]]:
        async def serve(request: Request, out: Outlet) -> None:
            await self.serve(endpoint, request, out)

        return serve

    async def serve(self, endpoint: ChatEndpoint, request: Request, out: Outlet) -> None:
        prepared = endpoint.prepare(request)
        if isinstance(prepared, Response):
            await out.respond(prepared)
            return
        call = prepared
        base = endpoint.headers(call)
        if call.prompt.tokens > self.state.context_window:
            error = endpoint.error(call, request, endpoint.context_error(call))
            await out.respond(error.with_headers(base))
            return

        try:
            behaviour = self.state.next_behaviour(request.recorded())
        except Exception as exc:  # a user responder failed: say so instead of a bare 500
            message = f"airframe.testing: the responder raised {type(exc).__name__}: {exc}"
            await out.respond(
                Response(500, [("content-type", "text/plain; charset=utf-8")], message.encode())
            )
            return
        if isinstance(behaviour, Reply):
            reply, fault = behaviour, None
            headers = merge_headers(base, reply.headers)
        else:
            fault = behaviour
            reply = fault.reply or self.state.default_reply()
            headers = merge_headers(base, fault.reply.headers if fault.reply else (), fault.headers)

        if fault is not None and (
            fault.kind == "status" or (fault.kind == "in_band_error" and not call.stream)
        ):
            await out.respond(self._error(endpoint, call, request, fault).with_headers(headers))
            return
        if fault is not None and fault.kind == "html_200":
            await out.respond(
                Response(200, merge_headers(headers, [("content-type", _HTML_TYPE)]), _HTML)
            )
            return

        turn = build_turn(reply, call.prompt)
        if call.stream and not (fault is not None and fault.kind == "json_200_for_stream"):
            await self._stream(endpoint, call, out, turn, fault, headers)
        else:
            await self._body(endpoint, call, out, turn, fault, headers)

    # -- errors --------------------------------------------------------------------------------

    def _error(
        self, endpoint: ChatEndpoint, call: Call, request: Request, fault: Fault
    ) -> Response:
        kind = fault.error or error_kind_for_status(fault.status_code or 500)
        status = fault.status_code or endpoint.status_for(kind)
        if fault.body is not None:
            content_type = fault.content_type or endpoint.json_content_type
            return Response(status, [("content-type", content_type)], fault.body)
        n_ctx = fault.n_ctx or self.state.context_window
        prompt_tokens = fault.prompt_tokens or max(call.prompt.tokens, n_ctx + 1)
        spec = ErrorSpec(kind, status, prompt_tokens, n_ctx)
        return endpoint.error(call, request, spec)

    # -- non-streamed --------------------------------------------------------------------------

    async def _body(
        self,
        endpoint: ChatEndpoint,
        call: Call,
        out: Outlet,
        turn: Turn,
        fault: Fault | None,
        headers: list[tuple[str, str]],
    ) -> None:
        kind = fault.kind if fault else None
        if kind == "malformed_chunk":
            body = b"{not json"
        elif kind == "invalid_utf8":
            marked = replace(turn, text=[_MARK, *turn.text], refusal=[_MARK, *turn.refusal])
            body = endpoint.body(call, marked).replace(_MARK.encode(), _BAD_BYTES)
        else:
            body = endpoint.body(call, turn)
        all_headers = merge_headers(
            [("content-type", endpoint.json_content_type)],
            headers,
            [("content-length", str(len(body)))],
        )
        stall = fault.seconds if fault is not None and kind == "stall" else None
        if stall is not None and fault is not None and fault.after_chunks is None:
            if not await out.sleep(stall):
                await out.abort()
                return
            stall = None
        await out.start(200, all_headers)
        if stall is not None and not await out.sleep(stall):
            await out.abort()
            return
        if fault is not None and kind == "drop":
            if fault.after_chunks:
                await out.write(body[: len(body) // 2])
            await out.abort()
            return
        await out.end(body)

    # -- streamed ------------------------------------------------------------------------------

    async def _stream(
        self,
        endpoint: ChatEndpoint,
        call: Call,
        out: Outlet,
        turn: Turn,
        fault: Fault | None,
        headers: list[tuple[str, str]],
    ) -> None:
        plan = endpoint.stream(call, turn)
        kind = fault.kind if fault else None
        stall = fault.seconds if fault is not None and kind == "stall" else None
        if stall is not None and fault is not None and fault.after_chunks is None:
            if not await out.sleep(stall):
                await out.abort()
                return
            stall = None
        await out.start(200, merge_headers([("content-type", plan.content_type)], headers))

        emit = _Emitter(self.state, out)
        frames = plan.frames
        cut = len(frames)
        if fault is not None and fault.after_chunks is not None:
            cut = min(max(fault.after_chunks, 0), len(frames))
        if not await emit.frames(frames[:cut]):
            await self._gone(out)
            return

        if fault is not None and kind == "drop":
            await out.abort()
            return
        if fault is not None and kind == "in_band_error":
            spec = ErrorSpec(
                fault.error or "overloaded",
                None,
                fault.prompt_tokens or max(call.prompt.tokens, self.state.context_window + 1),
                fault.n_ctx or self.state.context_window,
            )
            await emit.raw(endpoint.in_band(call, spec, fault.style))
            await out.end()
            return
        if stall is not None and not await out.sleep(stall):
            await out.abort()
            return
        if kind == "malformed_chunk":
            await emit.raw([endpoint.malformed_frame(call)])
        if kind == "invalid_utf8":
            await emit.raw([endpoint.token_frame(call, _MARK).replace(_MARK.encode(), _BAD_BYTES)])

        if not await emit.frames(frames[cut:]):
            await self._gone(out)
            return
        if kind != "no_terminator":
            await emit.raw(plan.terminator)
        await out.end()

    async def _gone(self, out: Outlet) -> None:
        """The client left or the emulator is stopping: make sure the connection is closed."""
        if not out.ended:
            await out.abort()


_HTML_TYPE = "text/html; charset=utf-8"
_HTML = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in to continue</title></head>\n"
    b"<body><h1>Network login required</h1>"
    b"<p>This network requires you to sign in before using the Internet.</p></body></html>\n"
)
