"""Incremental SSE / NDJSON decoders: spec semantics, and independence from chunk boundaries."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence

import pytest

from airframe._streams import (
    NDJSONDecoder,
    SSEDecoder,
    SSEEvent,
    StreamDecodeError,
    is_event_stream,
    is_ndjson,
)

BOM = b"\xef\xbb\xbf"


def E(data: str, event: str = "", id: str | None = None, retry: int | None = None) -> SSEEvent:
    return SSEEvent(event=event, data=data, id=id, retry=retry)


# --------------------------------------------------------------------------------------------
# Helpers: feed a stream in given chunks; enumerate chunkings.


def decode_sse(chunks: Sequence[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.flush())
    return events


def decode_ndjson(chunks: Sequence[bytes]) -> list[str]:
    decoder = NDJSONDecoder()
    lines: list[str] = []
    for chunk in chunks:
        lines.extend(decoder.feed(chunk))
    lines.extend(decoder.flush())
    return lines


def chunkings(stream: bytes) -> Iterator[list[bytes]]:
    """Whole; split in two at every offset; 1-byte chunks; seeded random chunkings."""
    yield [stream]
    for i in range(len(stream) + 1):
        yield [stream[:i], stream[i:]]
    yield [stream[i : i + 1] for i in range(len(stream))]
    rng = random.Random(len(stream))
    for _ in range(50):
        chunks, pos = [], 0
        while pos < len(stream):
            size = rng.choice((0, 1, 2, 3, 5, 8, 13, 64))
            chunks.append(stream[pos : pos + size])
            pos += size
        yield chunks


def three_way_splits(stream: bytes) -> Iterator[list[bytes]]:
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            yield [stream[:i], stream[i:j], stream[j:]]


def sse(text: str) -> bytes:
    return text.encode("utf-8")


# --------------------------------------------------------------------------------------------
# Representative streams with their expected events.


def _openai_chunk(content: str, finish: str | None = None) -> str:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
        },
        ensure_ascii=False,
    )


OPENAI_PIECES = ["Hello", ", wor", "ld! ", "naïve café ", "日本語のテキスト", " 🦜🧑‍💻", ""]
OPENAI_DATA = [_openai_chunk(p) for p in OPENAI_PIECES[:-1]] + [_openai_chunk("", "stop")]
OPENAI = sse("".join(f"data: {d}\n\n" for d in OPENAI_DATA) + "data: [DONE]\n\n")
OPENAI_EVENTS = [E(d) for d in OPENAI_DATA] + [E("[DONE]")]

ANTHROPIC_BLOCKS = [
    ("message_start", '{"type":"message_start","message":{"id":"msg_1","role":"assistant"}}'),
    ("content_block_start", '{"type":"content_block_start","index":0}'),
    ("ping", '{"type": "ping"}'),
    ("content_block_delta", '{"type":"content_block_delta","delta":{"text":"Grüße 👋"}}'),
    ("content_block_delta", '{"type":"content_block_delta","delta":{"text":" 你好"}}'),
    ("content_block_stop", '{"type":"content_block_stop","index":0}'),
    ("message_delta", '{"type":"message_delta","usage":{"output_tokens":7}}'),
    ("message_stop", '{"type":"message_stop"}'),
]
ANTHROPIC = sse("".join(f"event: {e}\ndata: {d}\n\n" for e, d in ANTHROPIC_BLOCKS))
ANTHROPIC_EVENTS = [E(d, event=e) for e, d in ANTHROPIC_BLOCKS]

SSE_CASES: dict[str, tuple[bytes, list[SSEEvent]]] = {
    "openai": (OPENAI, OPENAI_EVENTS),
    "anthropic": (ANTHROPIC, ANTHROPIC_EVENTS),
    "crlf": (OPENAI.replace(b"\n", b"\r\n"), OPENAI_EVENTS),
    "cr_only": (ANTHROPIC.replace(b"\n", b"\r"), ANTHROPIC_EVENTS),
    "bom": (BOM + ANTHROPIC, ANTHROPIC_EVENTS),
    "bom_crlf": (BOM + OPENAI.replace(b"\n", b"\r\n"), OPENAI_EVENTS),
    "mixed_line_ends": (
        b"data: a\r\n\r\ndata: b\r\rdata: c\n\ndata: d\r\n\rdata: e\r\r\n"
        b"data: f\n\r\ndata: g1\rdata: g2\r\n\n",
        [E("a"), E("b"), E("c"), E("d"), E("e"), E("f"), E("g1\ng2")],
    ),
    "multibyte": (
        sse("data: 😀😀😀\n\ndata: 中文字符\ndata: ελληνικά\n\nevent: é\ndata: 𝄞\n\n"),
        [E("😀😀😀"), E("中文字符\nελληνικά"), E("𝄞", event="é")],
    ),
    "comments_keepalives": (
        sse(
            ": OPENROUTER PROCESSING\n\n:\n\n: ping\r\n\r\n"
            "data: one\n: comment inside a block\ndata: two\n\n"
            ":keep-alive\n:keep-alive\n\ndata: three\n\n"
        ),
        [E("one\ntwo"), E("three")],
    ),
    "done_without_blank_line": (sse("data: x\n\ndata: [DONE]"), [E("x"), E("[DONE]")]),
    "done_with_single_newline": (sse("data: x\n\ndata: [DONE]\n"), [E("x"), E("[DONE]")]),
    "done_with_single_crlf": (sse("data: x\r\n\r\ndata: [DONE]\r\n"), [E("x"), E("[DONE]")]),
    "id_and_retry": (
        sse(
            "retry: 3000\nid: 1\ndata: a\n\n"
            "data: b\n\n"  # id persists, retry belongs to its block
            "id: 2\nretry: 10x\ndata: c\n\n"  # non-digit retry ignored
            "id: bad\0id\nretry: -5\ndata: d\n\n"  # id with NUL ignored; '-' is not a digit
            "retry: ３０\ndata: e\n\n"  # non-ASCII digits are not digits
            "id\ndata: f\n\n"  # a bare 'id' field resets the id to ""
            "id: 7\nretry:250\n\n"  # no data: nothing dispatched, id still updates
            "data: g\n\n"
        ),
        [
            E("a", id="1", retry=3000),
            E("b", id="1"),
            E("c", id="2"),
            E("d", id="2"),
            E("e", id="2"),
            E("f", id=""),
            E("g", id="7"),
        ],
    ),
    "llama_cpp_error": (
        sse(
            'data: {"content":"Hi"}\n\n'
            'error: {"code":500,"message":"context size exceeded","type":"server_error"}\n\n'
        ),
        [
            E('{"content":"Hi"}'),
            E(
                '{"code":500,"message":"context size exceeded","type":"server_error"}',
                event="error",
            ),
        ],
    ),
    "error_field_ignored_when_data_present": (
        sse("error: nope\ndata: real\n\nevent: x\nerror: e1\nerror: e2\n\n"),
        [E("real"), E("e1\ne2", event="error")],
    ),
    "openai_error_event": (
        sse('event: error\ndata: {"error":{"message":"overloaded"}}\n\n'),
        [E('{"error":{"message":"overloaded"}}', event="error")],
    ),
    "field_parsing": (
        sse(
            "data\n\n"  # no colon: field 'data' with empty value -> event with data ""
            "data:\ndata:\n\n"  # two empty data lines -> "\n"
            "data:no-space\n\n"
            "data:  two spaces\n\n"  # exactly one leading space is removed
            "data: a: b: c\n\n"  # only the first colon splits
            "data : ignored (field name 'data ')\n\n"
            "foo: unknown field\nbar\n\n"
            "event: only-an-event\n\n"  # no data: dropped, per spec
            "event: first\nevent: second\ndata: x\n\n"
            "data: line1\ndata\ndata: line3\n\n"
            "Data: case matters\n\n"
            "data: \ttab kept\n\n"
        ),
        [
            E(""),
            E("\n"),
            E("no-space"),
            E(" two spaces"),
            E("a: b: c"),
            E("x", event="second"),
            E("line1\n\nline3"),
            E("\ttab kept"),
        ],
    ),
    "bom_only_at_start": (
        BOM + BOM + sse("data: a\n\ndata: \ufeffb\n\n"),
        # the second BOM starts the first line, so its field is '\ufeffdata' (unknown)
        [E("\ufeffb")],
    ),
    "blank_lines_between_events": (
        sse("\n\n\r\n\rdata: a\n\n\n\n\r\n\ndata: b\n\n"),
        [E("a"), E("b")],
    ),
    "unterminated_partial_lines_at_eof": (
        sse("data: a\n\nevent: pending-without-data"),
        [E("a")],
    ),
    "nul_and_controls_in_data": (
        sse("data: a\0b\x1fc\x7f\n\n"),
        [E("a\0b\x1fc\x7f")],
    ),
}


@pytest.mark.parametrize("name", list(SSE_CASES))
def test_sse_expected_events_whole(name: str) -> None:
    stream, expected = SSE_CASES[name]
    assert decode_sse([stream]) == expected


@pytest.mark.parametrize("name", list(SSE_CASES))
def test_sse_independent_of_chunk_boundaries(name: str) -> None:
    stream, expected = SSE_CASES[name]
    for chunks in chunkings(stream):
        assert decode_sse(chunks) == expected, chunks


@pytest.mark.parametrize("name", ["mixed_line_ends", "multibyte", "done_with_single_crlf"])
def test_sse_three_way_splits(name: str) -> None:
    stream, expected = SSE_CASES[name]
    for chunks in three_way_splits(stream):
        assert decode_sse(chunks) == expected, chunks


def test_sse_events_come_out_of_the_chunk_that_completes_them() -> None:
    """No event waits for flush() or for the next chunk once its blank line has arrived."""
    stream, expected = SSE_CASES["openai"]
    for i in range(len(stream) + 1):
        decoder = SSEDecoder()
        first = decoder.feed(stream[:i])
        # events whose terminating blank line lies entirely within the first part
        assert first == expected[: stream[:i].count(b"\n\n")]
        assert first + decoder.feed(stream[i:]) == expected
        assert decoder.flush() == []


def test_sse_cr_at_chunk_end_dispatches_immediately_and_swallows_following_lf() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n\r") == [E("a")]  # CRLF split, then a bare CR: blank line
    assert decoder.feed(b"\n") == []  # LF of the CRLF blank line: not a second blank line
    assert decoder.feed(b"data: b\r\r") == [E("b")]
    assert decoder.feed(b"") == []  # an empty chunk does not forget the pending CR
    assert decoder.feed(b"\ndata: c\n\n") == [E("c")]
    assert decoder.flush() == []


def test_sse_crlf_split_does_not_dispatch_spuriously() -> None:
    # If "\r" + "\n" across chunks counted as two line ends, "x" would be dispatched on its
    # own and "y" would become a second event.
    stream = b"data: x\r\ndata: y\r\n\r\n"
    for i in range(len(stream) + 1):
        assert decode_sse([stream[:i], stream[i:]]) == [E("x\ny")]


def test_sse_flush_dispatches_pending_event_once() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.flush() == [E("[DONE]")]
    assert decoder.flush() == []


@pytest.mark.parametrize(
    "tail",
    [b"event: x", b"id: 5", b"retry: 10", b": comment", b"dat", b"data: x\n\nevent: y\n", b""],
)
def test_sse_flush_does_not_invent_events(tail: bytes) -> None:
    decoder = SSEDecoder()
    events = decoder.feed(tail)
    events += decoder.flush()
    assert events == ([E("x")] if tail.startswith(b"data: x") else [])


def test_sse_flush_resets_for_a_new_stream_keeping_last_event_id() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(BOM + b"id: 4\nretry: 900\n\n") == []
    assert decoder.flush() == []
    assert decoder.last_event_id == "4"
    assert decoder.reconnection_time == 900
    assert decoder.feed(BOM + b"data: again\n\n") == [E("again", id="4")]


def test_sse_reconnection_time_from_block_without_data() -> None:
    decoder = SSEDecoder()
    assert decoder.reconnection_time is None
    assert decoder.last_event_id is None
    assert decoder.feed(b"retry: 5000\n\nretry: nope\n\n") == []
    assert decoder.reconnection_time == 5000


def test_sse_many_data_lines_and_long_line_in_tiny_chunks() -> None:
    payload = "x" * 50_000 + "é" * 1000
    stream = sse(f"data: {payload}\ndata: end\n\n")
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for i in range(0, len(stream), 7):
        events.extend(decoder.feed(stream[i : i + 7]))
    assert events == [E(payload + "\nend")]


# --------------------------------------------------------------------------------------------
# Differential check against a literal, character-at-a-time reading of the spec


def reference_sse(stream: bytes) -> list[SSEEvent]:
    """The WHATWG algorithm done naively on the whole stream, plus our flush/error rules."""
    if stream.startswith(BOM):
        stream = stream[3:]
    text = stream.decode("utf-8")
    lines: list[str] = []
    current = ""
    i = 0
    while i < len(text):
        char = text[i]
        if char in "\r\n":
            lines.append(current)
            current = ""
            if char == "\r" and text[i + 1 : i + 2] == "\n":
                i += 1
        else:
            current += char
        i += 1
    if current:
        lines.append(current)  # flush(): an unterminated last line is still a line
    lines.append("")  # flush(): dispatch what is pending
    events: list[SSEEvent] = []
    event, data, error, retry, last_id = "", "", "", None, None
    for line in lines:
        if line == "":
            if data:
                events.append(SSEEvent(event, data[:-1], last_id, retry))
            elif error:
                events.append(SSEEvent("error", error[:-1], last_id, retry))
            event, data, error, retry = "", "", "", None
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data += value + "\n"
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and value and all(c in "0123456789" for c in value):
            retry = int(value)
        elif name == "error":
            error += value + "\n"
    return events


_TOKENS = [
    *["data: x", "data:é", "data", "data:", "data:  2", "event: e", "event:", "id: 1"],
    *["id: \0", "id", "retry: 12", "retry: x", "error: boom", ": c", ":", "foo: bar"],
    *["😀", "中", " ", "\ufeff", "data: [DONE]"],
    *["\r", "\n", "\r\n", "\r\n", "\n", "\n\n", "\r\r", "\n\r"],
]


def test_sse_matches_reference_on_random_streams() -> None:
    rng = random.Random(20240611)
    for _ in range(400):
        stream = ("\ufeff" if rng.random() < 0.2 else "") + "".join(
            rng.choice(_TOKENS) for _ in range(rng.randint(0, 30))
        )
        raw = stream.encode("utf-8")
        expected = reference_sse(raw)
        assert decode_sse([raw]) == expected, raw
        for _ in range(10):
            cuts = sorted(rng.sample(range(len(raw) + 1), min(len(raw) + 1, rng.randint(1, 6))))
            chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
            assert decode_sse(chunks) == expected, chunks


# --------------------------------------------------------------------------------------------
# Invalid UTF-8


INVALID_UTF8 = [
    (b"data: \xff\n\n", 6),
    (b"data: ok\n\ndata: \xc3\x28\n\n", 16),  # bad continuation byte
    (b"data: \xed\xa0\x80\n\n", 6),  # UTF-8-encoded surrogate
    (b"data: \xc0\xaf\n\n", 6),  # overlong
    (b"data: \xe2\x82\n\n", 6),  # truncated before the line end
    (b"data: \xe2\x82", 6),  # truncated at EOF
    (b"data: a\r\n\r\n: \x80 in a comment\r\n", 13),  # comments are decoded too
    (BOM + b"data: \xfe\n\n", 9),  # a stripped BOM still counts in the offset
    (b"\xef\xbbdata: x\n\n", 0),  # an incomplete BOM is invalid UTF-8
    (b"\xef", 0),
]


@pytest.mark.parametrize(("stream", "offset"), INVALID_UTF8)
def test_sse_invalid_utf8_raises_with_offset(stream: bytes, offset: int) -> None:
    for chunks in chunkings(stream):
        with pytest.raises(StreamDecodeError, match=f"byte offset {offset}:") as info:
            decode_sse(chunks)
        assert info.value.offset == offset
        assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("stream", "offset"), INVALID_UTF8)
def test_ndjson_invalid_utf8_raises_with_offset(stream: bytes, offset: int) -> None:
    for chunks in chunkings(stream):
        with pytest.raises(StreamDecodeError) as info:
            decode_ndjson(chunks)
        assert info.value.offset == offset


# --------------------------------------------------------------------------------------------
# NDJSON


def _ollama_line(content: str, done: bool = False) -> str:
    return json.dumps(
        {"model": "llama3", "message": {"role": "assistant", "content": content}, "done": done},
        ensure_ascii=False,
    )


OLLAMA_LINES = [_ollama_line(p) for p in ("Hi", " there ", "日本 🦙", "é")] + [
    _ollama_line("", done=True)
]
OLLAMA = sse("".join(line + "\n" for line in OLLAMA_LINES))

NDJSON_CASES: dict[str, tuple[bytes, list[str]]] = {
    "ollama": (OLLAMA, OLLAMA_LINES),
    "crlf": (OLLAMA.replace(b"\n", b"\r\n"), OLLAMA_LINES),
    "no_trailing_newline": (OLLAMA.rstrip(b"\n"), OLLAMA_LINES),
    "no_trailing_newline_crlf": (OLLAMA.replace(b"\n", b"\r\n")[:-1], OLLAMA_LINES),
    "blank_lines": (
        b'\n\n{"a": 1}\n\r\n \t \n{"b": "\xe2\x82\xac"}\n\n \n',
        ['{"a": 1}', '{"b": "€"}'],
    ),
    "bom": (BOM + OLLAMA, OLLAMA_LINES),
    "json_seq": (b'\x1e{"a":1}\n\x1e{"b":2}\n\x1e\n', ['{"a":1}', '{"b":2}']),
    "inner_whitespace_kept": (b' {"a": 1} \n', [' {"a": 1} ']),
    "lone_cr_is_not_a_line_end": (b'{"a":"x"}\r{"b":1}\n', ['{"a":"x"}\r{"b":1}']),
}


@pytest.mark.parametrize("name", list(NDJSON_CASES))
def test_ndjson_lines(name: str) -> None:
    stream, expected = NDJSON_CASES[name]
    for chunks in chunkings(stream):
        assert decode_ndjson(chunks) == expected, chunks


def test_ndjson_lines_come_out_of_the_chunk_that_completes_them() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a":') == []
    assert decoder.feed(b'1}\n{"b"') == ['{"a":1}']
    assert decoder.feed(b":2}") == []
    assert decoder.flush() == ['{"b":2}']
    assert decoder.flush() == []


# --------------------------------------------------------------------------------------------
# Content types and the event class


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("text/event-stream", True),
        ("Text/Event-Stream; charset=utf-8", True),
        ("  text/event-stream ;charset=UTF-8", True),
        ("TEXT/EVENT-STREAM", True),
        ("text/plain", False),
        ("application/json", False),
        ("text/event-streaming", False),
        ("", False),
        (None, False),
    ],
)
def test_is_event_stream(content_type: str | None, expected: bool) -> None:
    assert is_event_stream(content_type) is expected


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/x-ndjson", True),
        ("application/x-ndjson; charset=utf-8", True),
        ("Application/NDJSON", True),
        ("application/jsonl", True),
        ("application/x-jsonlines", True),
        ("application/json-seq", True),
        ("application/json", False),
        ("text/event-stream", False),
        ("text/plain", False),
        ("", False),
        (None, False),
    ],
)
def test_is_ndjson(content_type: str | None, expected: bool) -> None:
    assert is_ndjson(content_type) is expected


def test_sse_event_value_semantics() -> None:
    event = SSEEvent("ping", '{"type":"ping"}', "3", 100)
    assert event == SSEEvent(event="ping", data='{"type":"ping"}', id="3", retry=100)
    assert event != SSEEvent("ping", '{"type":"ping"}', "4", 100)
    assert event != ("ping", '{"type":"ping"}', "3", 100)
    assert repr(event) == "SSEEvent(event='ping', data='{\"type\":\"ping\"}', id='3', retry=100)"
    assert SSEEvent() == SSEEvent("", "", None, None)
    assert not hasattr(event, "__dict__")
