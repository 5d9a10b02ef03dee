"""Azure OpenAI as the emulator speaks it."""

from __future__ import annotations

from typing import Any

import httpx

from airframe.testing import Emulator, Fault, Reply

DEPLOYMENT = "/openai/deployments/my-gpt/chat/completions"


def _url(emu: Emulator, query: str = "?api-version=2024-10-21") -> str:
    return emu.base_url("azure_openai") + DEPLOYMENT + query


def _body(stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hello"}], "stream": stream, **extra}


def test_non_stream(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.text("Hi from Azure"))
    response = client.post(_url(emu), json=_body())
    assert response.status_code == 200
    assert response.headers["apim-request-id"] == response.headers["x-request-id"]
    assert "x-ms-region" in response.headers
    body = response.json()
    assert list(body) == sorted(body)
    assert body["model"] == "emulator-1"
    assert body["prompt_filter_results"][0]["prompt_index"] == 0
    choice = body["choices"][0]
    assert choice["message"]["content"] == "Hi from Azure"
    assert choice["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}


def test_stream_shape(emu: Emulator, client: httpx.Client, wire: Any) -> None:
    emu.script(Reply.text("one two"))
    body = _body(stream=True, stream_options={"include_usage": True})
    with client.stream("POST", _url(emu), json=body) as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        events = wire.parse_sse(response.read())
    assert events[-1].data == "[DONE]"
    chunks = [event.json() for event in events[:-1]]
    first = chunks[0]
    assert first["choices"] == []
    assert first["id"] == ""
    assert first["model"] == ""
    assert "prompt_filter_results" in first
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert [c["choices"][0]["delta"]["content"] for c in content] == ["one", " two"]
    assert all(
        c["choices"][0]["content_filter_results"]["violence"]["filtered"] is False for c in content
    )
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 2


def test_api_version_required_on_deployment_path(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.text("kept"))
    response = client.post(_url(emu, query=""), json=_body())
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "404", "message": "Resource not found"}}
    assert emu.pending == 1


def test_v1_path_without_api_version(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.text("v1 works"))
    response = client.post(emu.root_url + "/openai/v1/chat/completions", json=_body(model="my-gpt"))
    assert response.json()["choices"][0]["message"]["content"] == "v1 works"


def test_api_key_header_or_bearer(client: httpx.Client) -> None:
    with Emulator(api_key="azure-key") as emu:
        missing = client.post(_url(emu), json=_body())
        header = client.post(_url(emu), json=_body(), headers={"api-key": "azure-key"})
        bearer = client.post(_url(emu), json=_body(), headers={"Authorization": "Bearer azure-key"})
    assert missing.status_code == 401
    error = missing.json()["error"]
    assert error["code"] == "401"
    assert error["message"].startswith("Access denied due to invalid subscription key")
    assert header.status_code == bearer.status_code == 200


def test_error_shapes(emu: Emulator, client: httpx.Client) -> None:
    emu.script(
        Fault.rate_limit(retry_after=6, retry_after_ms=6000),
        Fault.content_filter(),
        Fault.status(404),
        Fault.context_length(),
    )
    rate = client.post(_url(emu), json=_body())
    assert rate.status_code == 429
    assert rate.headers["retry-after-ms"] == "6000"
    assert rate.json()["error"]["code"] == "429"
    assert "API version 2024-10-21" in rate.json()["error"]["message"]
    blocked = client.post(_url(emu), json=_body()).json()["error"]
    assert blocked["code"] == "content_filter"
    assert blocked["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert blocked["innererror"]["content_filter_result"]["violence"]["filtered"] is True
    missing = client.post(_url(emu), json=_body())
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "DeploymentNotFound")
    context = client.post(_url(emu), json=_body())
    assert context.json()["error"]["code"] == "context_length_exceeded"


def test_content_filter_finish_reason(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.text("partial answ", finish_reason="content_filter"))
    choice = client.post(_url(emu), json=_body()).json()["choices"][0]
    assert choice["finish_reason"] == "content_filter"


def test_models(emu: Emulator, client: httpx.Client) -> None:
    body = client.get(emu.root_url + "/openai/v1/models").json()
    assert body["data"][0]["id"] == "emulator-1"
