"""Anthropic Messages as the emulator speaks it."""

from __future__ import annotations

import json
from typing import Any

import httpx

from airframe.testing import Emulator, Fault, Reply, TokenCounts

HEADERS = {"anthropic-version": "2023-06-01"}


def _url(emu: Emulator) -> str:
    return emu.base_url("anthropic") + "/v1/messages"


def _body(stream: bool = False, **extra: Any) -> dict[str, Any]:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 512,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
        "stream": stream,
    }
    return {**body, **extra}


def _events(client: httpx.Client, emu: Emulator, wire: Any, **extra: Any) -> list[Any]:
    with client.stream("POST", _url(emu), json=_body(stream=True, **extra), headers=HEADERS) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
        events = wire.parse_sse(r.read())
    for event in events:
        assert event.event == event.json()["type"]
    return list(events)


def test_non_stream(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.text("Hi!"))
    response = client.post(_url(emu), json=_body(), headers=HEADERS)
    assert response.status_code == 200
    assert response.headers["request-id"].startswith("req_")
    body = response.json()
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["id"].startswith("msg_")
    assert body["model"] == "claude-sonnet-4-5"
    assert body["content"] == [{"type": "text", "text": "Hi!"}]
    assert body["stop_reason"] == "end_turn"
    assert body["stop_sequence"] is None
    usage = body["usage"]
    # system (2 words) + user (2 words) + 2 messages
    assert usage["input_tokens"] == 6
    assert usage["output_tokens"] == 1


def test_stream_event_sequence(emu: Emulator, client: httpx.Client, wire: Any) -> None:
    emu.script(Reply.text("Hello there friend"))
    events = _events(client, emu, wire)
    kinds = [event.event for event in events]
    assert kinds == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0].json()["message"]
    assert start["content"] == []
    assert start["stop_reason"] is None
    assert set(start["usage"]) >= {
        "input_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    }
    text = "".join(e.json()["delta"]["text"] for e in events if e.event == "content_block_delta")
    assert text == "Hello there friend"
    delta = events[-2].json()
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"] == {"output_tokens": 3}
    assert events[2].data == '{"type": "ping"}'


def test_thinking_blocks(emu: Emulator, client: httpx.Client, wire: Any) -> None:
    emu.script(Reply.text("Answer.", reasoning="Step one. Step two."))
    events = _events(client, emu, wire)
    starts = [e.json() for e in events if e.event == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["thinking", "text"]
    assert [s["index"] for s in starts] == [0, 1]
    deltas = [e.json()["delta"] for e in events if e.event == "content_block_delta"]
    thinking = "".join(d["thinking"] for d in deltas if d["type"] == "thinking_delta")
    assert thinking == "Step one. Step two."
    signatures = [d for d in deltas if d["type"] == "signature_delta"]
    assert len(signatures) == 1
    assert signatures[0]["signature"]


def test_thinking_non_stream(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.text("Done", reasoning="hmm"))
    content = client.post(_url(emu), json=_body(), headers=HEADERS).json()["content"]
    assert content[0]["type"] == "thinking"
    assert content[0]["thinking"] == "hmm"
    assert content[0]["signature"]
    assert content[1] == {"type": "text", "text": "Done"}


def test_tool_use_stream(emu: Emulator, client: httpx.Client, wire: Any) -> None:
    emu.script(Reply.tool_calls([("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]))
    events = _events(client, emu, wire)
    blocks: dict[int, dict[str, Any]] = {}
    for event in events:
        payload = event.json()
        if event.event == "content_block_start":
            blocks[payload["index"]] = dict(payload["content_block"], partial="")
        elif event.event == "content_block_delta":
            assert payload["delta"]["type"] == "input_json_delta"
            blocks[payload["index"]]["partial"] += payload["delta"]["partial_json"]
    assert [b["type"] for b in blocks.values()] == ["tool_use", "tool_use"]
    assert blocks[0]["name"] == "get_weather"
    assert blocks[0]["id"].startswith("toolu_")
    assert blocks[0]["input"] == {}
    assert json.loads(blocks[0]["partial"]) == {"city": "Paris"}
    assert json.loads(blocks[1]["partial"]) == {"tz": "CET"}
    first_delta = next(e.json() for e in events if e.event == "content_block_delta")
    assert first_delta["delta"]["partial_json"] == ""
    assert events[-2].json()["delta"]["stop_reason"] == "tool_use"


def test_tool_use_non_stream(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.tool_calls([("lookup", {"q": 1})], text="Let me look."))
    body = client.post(_url(emu), json=_body(), headers=HEADERS).json()
    assert body["content"][0] == {"type": "text", "text": "Let me look."}
    assert body["content"][1]["type"] == "tool_use"
    assert body["content"][1]["input"] == {"q": 1}
    assert body["stop_reason"] == "tool_use"


def test_cache_usage_split(emu: Emulator, client: httpx.Client, wire: Any) -> None:
    counts = TokenCounts(100, 5, cache_read_tokens=60, cache_write_tokens=30)
    emu.script(Reply.text("x", usage=counts), Reply.text("x", usage=counts))
    usage = client.post(_url(emu), json=_body(), headers=HEADERS).json()["usage"]
    assert usage["input_tokens"] == 10
    assert usage["cache_read_input_tokens"] == 60
    assert usage["cache_creation_input_tokens"] == 30
    events = _events(client, emu, wire)
    assert events[0].json()["message"]["usage"]["cache_read_input_tokens"] == 60


def test_refusal_and_max_tokens(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.refusal("I won't."), Reply.text("one two three"))
    refused = client.post(_url(emu), json=_body(), headers=HEADERS).json()
    assert refused["stop_reason"] == "refusal"
    assert refused["content"] == [{"type": "text", "text": "I won't."}]
    cut = client.post(_url(emu), json=_body(max_tokens=1), headers=HEADERS).json()
    assert cut["stop_reason"] == "max_tokens"
    assert cut["content"][0]["text"] == "one"


def test_required_version_header_and_max_tokens(emu: Emulator, client: httpx.Client) -> None:
    no_version = client.post(_url(emu), json=_body())
    assert no_version.status_code == 400
    assert no_version.json()["error"] == {
        "type": "invalid_request_error",
        "message": "anthropic-version: header is required",
    }
    body = _body()
    del body["max_tokens"]
    no_max = client.post(_url(emu), json=body, headers=HEADERS)
    assert no_max.status_code == 400
    assert no_max.json()["type"] == "error"
    assert no_max.json()["error"]["message"] == "max_tokens: Field required"


def test_api_key(client: httpx.Client) -> None:
    with Emulator(api_key="sk-ant-test") as emu:
        missing = client.post(_url(emu), json=_body(), headers=HEADERS)
        wrong = client.post(_url(emu), json=_body(), headers={**HEADERS, "x-api-key": "nope"})
        right = client.post(
            _url(emu), json=_body(), headers={**HEADERS, "x-api-key": "sk-ant-test"}
        )
    assert missing.status_code == wrong.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"
    assert wrong.json()["error"]["message"] == "invalid x-api-key"
    assert right.status_code == 200


def test_error_shapes(emu: Emulator, client: httpx.Client) -> None:
    emu.script(
        Fault.overloaded(),
        Fault.rate_limit(retry_after=2),
        Fault.context_length(5000, 4096),
        Fault.quota(),
        Fault.quota(status=429),
        Fault.content_filter(),
        Fault.server_error(),
    )

    def send() -> httpx.Response:
        return client.post(_url(emu), json=_body(), headers=HEADERS)

    overloaded = send()
    assert overloaded.status_code == 529
    assert overloaded.json()["type"] == "error"
    assert overloaded.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert overloaded.json()["request_id"] == overloaded.headers["request-id"]
    rate = send()
    assert (rate.status_code, rate.headers["retry-after"]) == (429, "2")
    assert rate.json()["error"]["type"] == "rate_limit_error"
    context = send()
    assert context.status_code == 400
    assert context.json()["error"]["message"] == "prompt is too long: 5000 tokens > 4096 maximum"
    credit = send()
    assert credit.status_code == 400
    assert "credit balance is too low" in credit.json()["error"]["message"]
    credit_429 = send()
    assert credit_429.status_code == 429
    assert "credit balance" in credit_429.json()["error"]["message"]
    blocked = send()
    assert blocked.json()["error"]["message"] == "Output blocked by content filtering policy"
    server = send()
    assert (server.status_code, server.json()["error"]["type"]) == (500, "api_error")


def test_in_band_error_event(emu: Emulator, client: httpx.Client, wire: Any) -> None:
    emu.script(Fault.in_band_error(after_chunks=3, kind="overloaded", reply=Reply.text("a b c d")))
    events = _events(client, emu, wire)
    assert [e.event for e in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "error",
    ]
    assert events[-1].json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}


def test_models_and_count_tokens(emu: Emulator, client: httpx.Client) -> None:
    models = client.get(emu.root_url + "/v1/models", headers=HEADERS).json()
    assert models["data"][0]["type"] == "model"
    assert models["data"][0]["id"] == "emulator-1"
    assert models["has_more"] is False
    count = client.post(
        emu.root_url + "/v1/messages/count_tokens",
        json={"model": "m", "messages": [{"role": "user", "content": "one two three"}]},
        headers=HEADERS,
    )
    assert count.json() == {"input_tokens": 4}
