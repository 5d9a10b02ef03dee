"""OpenAI Chat Completions as the emulator speaks it."""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx

from airframe.testing import Emulator, Fault, Reply, TokenCounts


def _url(emu: Emulator) -> str:
    return emu.base_url("openai") + "/chat/completions"


def _body(stream: bool = False, text: str = "hello world", **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
        **extra,
    }


def _chunks(wire: Any, raw: bytes) -> list[dict[str, Any]]:
    events = wire.parse_sse(raw)
    assert events[-1].data == "[DONE]"
    assert all(event.event is None for event in events)
    return [event.json() for event in events[:-1]]


def test_non_stream_reply(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.text("Hello there"))
    response = client.post(_url(emu), json=_body())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"].startswith("req_")
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini"
    choice = body["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "Hello there",
        "refusal": None,
        "annotations": [],
    }
    assert choice["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 2


def test_stream_reply(emu: Emulator, client: httpx.Client, wire: Any) -> None:
    emu.script(Reply.text("The quick  brown fox\n"))
    with client.stream("POST", _url(emu), json=_body(stream=True)) as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        raw = response.read()
    chunks = _chunks(wire, raw)
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    tokens = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert tokens == ["The", " quick", "  brown", " fox\n"]
    assert "".join(tokens) == "The quick  brown fox\n"
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert all("usage" not in chunk for chunk in chunks)


def test_stream_include_usage(emu: Emulator, client: httpx.Client, wire: Any) -> None:
    emu.script(Reply.text("a b c"))
    body = _body(stream=True, text="one two", stream_options={"include_usage": True})
    with client.stream("POST", _url(emu), json=body) as response:
        chunks = _chunks(wire, response.read())
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[-1]["choices"] == []
    usage = chunks[-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (3, 3, 6)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_parallel_tool_calls_stream_interleaved(
    emu: Emulator, client: httpx.Client, wire: Any
) -> None:
    emu.script(
        Reply.tool_calls(
            [("get_weather", {"city": "Paris"}), ("get_time", {"timezone": "Europe/Paris"})]
        )
    )
    with client.stream("POST", _url(emu), json=_body(stream=True)) as response:
        chunks = _chunks(wire, response.read())
    assert chunks[0]["choices"][0]["delta"]["content"] is None
    fragments = [
        call
        for chunk in chunks
        for call in chunk["choices"][0]["delta"].get("tool_calls", [])
        if chunk["choices"]
    ]
    indexes = [fragment["index"] for fragment in fragments]
    assert indexes[:2] == [0, 1]
    assert any(a != b for a, b in itertools.pairwise(indexes[2:])), "not interleaved"
    calls: dict[int, dict[str, str]] = {}
    for fragment in fragments:
        call = calls.setdefault(fragment["index"], {"id": "", "name": "", "arguments": ""})
        if "id" in fragment:
            call["id"] = fragment["id"]
            call["name"] = fragment["function"]["name"]
            assert fragment["type"] == "function"
        call["arguments"] += fragment["function"]["arguments"]
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert json.loads(calls[1]["arguments"]) == {"timezone": "Europe/Paris"}
    assert calls[0]["id"] != calls[1]["id"]
    assert sum(1 for f in fragments if f["index"] == 0 and "id" not in f) > 1, "arguments not split"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_calls_non_stream(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.tool_calls([("lookup", {"q": "x"})], text="Checking."))
    message = client.post(_url(emu), json=_body()).json()["choices"][0]["message"]
    assert message["content"] == "Checking."
    (call,) = message["tool_calls"]
    assert call["type"] == "function"
    assert call["function"] == {"name": "lookup", "arguments": '{"q": "x"}'}


def test_refusal(emu: Emulator, client: httpx.Client, wire: Any) -> None:
    emu.script(Reply.refusal("I can't help with that"), Reply.refusal("No way"))
    message = client.post(_url(emu), json=_body()).json()["choices"][0]["message"]
    assert message["content"] is None
    assert message["refusal"] == "I can't help with that"
    with client.stream("POST", _url(emu), json=_body(stream=True)) as response:
        chunks = _chunks(wire, response.read())
    refusal = "".join(c["choices"][0]["delta"].get("refusal") or "" for c in chunks)
    assert refusal == "No way"


def test_reasoning_content(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.text("42", reasoning="Let me think"))
    body = client.post(_url(emu), json=_body()).json()
    assert body["choices"][0]["message"]["reasoning_content"] == "Let me think"
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3


def test_max_tokens_truncates_with_length(emu: Emulator, client: httpx.Client, wire: Any) -> None:
    emu.script(Reply.text("one two three four five"), Reply.text("one two three four five"))
    body = client.post(_url(emu), json=_body(max_tokens=2)).json()
    assert body["choices"][0]["message"]["content"] == "one two"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2
    with client.stream("POST", _url(emu), json=_body(stream=True, max_completion_tokens=3)) as r:
        chunks = _chunks(wire, r.read())
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert wire.text(wire.target("openai"), r.content) == "one two three"


def test_length_reply(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.length("cut here"))
    choice = client.post(_url(emu), json=_body()).json()["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ("cut here", "length")


def test_auth_required_when_key_set(client: httpx.Client) -> None:
    with Emulator(api_key="sk-test-123") as emu:
        missing = client.post(_url(emu), json=_body())
        wrong = client.post(_url(emu), json=_body(), headers={"Authorization": "Bearer sk-nope"})
        right = client.post(
            _url(emu), json=_body(), headers={"Authorization": "Bearer sk-test-123"}
        )
        models = client.get(emu.base_url("openai") + "/models")
    for rejected in (missing, wrong, models):
        assert rejected.status_code == 401
        error = rejected.json()["error"]
        assert error["code"] == "invalid_api_key"
        assert error["type"] == "invalid_request_error"
        assert "sk-" not in error["message"]
    assert right.status_code == 200


def test_auth_rejection_does_not_consume_the_script(client: httpx.Client) -> None:
    with Emulator(api_key="k") as emu:
        emu.script(Reply.text("kept"))
        client.post(_url(emu), json=_body())
        assert emu.pending == 1


def test_models(emu: Emulator, client: httpx.Client) -> None:
    body = client.get(emu.base_url("openai") + "/models").json()
    assert body["object"] == "list"
    assert body["data"][0]["id"] == "emulator-1"
    assert body["data"][0]["object"] == "model"


def test_error_shapes(emu: Emulator, client: httpx.Client) -> None:
    emu.script(
        Fault.rate_limit(retry_after=3),
        Fault.quota(),
        Fault.overloaded(),
        Fault.server_error(),
        Fault.context_length(5000, 4096),
        Fault.content_filter(),
        Fault.status(404),
    )
    rate = client.post(_url(emu), json=_body())
    assert rate.status_code == 429
    assert rate.headers["retry-after"] == "3"
    assert rate.json()["error"]["code"] == "rate_limit_exceeded"
    quota = client.post(_url(emu), json=_body())
    assert (quota.status_code, quota.json()["error"]["code"]) == (429, "insufficient_quota")
    assert quota.json()["error"]["type"] == "insufficient_quota"
    assert client.post(_url(emu), json=_body()).status_code == 503
    server = client.post(_url(emu), json=_body())
    assert (server.status_code, server.json()["error"]["type"]) == (500, "server_error")
    context = client.post(_url(emu), json=_body())
    error = context.json()["error"]
    assert (context.status_code, error["code"], error["param"]) == (
        400,
        "context_length_exceeded",
        "messages",
    )
    assert "maximum context length is 4096 tokens" in error["message"]
    assert "resulted in 5000 tokens" in error["message"]
    blocked = client.post(_url(emu), json=_body())
    assert (blocked.status_code, blocked.json()["error"]["code"]) == (400, "invalid_prompt")
    missing = client.post(_url(emu), json=_body())
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "model_not_found")
    assert all(
        "x-request-id" in r.headers for r in (rate, quota, server, context, blocked, missing)
    )


def test_prompt_over_the_context_window(client: httpx.Client) -> None:
    with Emulator(context_window=8) as emu:
        emu.script(Reply.text("unused"))
        response = client.post(_url(emu), json=_body(text="a b c d e f g h i j"))
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "context_length_exceeded"
        assert emu.pending == 1


def test_bad_request_bodies(emu: Emulator, client: httpx.Client) -> None:
    not_json = client.post(
        _url(emu), content=b"{oops", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400
    no_messages = client.post(_url(emu), json={"model": "m"})
    assert no_messages.status_code == 400
    assert no_messages.json()["error"]["param"] == "messages"


def test_explicit_usage_in_stream(emu: Emulator, client: httpx.Client, wire: Any) -> None:
    emu.script(Reply.text("x", usage=TokenCounts(10, 20)))
    body = _body(stream=True, stream_options={"include_usage": True})
    with client.stream("POST", _url(emu), json=body) as response:
        chunks = _chunks(wire, response.read())
    assert chunks[-1]["usage"]["prompt_tokens"] == 10
    assert chunks[-1]["usage"]["completion_tokens"] == 20
