"""llama-server (native and OpenAI-compatible) as the emulator speaks it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from airframe.testing import Emulator, Fault, Reply

PROMPT = "<|im_start|>user\nhello llama<|im_end|>\n<|im_start|>assistant\n"


def _url(emu: Emulator, path: str = "/completion") -> str:
    return emu.base_url("llama_server") + path


def test_completion_stream(emu: Emulator, client: httpx.Client, wire: Any) -> None:
    emu.script(Reply.text("Hi from llama"))
    with client.stream("POST", _url(emu), json={"prompt": PROMPT, "stream": True}) as response:
        assert response.headers["content-type"] == "text/event-stream"
        events = wire.parse_sse(response.read())
    assert all(event.event is None for event in events)
    chunks = [event.json() for event in events]
    assert all("[DONE]" not in event.data for event in events)
    partial = chunks[:-1]
    assert [c["content"] for c in partial] == ["Hi", " from", " llama"]
    assert all(c["stop"] is False and len(c["tokens"]) == 1 for c in partial)
    final = chunks[-1]
    assert final["stop"] is True
    assert final["content"] == ""
    assert final["stop_type"] == "eos"
    assert final["stopping_word"] == ""
    assert final["tokens_predicted"] == 3
    assert final["tokens_evaluated"] == 4
    timings = final["timings"]
    assert timings["prompt_n"] == 4
    assert timings["predicted_n"] == 3
    for name in ("prompt_ms", "predicted_ms", "predicted_per_second", "prompt_per_token_ms"):
        assert timings[name] > 0
    assert final["generation_settings"]["n_predict"] == -1


def test_completion_echoes_the_last_chatml_user_turn(emu: Emulator, client: httpx.Client) -> None:
    body = client.post(_url(emu), json={"prompt": PROMPT}).json()
    assert body["content"] == "echo: hello llama"
    assert body["stop"] is True


def test_n_predict_stops_with_limit(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.text("one two three four"))
    body = client.post(_url(emu), json={"prompt": "count", "n_predict": 2}).json()
    assert (body["content"], body["stop_type"], body["tokens_predicted"]) == ("one two", "limit", 2)


def test_token_prompt_and_tokenizer_round_trip(emu: Emulator, client: httpx.Client) -> None:
    tokens = client.post(_url(emu, "/tokenize"), json={"content": "hello big world"}).json()[
        "tokens"
    ]
    assert len(tokens) == 3
    assert all(isinstance(t, int) for t in tokens)
    text = client.post(_url(emu, "/detokenize"), json={"tokens": tokens}).json()["content"]
    assert text == "hello big world"
    pieces = client.post(
        _url(emu, "/tokenize"),
        json={"content": "hello big", "with_pieces": True, "add_special": True},
    ).json()["tokens"]
    assert [p["piece"] for p in pieces] == ["", "hello", " big"]
    body = client.post(_url(emu), json={"prompt": tokens}).json()
    assert body["tokens_evaluated"] == 3
    assert body["content"] == "echo: hello big world"


def test_apply_template(emu: Emulator, client: httpx.Client) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prompt = client.post(_url(emu, "/apply-template"), json={"messages": messages}).json()["prompt"]
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_health_and_loading(emu: Emulator, client: httpx.Client) -> None:
    assert client.get(_url(emu, "/health")).json() == {"status": "ok"}
    emu.loading = True
    for path in ("/health", "/v1/health", "/props"):
        loading = client.get(_url(emu, path))
        assert loading.status_code == 503
        assert loading.json() == {
            "error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}
        }
    assert client.post(_url(emu), json={"prompt": "x"}).status_code == 503
    emu.loading = False
    assert client.get(_url(emu, "/health")).status_code == 200


def test_props_and_slots(emu: Emulator, client: httpx.Client) -> None:
    props = client.get(_url(emu, "/props")).json()
    assert props["default_generation_settings"]["n_ctx"] == 4096
    assert props["model_path"].endswith(".gguf")
    assert "<|im_start|>" in props["chat_template"]
    assert props["total_slots"] == 1
    (slot,) = client.get(_url(emu, "/slots")).json()
    assert slot["id"] == 0
    assert slot["n_ctx"] == 4096


def test_context_window_error(client: httpx.Client) -> None:
    with Emulator(context_window=3) as emu:
        response = client.post(_url(emu), json={"prompt": "one two three four five"})
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": 400,
            "message": "request (5 tokens) exceeds the available context size (3 tokens), "
            "try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 5,
            "n_ctx": 3,
        }
    }


def test_api_key(client: httpx.Client) -> None:
    with Emulator(api_key="llama-key") as emu:
        rejected = client.post(_url(emu), json={"prompt": "x"})
        accepted = client.post(
            _url(emu), json={"prompt": "x"}, headers={"Authorization": "Bearer llama-key"}
        )
        health = client.get(_url(emu, "/health"))
        models = client.get(_url(emu, "/models"))
    assert rejected.status_code == 401
    assert rejected.json()["error"] == {
        "code": 401,
        "message": "Invalid API Key",
        "type": "authentication_error",
    }
    assert accepted.status_code == health.status_code == models.status_code == 200


@pytest.mark.parametrize(("style", "prefix"), [("data", b"data: "), ("field", b"error: ")])
def test_in_band_error_styles(
    emu: Emulator, client: httpx.Client, style: str, prefix: bytes
) -> None:
    emu.script(Fault.in_band_error(after_chunks=1, kind="server", style=style))  # type: ignore[arg-type]
    with client.stream("POST", _url(emu), json={"prompt": "a b", "stream": True}) as response:
        raw = response.read()
    last = raw.rstrip(b"\n").split(b"\n\n")[-1]
    assert last.startswith(prefix)
    assert b'"type":"server_error"' in last
    assert b'"code":500' in last


class TestOpenAICompatible:
    @pytest.fixture(autouse=True)
    def _dialect(self, emu: Emulator) -> None:
        emu.openai_dialect = "llama_server"

    def test_stream(self, emu: Emulator, client: httpx.Client, wire: Any) -> None:
        emu.script(Reply.text("hi there"))
        body = {"messages": [{"role": "user", "content": "x"}], "stream": True}
        with client.stream("POST", _url(emu, "/v1/chat/completions"), json=body) as response:
            assert response.headers["content-type"] == "text/event-stream"
            events = wire.parse_sse(response.read())
        assert events[-1].data == "[DONE]"
        chunks = [e.json() for e in events[:-1]]
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "hi there"
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["timings"]["predicted_n"] == 2
        assert chunks[0]["system_fingerprint"].startswith("b")

    def test_non_stream(self, emu: Emulator, client: httpx.Client) -> None:
        body = {"messages": [{"role": "user", "content": "x"}]}
        response = client.post(_url(emu, "/v1/chat/completions"), json=body).json()
        assert response["choices"][0]["message"] == {"role": "assistant", "content": "echo: x"}
        assert set(response["usage"]) == {"completion_tokens", "prompt_tokens", "total_tokens"}
        assert "timings" in response

    def test_errors_in_llama_shape(self, emu: Emulator, client: httpx.Client) -> None:
        emu.script(
            Fault.context_length(5000, 4096), Fault.in_band_error(0, "server", style="field")
        )
        body = {"messages": [{"role": "user", "content": "x"}]}
        error = client.post(_url(emu, "/v1/chat/completions"), json=body).json()["error"]
        assert (error["type"], error["n_prompt_tokens"], error["n_ctx"]) == (
            "exceed_context_size_error",
            5000,
            4096,
        )
        with client.stream(
            "POST", _url(emu, "/v1/chat/completions"), json={**body, "stream": True}
        ) as r:
            raw = r.read()
        assert raw.endswith(b"data: [DONE]\n\n")
        assert raw.startswith(b"error: {")

    def test_models(self, emu: Emulator, client: httpx.Client) -> None:
        body = client.get(_url(emu, "/v1/models")).json()
        assert body["object"] == "list"
        assert body["data"][0]["owned_by"] == "llamacpp"
        assert body["models"][0]["name"] == "emulator-1"
