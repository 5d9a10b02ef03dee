"""Incremental decoders for streamed response bodies: Server-Sent Events and NDJSON.

The transport feeds these the raw byte chunks of a streaming response
(``response.aiter_raw()`` / ``aiter_bytes()``), whatever their boundaries, and gets back
the events or lines each chunk completed. This is the per-chunk hot path of streaming, so
the decoders work on whole chunks: they find the last line terminator with ``bytes.rfind``,
decode every complete line of the chunk with a single ``bytes.decode`` call, and split the
text with ``str.split``. No Python code runs per byte; the only per-event object is the
slotted :class:`SSEEvent`.

Decoding a chunk's complete lines at once is exactly as correct as decoding line by line:
CR and LF are ASCII and never occur inside a multi-byte UTF-8 sequence, so a character split
across chunks is always inside the (buffered) unterminated tail and is decoded once its line
is complete. Invalid UTF-8 raises :class:`StreamDecodeError` instead of being replaced.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = [
    "NDJSONDecoder",
    "SSEDecoder",
    "SSEEvent",
    "StreamDecodeError",
    "event_json",
    "is_event_stream",
    "is_ndjson",
]

_BOM = b"\xef\xbb\xbf"

_EVENT_STREAM_TYPES = frozenset({"text/event-stream"})
# Newline-delimited JSON under its various names. application/json-seq (RFC 7464) frames each
# text as RS + JSON + LF; NDJSONDecoder drops the RS characters, so it reads it too.
_NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonl",
        "application/jsonlines",
        "application/x-jsonlines",
        "application/json-lines",
        "application/json-seq",
    }
)
# Whitespace JSON allows around a value; a line made only of it is blank.
_JSON_WS = " \t\r"


class StreamDecodeError(ValueError):
    """A streamed body is not valid UTF-8.

    ``offset`` is the position of the first offending byte, counted from the first byte of
    the stream as received (a stripped BOM counts). The transport maps this to a
    ``protocol`` error. A decoder that raised is left in an unspecified state; discard it.
    """

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"invalid UTF-8 in stream at byte offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


# The C scanner of a default decoder (what `json.loads` runs); typeshed does not declare it.
_scan_json: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def event_json(data: str) -> Any:
    """``json.loads(data)`` for one streamed event: the same value, or the same exception.

    ``json.loads`` spends as long on its wrapping (type checks, two whitespace regex matches, the
    extra-data check) as on parsing a small chunk. Events are one JSON value with nothing around
    it, so this calls the C scanner ``json.loads`` itself ends up in (a default ``JSONDecoder``'s,
    the same configuration as ``json.loads``'s own) and returns its value when the value spans
    the whole string. Anything else (leading or trailing whitespace, extra data, no value at
    all) goes through ``json.loads``, which parses it or raises exactly as before; an error
    inside the value propagates from the same scanner with the same message and position.
    """
    try:
        value, end = _scan_json(data, 0)
    except StopIteration:
        return json.loads(data)
    if end != len(data):
        return json.loads(data)
    return value


def _media_type(content_type: str | None) -> str:
    if not content_type:
        return ""
    return content_type.partition(";")[0].strip().lower()


def is_event_stream(content_type: str | None) -> bool:
    """True if a Content-Type header value is ``text/event-stream`` (any case, any params)."""
    return _media_type(content_type) in _EVENT_STREAM_TYPES


def is_ndjson(content_type: str | None) -> bool:
    """True if a Content-Type header value names newline-delimited JSON.

    Accepted (any case, parameters ignored): ``application/x-ndjson`` (Ollama),
    ``application/ndjson``, ``application/jsonl``, ``application/x-jsonl``,
    ``application/jsonlines``, ``application/x-jsonlines``, ``application/json-lines`` and
    ``application/json-seq`` (RFC 7464). Plain ``application/json`` is not NDJSON: a
    non-streamed JSON body is one document, whatever its line breaks.
    """
    return _media_type(content_type) in _NDJSON_TYPES


class SSEEvent:
    """One dispatched Server-Sent Event.

    ``event`` is ``""`` when the block had no ``event`` field (callers treat it as
    ``"message"``). ``data`` is the block's data lines joined with ``"\\n"``. ``id`` is the
    stream's last event ID at dispatch time (it persists across events, as the spec says),
    ``None`` until an ``id`` field is seen. ``retry`` is the reconnection time in ms given in
    this event's own block, else ``None``.
    """

    __slots__ = ("data", "event", "id", "retry")

    event: str
    data: str
    id: str | None
    retry: int | None

    def __init__(
        self,
        event: str = "",
        data: str = "",
        id: str | None = None,
        retry: int | None = None,
    ) -> None:
        self.event = event
        self.data = data
        self.id = id
        self.retry = retry

    def __repr__(self) -> str:
        return (
            f"SSEEvent(event={self.event!r}, data={self.data!r}, "
            f"id={self.id!r}, retry={self.retry!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SSEEvent):
            return NotImplemented
        return (
            self.event == other.event
            and self.data == other.data
            and self.id == other.id
            and self.retry == other.retry
        )


class _ByteLines:
    """Shared buffering: BOM at stream start, the unterminated tail, stream offsets."""

    __slots__ = ("_at_start", "_offset", "_pending")

    def __init__(self) -> None:
        self._pending: list[bytes] = []  # the unterminated tail; never holds CR or LF
        self._offset = 0  # stream offset of the first pending byte
        self._at_start = True  # the BOM check has not been decided yet

    def _strip_bom(self, chunk: bytes) -> bytes:
        """Handle the stream's first bytes; returns b"" while a split BOM is undecided."""
        if not chunk:
            return chunk
        head = b"".join(self._pending) + chunk if self._pending else chunk
        if len(head) < 3 and _BOM.startswith(head):
            self._pending = [head]
            return b""
        self._at_start = False
        self._pending = []
        if head.startswith(_BOM):
            self._offset += 3
            return head[3:]
        return head

    def _decode(self, block: bytes) -> str:
        """Decode complete lines (or the final tail) and advance the stream offset."""
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StreamDecodeError(self._offset + exc.start, exc.reason) from None
        self._offset += len(block)
        return text

    def _take_tail(self) -> str | None:
        """At EOF: the decoded unterminated tail, or None if there is none."""
        if not self._pending:
            return None
        tail = b"".join(self._pending)
        self._pending = []
        return self._decode(tail)

    def _restart(self) -> None:
        self._pending = []
        self._offset = 0
        self._at_start = True


class SSEDecoder(_ByteLines):
    """Incremental ``text/event-stream`` decoder (WHATWG HTML, "event stream interpretation").

    ``feed(chunk)`` returns the events the chunk completed; ``flush()`` at end of stream
    returns what is left. Following the spec:

    - One UTF-8 BOM at the very start of the stream is dropped; invalid UTF-8 raises
      :class:`StreamDecodeError` (the spec would substitute U+FFFD; a transport should not).
    - Lines end with CRLF, LF or CR. A CR ending one chunk and an LF starting the next are a
      single line end.
    - Lines starting with ``:`` (comments, keep-alives) are ignored. ``name:value`` drops one
      space after the colon; a line with no colon is a field with an empty value. Unknown
      fields are ignored. ``retry`` is used only if it is all ASCII digits; an ``id`` value
      containing NUL is ignored; ``id`` persists across events.
    - A blank line dispatches the block; a block with no ``data`` field dispatches nothing
      (an ``event``-only block is dropped).

    Deliberate differences from the spec:

    - Extension: llama.cpp servers report a mid-stream failure as an ``error: {...}`` line (a
      field named ``error``). A block with ``error`` field(s) and no ``data`` field is
      dispatched as ``SSEEvent(event="error", data=<error values joined with "\\n">)``. In a
      block that has ``data``, ``error`` is an unknown field and ignored.
    - :meth:`flush` dispatches a pending block that lacked its closing blank line (for
      example a final ``data: [DONE]`` with no newline at all) where the spec would discard
      it. An unterminated last line is processed as a line first; a pending block without
      data (or error) still yields nothing.
    """

    __slots__ = (
        "_data",
        "_errors",
        "_event",
        "_last_id",
        "_more",
        "_reconnect",
        "_retry",
        "_skip_lf",
    )

    def __init__(self) -> None:
        super().__init__()
        self._skip_lf = False  # the last complete line ended in a bare CR
        self._event = ""
        self._data: str | None = None  # first data line of the pending block
        self._more: list[str] = []  # its further data lines
        self._errors: list[str] = []
        self._retry: int | None = None
        self._last_id: str | None = None
        self._reconnect: int | None = None

    @property
    def last_event_id(self) -> str | None:
        """The stream's last event ID (``None`` if no valid ``id`` field was seen)."""
        return self._last_id

    @property
    def reconnection_time(self) -> int | None:
        """The last valid ``retry`` value in ms, even from a block that dispatched nothing."""
        return self._reconnect

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume one chunk of the body; return the events it completed."""
        if self._skip_lf:
            if not chunk:
                return []
            self._skip_lf = False
            if chunk[0] == 0x0A:  # the LF of a CRLF split across chunks
                self._offset += 1
                chunk = chunk[1:]
        if self._at_start:
            chunk = self._strip_bom(chunk)
        if not chunk:
            return []
        lf = chunk.rfind(b"\n")
        cr = chunk.rfind(b"\r")
        end = (lf if lf > cr else cr) + 1
        if not end:
            self._pending.append(chunk)
            return []
        if self._pending:
            self._pending.append(chunk[:end])
            block = b"".join(self._pending)
            self._pending = []
        else:
            block = chunk if end == len(chunk) else chunk[:end]
        if end < len(chunk):
            self._pending.append(chunk[end:])
        elif cr + 1 == end:  # the chunk ends in CR: an LF starting the next one is its pair
            self._skip_lf = True
        text = self._decode(block)
        if cr >= 0:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        lines.pop()  # text ends with a line end: the last piece is always ""
        return self._lines(lines)

    def flush(self) -> list[SSEEvent]:
        """End of stream: process an unterminated last line and dispatch a pending block.

        Afterwards the decoder is ready for a new stream (BOM handling and offsets restart);
        ``last_event_id`` and ``reconnection_time`` are kept, as an EventSource keeps them
        across reconnections. Calling it again returns ``[]``.
        """
        tail = self._take_tail()
        lines = [] if tail is None else [tail]
        lines.append("")
        events = self._lines(lines)
        self._restart()
        self._skip_lf = False
        self._event = ""
        self._data = None
        self._more = []
        self._errors = []
        self._retry = None
        return events

    def _lines(self, lines: list[str]) -> list[SSEEvent]:
        # The hot loop. State lives in locals; the first data line of a block is kept as a
        # plain string and only further ones go to a list, so the usual one-line event costs
        # no list operations.
        events: list[SSEEvent] = []
        event = self._event
        data = self._data
        more = self._more
        errors = self._errors
        retry = self._retry
        last_id = self._last_id
        for line in lines:
            if not line:  # blank line: dispatch
                if data is not None:
                    if more:
                        data = "\n".join([data, *more])
                        more.clear()
                    events.append(SSEEvent(event, data, last_id, retry))
                    data = None
                elif errors:
                    events.append(SSEEvent("error", "\n".join(errors), last_id, retry))
                if errors:
                    errors.clear()
                event = ""
                retry = None
            elif line[:6] == "data: ":  # the common case, first
                if data is None:
                    data = line[6:]
                else:
                    more.append(line[6:])
            elif line[0] == ":":  # comment / keep-alive
                pass
            else:
                colon = line.find(":")
                if colon < 0:
                    name = line
                    value = ""
                else:
                    name = line[:colon]
                    value = line[colon + 1 :]
                    if value[:1] == " ":
                        value = value[1:]
                if name == "data":
                    if data is None:
                        data = value
                    else:
                        more.append(value)
                elif name == "event":
                    event = value
                elif name == "id":
                    if "\0" not in value:
                        last_id = value
                elif name == "retry":
                    if value.isdigit() and value.isascii():
                        retry = int(value)
                        self._reconnect = retry
                elif name == "error":
                    errors.append(value)
        self._event = event
        self._data = data
        self._retry = retry
        self._last_id = last_id
        return events


class NDJSONDecoder(_ByteLines):
    """Incremental newline-delimited JSON line splitter.

    ``feed(chunk)`` returns the complete, non-blank lines the chunk finished, decoded and
    without their line end; ``flush()`` returns a final line that had no newline. Lines end
    with LF; a CR right before the LF is dropped. Lines of only spaces/tabs are skipped. A
    UTF-8 BOM at the start of the stream is dropped, and so are RS (U+001E) characters, which
    frame ``application/json-seq`` records (JSON text cannot contain a raw RS). Invalid UTF-8
    raises :class:`StreamDecodeError`. Parsing the JSON is the caller's job.
    """

    __slots__ = ()

    def feed(self, chunk: bytes) -> list[str]:
        """Consume one chunk of the body; return the lines it completed."""
        if self._at_start:
            chunk = self._strip_bom(chunk)
        end = chunk.rfind(b"\n") + 1
        if not end:
            if chunk:
                self._pending.append(chunk)
            return []
        if self._pending:
            self._pending.append(chunk[:end])
            block = b"".join(self._pending)
            self._pending = []
        else:
            block = chunk if end == len(chunk) else chunk[:end]
        if end < len(chunk):
            self._pending.append(chunk[end:])
        text = self._decode(block)
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        if "\x1e" in text:
            text = text.replace("\x1e", "")
        lines = text.split("\n")
        lines.pop()  # text ends with "\n"
        return [line for line in lines if line.strip(_JSON_WS)]

    def flush(self) -> list[str]:
        """End of stream: return the last line if it had no newline. Resets the decoder."""
        tail = self._take_tail()
        self._restart()
        if tail is None:
            return []
        tail = tail.removesuffix("\r").replace("\x1e", "")
        return [tail] if tail.strip(_JSON_WS) else []
