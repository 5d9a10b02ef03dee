"""The only code that sends bytes: requests, retries, timeouts, stream decoding, error mapping.

Adapters hand in a `WireRequest` and get back parsed results or stream events. httpx exceptions
are translated to the airframe taxonomy here and nowhere else (`_map_httpx_error`).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx

from ._config import EndpointSpec
from ._errors import (
    AirframeError,
    ConnectionError,
    ContextLengthError,
    InterruptedError,
    ProtocolError,
    TimeoutError,
    error_class,
)
from ._hooks import AttemptInfo, TransportHooks
from ._pool import get_client
from ._retry import parse_retry_after, retry_delay
from ._streams import NDJSONDecoder, SSEDecoder, StreamDecodeError, is_event_stream, is_ndjson
from ._types import InferenceResult, InferenceStreamEvent, StreamEventType

if TYPE_CHECKING:
    from .adapters._base import BackendAdapter, StreamParser, WireRequest

__all__ = ["http_error", "inband_error", "probe", "send_json", "stream_events"]

logger = logging.getLogger("airframe")

_MAX_ERROR_BODY = 64 * 1024
_DRAIN_SECONDS = 0.5
_PARSE_ERRORS = (ValueError, KeyError, TypeError, AttributeError, IndexError)


class _Prepared:
    """Per-endpoint values computed once: pooled-client key, headers, httpx timeout."""

    __slots__ = ("endpoint", "headers", "timeout")

    def __init__(self, adapter: BackendAdapter, endpoint: EndpointSpec) -> None:
        t = endpoint.timeouts
        self.endpoint = endpoint
        self.timeout = httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool)
        headers = {"accept": "application/json", "user-agent": "airframe"}
        # Lower-cased keys so a user's `User-Agent` replaces the default instead of doubling it.
        headers.update((k.lower(), v) for k, v in endpoint.headers.items())
        headers.update((k.lower(), v) for k, v in adapter.auth_headers(endpoint).items())
        self.headers = headers


_prepared: dict[tuple[int, int], _Prepared] = {}


def _prepare(adapter: BackendAdapter, endpoint: EndpointSpec) -> _Prepared:
    key = (id(adapter), id(endpoint))
    found = _prepared.get(key)
    if found is not None and found.endpoint is endpoint:
        return found
    if len(_prepared) > 512:
        _prepared.clear()
    found = _prepared[key] = _Prepared(adapter, endpoint)
    return found


def _build(
    adapter: BackendAdapter, endpoint: EndpointSpec, wire: WireRequest
) -> tuple[httpx.AsyncClient, httpx.Request, float | None]:
    prep = _prepare(adapter, endpoint)
    headers = prep.headers if wire.headers is None else {**prep.headers, **wire.headers}
    client = get_client(endpoint.base_url)
    request = client.build_request(
        wire.method,
        endpoint.base_url + wire.path,
        json=wire.json,
        params=wire.params,
        headers=headers,
        timeout=prep.timeout,
    )
    total = endpoint.timeouts.total
    return client, request, None if total is None else time.monotonic() + total


_CREDENTIAL_HEADERS = ("authorization", "api-key", "x-api-key", "proxy-authorization")


def _secrets(endpoint: EndpointSpec) -> list[str]:
    """Every credential string of an endpoint: the key, and secret header values and tokens."""
    found = [endpoint.api_key] if endpoint.api_key else []
    for name, value in endpoint.headers.items():
        if name.lower() in _CREDENTIAL_HEADERS and value:
            found.append(value)
    for value in list(found):
        scheme, _, token = value.partition(" ")
        if token and scheme.lower() in ("bearer", "basic"):
            found.append(token)
    return [s for s in found if len(s) >= 4]


def _scrub(text: str, endpoint: EndpointSpec) -> str:
    """`text` with every credential of `endpoint` replaced (error bodies may echo them)."""
    for secret in _secrets(endpoint):
        if secret in text:
            text = text.replace(secret, "[REDACTED]")
    return text


def _fill(error: AirframeError, adapter: BackendAdapter, endpoint: EndpointSpec) -> AirframeError:
    if error.backend is None:
        error.backend = str(adapter.kind)
    if error.endpoint is None:
        error.endpoint = endpoint.name
    return error


def _request_id(adapter: BackendAdapter, headers: httpx.Headers) -> str | None:
    for name in adapter.request_id_headers:
        value: str | None = headers.get(name)
        if value:
            return value
    return None


def http_error(
    adapter: BackendAdapter,
    endpoint: EndpointSpec,
    status: int | None,
    headers: httpx.Headers | None,
    body: bytes,
) -> AirframeError:
    """The typed error for an error response (or an unexpected body)."""
    text = _scrub(body[:_MAX_ERROR_BODY].decode("utf-8", "replace"), endpoint)
    payload: Any = None
    if text.lstrip().startswith(("{", "[")):
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
    info = adapter.classify_error(status, payload, text)
    cls = error_class(info.category)
    kwargs: dict[str, Any] = {
        "status_code": status,
        "backend": str(adapter.kind),
        "endpoint": endpoint.name,
        "request_id": _request_id(adapter, headers) if headers is not None else None,
        "retry_after": parse_retry_after(headers) if headers is not None else None,
        "body": payload if payload is not None else text[:2000],
    }
    message = _scrub(info.message, endpoint)
    if cls is ContextLengthError:
        return ContextLengthError(
            message,
            prompt_tokens=info.prompt_tokens,
            context_window=info.context_window,
            **kwargs,
        )
    return cls(message, **kwargs)


def inband_error(
    adapter: BackendAdapter, endpoint: EndpointSpec, payload: Any, text: str = ""
) -> AirframeError:
    """The typed error for an error event inside a 200 stream; status is the event's own code."""
    body = text.encode() if text else json.dumps(payload).encode()
    error = http_error(adapter, endpoint, None, None, body)
    if isinstance(payload, dict):
        error.status_code = _inband_status(payload)
    return error


def _map_httpx_error(
    exc: Exception, adapter: BackendAdapter, endpoint: EndpointSpec
) -> AirframeError:
    """Translate a foreign exception into the taxonomy (the one place that does it)."""
    where: dict[str, Any] = {"backend": str(adapter.kind), "endpoint": endpoint.name}
    if isinstance(exc, AirframeError):
        return _fill(exc, adapter, endpoint)
    if isinstance(exc, httpx.TimeoutException):
        phase = type(exc).__name__.replace("Timeout", "").lower() or "read"
        return TimeoutError(f"{phase} timed out", **where)
    if isinstance(exc, builtins.TimeoutError):
        return TimeoutError(str(exc) or "deadline exceeded", **where)
    if isinstance(exc, StreamDecodeError):
        return ProtocolError(f"undecodable stream: {exc}", **where)
    if isinstance(exc, httpx.DecodingError):
        return ProtocolError(f"undecodable body: {exc}", **where)
    if isinstance(exc, httpx.RemoteProtocolError):
        return ConnectionError(f"connection broken: {exc}", **where)
    if isinstance(exc, httpx.TransportError):
        return ConnectionError(f"cannot reach {endpoint.name}: {exc}", **where)
    if isinstance(exc, _PARSE_ERRORS):
        return ProtocolError(f"malformed response: {type(exc).__name__}: {exc}", **where)
    raise exc


async def _wait_retry(
    error: AirframeError,
    headers: httpx.Headers | None,
    retries_done: int,
    endpoint: EndpointSpec,
    deadline: float | None,
    info: AttemptInfo,
    hooks: TransportHooks | None,
) -> bool:
    """Sleep before the next attempt when the rules allow one; False means surface `error`."""
    flag = headers.get("x-should-retry") if headers is not None else None
    delay = retry_delay(error, flag, retries_done, endpoint.retry)
    if delay is None:
        return False
    if deadline is not None and time.monotonic() + delay >= deadline:
        return False
    logger.info(
        "retrying %s %s after %s (attempt %d, waiting %.2fs)",
        info.backend,
        endpoint.name,
        error.category.value,
        info.attempt,
        delay,
    )
    if hooks is not None:
        hooks.on_retry(info, error, delay)
    await asyncio.sleep(delay)
    return True


async def send_json(
    adapter: BackendAdapter,
    endpoint: EndpointSpec,
    wire: WireRequest,
    *,
    hooks: TransportHooks | None,
    parse: Callable[[EndpointSpec, Any], Any] | None = None,
) -> Any:
    """Send a request and return its JSON body (parsed by `parse` when given), with retries."""
    attempt = 0
    deadline: float | None = None
    while True:
        attempt += 1
        client, request, attempt_deadline = _build(adapter, endpoint, wire)
        if deadline is None:
            deadline = attempt_deadline
        info = AttemptInfo(
            attempt, str(adapter.kind), endpoint.name, wire.method, str(request.url), False
        )
        if hooks is not None:
            hooks.on_attempt_start(info)
        headers: httpx.Headers | None = None
        try:
            if deadline is None:
                response = await client.send(request)
            else:
                async with asyncio.timeout_at(_loop_deadline(deadline)):
                    response = await client.send(request)
            headers = response.headers
            if hooks is not None:
                hooks.on_response_headers(info, response.status_code, headers)
            if response.status_code >= 400:
                raise http_error(adapter, endpoint, response.status_code, headers, response.content)
            body = response.content
            if not _looks_json(response):
                raise _unexpected_body(adapter, endpoint, response, body, "application/json")
            payload = json.loads(body)
            result = parse(endpoint, payload) if parse is not None else payload
        except Exception as exc:
            error = _map_httpx_error(exc, adapter, endpoint)
            if error.request_id is None and headers is not None:
                error.request_id = _request_id(adapter, headers)
            if hooks is not None:
                hooks.on_attempt_error(info, error)
            if await _wait_retry(error, headers, attempt - 1, endpoint, deadline, info, hooks):
                continue
            if error is exc:
                raise
            raise error from exc
        if hooks is not None:
            hooks.on_attempt_end(info, result if isinstance(result, InferenceResult) else None)
        return result


def _loop_deadline(deadline: float) -> float:
    # time.monotonic() and the loop clock are both CLOCK_MONOTONIC-based but may differ in origin.
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


def _looks_json(response: httpx.Response) -> bool:
    ctype = response.headers.get("content-type", "")
    return not ctype or "json" in ctype.lower()


def _unexpected_body(
    adapter: BackendAdapter,
    endpoint: EndpointSpec,
    response: httpx.Response,
    body: bytes,
    expected: str,
) -> AirframeError:
    """A 200 whose body is not what the call expects: an in-band error, or a protocol error."""
    ctype = response.headers.get("content-type", "") or "no content type"
    if "json" in ctype.lower():
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and "error" in payload:
            err = inband_error(adapter, endpoint, payload)
            err.request_id = _request_id(adapter, response.headers)
            return err
    snippet = " ".join(body[:200].decode("utf-8", "replace").split())
    return ProtocolError(
        f"expected {expected} but got {ctype} (HTTP {response.status_code}): {snippet!r}",
        status_code=response.status_code,
        backend=str(adapter.kind),
        endpoint=endpoint.name,
        request_id=_request_id(adapter, response.headers),
    )


def _inband_status(payload: dict[str, Any]) -> int | None:
    err = payload.get("error", payload)
    code = err.get("code") if isinstance(err, dict) else None
    return code if isinstance(code, int) else None


async def probe(
    adapter: BackendAdapter, endpoint: EndpointSpec, wire: WireRequest
) -> tuple[int, Any]:
    """One attempt, no retries, any status: (status, JSON body or None). For health checks."""
    client, request, _ = _build(adapter, endpoint, wire)
    try:
        response = await client.send(request)
    except Exception as exc:
        raise _map_httpx_error(exc, adapter, endpoint) from exc
    try:
        payload: Any = response.json()
    except ValueError:
        payload = None
    return response.status_code, payload


async def stream_events(
    adapter: BackendAdapter,
    endpoint: EndpointSpec,
    wire: WireRequest,
    new_parser: Callable[[], StreamParser],
    hooks: TransportHooks | None,
) -> AsyncGenerator[InferenceStreamEvent, None]:
    """Stream one request's events, retrying only while nothing has reached the caller.

    After the first yielded event any failure raises `InterruptedError` carrying `partial` (what
    arrived) with the original typed error as `__cause__`. A stream that ends without its
    terminator raises `ProtocolError`. Closing the generator closes the response.
    """
    ndjson = adapter.stream_format == "ndjson"
    first_token = endpoint.timeouts.first_token
    attempt = 0
    deadline: float | None = None
    while True:
        attempt += 1
        parser = new_parser()
        client, request, attempt_deadline = _build(adapter, endpoint, wire)
        if deadline is None:
            deadline = attempt_deadline
        info = AttemptInfo(
            attempt, str(adapter.kind), endpoint.name, wire.method, str(request.url), True
        )
        if hooks is not None:
            hooks.on_attempt_start(info)
        response: httpx.Response | None = None
        headers: httpx.Headers | None = None
        yielded = False
        try:
            first_deadline = None if first_token is None else time.monotonic() + first_token
            limit = _min(deadline, first_deadline)
            if limit is None:
                response = await client.send(request, stream=True)
            else:
                async with asyncio.timeout_at(_loop_deadline(limit)):
                    response = await client.send(request, stream=True)
            headers = response.headers
            if hooks is not None:
                hooks.on_response_headers(info, response.status_code, headers)
            if response.status_code >= 400:
                body = await _read_bounded(response)
                raise http_error(adapter, endpoint, response.status_code, headers, body)
            ctype = headers.get("content-type")
            if not (is_ndjson(ctype) if ndjson else is_event_stream(ctype)):
                body = await _read_bounded(response)
                expected = "application/x-ndjson" if ndjson else "text/event-stream"
                raise _unexpected_body(adapter, endpoint, response, body, expected)
            decoder: SSEDecoder | NDJSONDecoder = NDJSONDecoder() if ndjson else SSEDecoder()
            feed = parser.feed
            chunks = response.aiter_bytes()
            while True:
                limit = _min(deadline, None if yielded else first_deadline)
                if limit is None:
                    chunk = await anext(chunks, None)
                else:
                    async with asyncio.timeout_at(_loop_deadline(limit)):
                        chunk = await anext(chunks, None)
                for item in decoder.feed(chunk) if chunk is not None else decoder.flush():
                    for event in feed(item):
                        if not yielded:
                            yielded = True
                            if hooks is not None:
                                hooks.on_first_token(info)
                        yield event
                    if parser.done:
                        break
                if parser.done or chunk is None:
                    break
            if not parser.done:
                raise ProtocolError(
                    "stream ended without its terminator (truncated response)",
                    backend=str(adapter.kind),
                    endpoint=endpoint.name,
                    request_id=_request_id(adapter, headers),
                )
            result = parser.result()
            if chunk is not None:
                await _drain(chunks)
        except Exception as exc:
            error = _map_httpx_error(exc, adapter, endpoint)
            if error.request_id is None and headers is not None:
                error.request_id = _request_id(adapter, headers)
            if hooks is not None:
                hooks.on_attempt_error(info, error)
            if yielded:
                partial = parser.result()
                error.partial = partial
                raise InterruptedError(
                    f"stream interrupted after output began: {error.message}",
                    status_code=error.status_code,
                    backend=error.backend,
                    endpoint=error.endpoint,
                    request_id=error.request_id,
                    partial=partial,
                ) from error
            if await _wait_retry(error, headers, attempt - 1, endpoint, deadline, info, hooks):
                continue
            if error.partial is None and error.category.value == "protocol":
                error.partial = parser.result()
            if error is exc:
                raise
            raise error from exc
        finally:
            if response is not None:
                await response.aclose()
        if hooks is not None:
            hooks.on_attempt_end(info, result)
        yield InferenceStreamEvent(StreamEventType.MESSAGE, result=result)
        return


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what follows the terminator so the connection can go back to the pool.

    Bounded in bytes and time, and never fails the call: the answer is complete already. When
    the server keeps the body open, the response is closed instead (the connection is dropped).
    """
    seen = 0
    try:
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for chunk in chunks:
                seen += len(chunk)
                if seen > _MAX_ERROR_BODY:
                    return
    except Exception:
        return


def _min(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


async def _read_bounded(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= _MAX_ERROR_BODY:
            break
    return bytes(body)
