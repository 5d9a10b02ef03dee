"""Smoke tests of a real llama-server (built from source) serving the tiny random model.

Plain httpx, no airframe code: these pin down the server behaviour the adapters rely on.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest
from llama_server_fixture import DEFAULT_CTX, LlamaServer, LlamaServerFactory

pytestmark = pytest.mark.llama_server

N_PREDICT = 7


@pytest.fixture
def client(llama_server: LlamaServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=llama_server.base_url, timeout=60.0) as c:
        yield c


def _sse_data(resp: httpx.Response) -> list[str]:
    """The ``data:`` payloads of an SSE response, in order."""
    return [line[len("data: ") :] for line in resp.iter_lines() if line.startswith("data: ")]


# llama-server closes the TCP connection after every SSE response although it answers with
# `Keep-Alive` (its chunked content provider returns false after `sink.done()`, which
# cpp-httplib treats as a cancelled write). A pooled client that reuses that connection races
# the FIN and may fail with "Server disconnected without sending a response". Sending
# `Connection: close` on stream requests keeps the connection out of the pool.
STREAM_HEADERS = {"Connection": "close"}


def _over_context_prompt() -> str:
    # The tiny model has no merge for "x", so every "x" is one token.
    return "x" * (DEFAULT_CTX + 16)


def test_health_ok(client: httpx.Client) -> None:
    resp = client.get("/health")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


def test_health_while_loading(llama_server_loading: LlamaServer) -> None:
    resp = httpx.get(f"{llama_server_loading.base_url}/health", timeout=10.0)
    assert resp.status_code == 503
    error = resp.json()["error"]
    assert error["type"] == "unavailable_error"
    assert error["code"] == 503


def test_completion_non_stream_exact_n_predict(client: httpx.Client) -> None:
    resp = client.post(
        "/completion",
        json={"prompt": "hello there", "n_predict": N_PREDICT, "temperature": 0, "seed": 1},
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["tokens_predicted"] == N_PREDICT
    assert body["stop_type"] == "limit"
    assert body["tokens_evaluated"] > 0
    assert isinstance(body["content"], str)
    assert body["timings"]["predicted_n"] == N_PREDICT


def test_completion_stream_exact_n_predict(client: httpx.Client) -> None:
    request = {"prompt": "hello", "n_predict": N_PREDICT, "temperature": 0}
    with client.stream(
        "POST", "/completion", json={**request, "stream": True}, headers=STREAM_HEADERS
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        chunks = [json.loads(d) for d in _sse_data(resp)]
    # The tiny model only generates printable ASCII, so every token is exactly one chunk.
    *partials, final = chunks
    assert len(partials) == N_PREDICT
    assert [c["tokens_predicted"] for c in partials] == list(range(1, N_PREDICT + 1))
    assert all(c["stop"] is False for c in partials)
    assert final["stop"] is True
    assert final["content"] == ""
    assert final["tokens_predicted"] == N_PREDICT
    assert final["stop_type"] == "limit"
    assert final["timings"]["predicted_n"] == N_PREDICT
    # Greedy decoding: the streamed text equals the non-streamed text.
    whole = client.post("/completion", json=request).json()["content"]
    assert "".join(c["content"] for c in partials) == whole


def test_tokenize_roundtrip(client: httpx.Client) -> None:
    resp = client.post("/tokenize", json={"content": "hello world"})
    assert resp.status_code == 200
    tokens = resp.json()["tokens"]
    assert tokens
    assert all(isinstance(t, int) for t in tokens)
    resp = client.post("/detokenize", json={"tokens": tokens})
    assert resp.status_code == 200
    assert resp.json()["content"] == "hello world"


def test_chat_completions_non_stream(client: httpx.Client) -> None:
    resp = client.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": N_PREDICT,
            "temperature": 0,
        },
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == N_PREDICT
    assert body["usage"]["prompt_tokens"] > 0


def test_chat_completions_stream_with_usage(client: httpx.Client) -> None:
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": N_PREDICT,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        headers=STREAM_HEADERS,
    ) as resp:
        assert resp.status_code == 200
        data = _sse_data(resp)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "length"
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert usage
    assert usage[-1]["completion_tokens"] == N_PREDICT


def test_completion_over_context_is_http_400(client: httpx.Client) -> None:
    resp = client.post("/completion", json={"prompt": _over_context_prompt(), "n_predict": 4})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "exceed_context_size_error"
    assert error["n_ctx"] == DEFAULT_CTX
    assert error["n_prompt_tokens"] > DEFAULT_CTX


def test_chat_over_context_is_http_400(client: httpx.Client) -> None:
    resp = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": _over_context_prompt()}], "max_tokens": 4},
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "exceed_context_size_error"


def test_two_servers(llama_server_factory: LlamaServerFactory) -> None:
    a = llama_server_factory()
    b = llama_server_factory()
    assert a.port != b.port
    for server in (a, b):
        resp = httpx.get(f"{server.base_url}/health", timeout=10.0)
        assert resp.status_code == 200
        assert server.process.poll() is None


def test_stream_response_closes_connection(llama_server: LlamaServer) -> None:
    """Pin the keep-alive quirk described at STREAM_HEADERS (raw socket, no pooling)."""
    body = json.dumps({"prompt": "hello", "n_predict": 2, "stream": True}).encode()
    request = (
        b"POST /completion HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    received = b""
    with socket.create_connection(("127.0.0.1", llama_server.port), timeout=30.0) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):  # ends only when the server closes the connection
            received += chunk
    head, _, payload = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Keep-Alive: timeout=5" in head  # advertised ...
    assert payload.endswith(b"\r\n0\r\n\r\n")  # ... but closed after the final chunk
