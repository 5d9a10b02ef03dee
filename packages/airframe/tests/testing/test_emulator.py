"""The Emulator itself: lifecycle, addresses, the script, recording, connection tracking."""

from __future__ import annotations

import subprocess
import sys
import threading
import types

import httpx
import pytest

import airframe.testing
from airframe.testing import Emulator, Fault, RecordedRequest, Reply, TokenCounts


def test_public_names_match_all() -> None:
    exported = {
        name
        for name, value in vars(airframe.testing).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(airframe.testing.__all__) == exported


def test_import_does_not_load_uvicorn_and_core_does_not_import_testing() -> None:
    code = (
        "import sys, airframe\n"
        "assert 'airframe.testing' not in sys.modules, 'airframe imported airframe.testing'\n"
        "import airframe.testing\n"
        "assert 'uvicorn' not in sys.modules, 'uvicorn imported at import time'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _is_stopped(emu: Emulator) -> bool:
    return not emu.running


def test_start_returns_listening_and_stop_closes() -> None:
    assert Emulator().running is False
    emu = Emulator().start()
    try:
        assert emu.running
        assert emu.root_url.startswith("http://127.0.0.1:")
        assert httpx.get(emu.root_url + "/health").json() == {"status": "ok"}
    finally:
        emu.stop()
    assert _is_stopped(emu)
    with pytest.raises(httpx.ConnectError):
        httpx.get(emu.root_url + "/health")


def test_restart_after_stop() -> None:
    emu = Emulator()
    with emu:
        first = emu.port
    with emu:
        assert httpx.get(emu.root_url + "/").text == "Ollama is running"
    assert isinstance(first, int)


async def test_async_context_manager() -> None:
    async with Emulator() as emu, httpx.AsyncClient() as http:
        response = await http.post(
            emu.base_url("openai") + "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "ping"}]},
        )
        assert response.json()["choices"][0]["message"]["content"] == "echo: ping"
        await http.aclose()
        assert await emu.await_connections(0)


def test_base_urls(emu: Emulator) -> None:
    root = emu.root_url
    assert emu.base_url("openai") == root + "/v1"
    for kind in ("anthropic", "ollama", "llama_server", "azure_openai"):
        assert emu.base_url(kind) == root
    with pytest.raises(ValueError, match="unknown backend kind"):
        emu.base_url("bedrock")


def test_base_url_accepts_backend_kind_enum(emu: Emulator) -> None:
    from airframe import BackendKind

    assert emu.base_url(BackendKind.OPENAI) == emu.root_url + "/v1"
    assert emu.base_url(BackendKind.LLAMA_SERVER) == emu.root_url


def _ask(client: httpx.Client, emu: Emulator, text: str = "hello") -> httpx.Response:
    return client.post(
        emu.base_url("openai") + "/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": text}]},
    )


def _content(response: httpx.Response) -> str:
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


def test_script_is_fifo_then_default(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.text("one"), Reply.text("two"))
    assert emu.pending == 2
    assert _content(_ask(client, emu)) == "one"
    assert _content(_ask(client, emu)) == "two"
    assert emu.pending == 0
    assert _content(_ask(client, emu, "again")) == "echo: again"
    emu.set_default(Reply.text("default now"))
    assert _content(_ask(client, emu)) == "default now"


def test_only_inference_requests_consume_the_script(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.text("kept"))
    client.get(emu.base_url("openai") + "/models")
    client.get(emu.root_url + "/api/tags")
    client.get(emu.root_url + "/health")
    assert emu.pending == 1
    assert _content(_ask(client, emu)) == "kept"


def test_default_can_be_a_fault(emu: Emulator, client: httpx.Client) -> None:
    emu.set_default(Fault.server_error())
    assert _ask(client, emu).status_code == 500
    assert _ask(client, emu).status_code == 500


def test_responder_function_decides_from_the_request(emu: Emulator, client: httpx.Client) -> None:
    def responder(request: RecordedRequest) -> Reply | Fault:
        question = request.json["messages"][-1]["content"]
        return Fault.overloaded() if "fail" in question else Reply.text(question.upper())

    emu.set_default(responder)
    assert _content(_ask(client, emu, "shout")) == "SHOUT"
    assert _ask(client, emu, "please fail").status_code == 503


def test_failing_responder_is_reported(emu: Emulator, client: httpx.Client) -> None:
    def broken(request: RecordedRequest) -> Reply:
        raise ValueError("no idea")

    emu.script(broken)
    response = _ask(client, emu)
    assert response.status_code == 500
    assert "responder raised ValueError: no idea" in response.text


def test_script_rejects_non_behaviours(emu: Emulator) -> None:
    with pytest.raises(TypeError):
        emu.script("hello")  # type: ignore[arg-type]


def test_requests_are_recorded_in_order(emu: Emulator, client: httpx.Client) -> None:
    client.get(emu.root_url + "/api/version?verbose=1", headers={"X-Trace": "abc"})
    _ask(client, emu, "recorded")
    first, second = emu.requests
    assert (first.method, first.path, first.query) == ("GET", "/api/version", {"verbose": "1"})
    assert first.headers["x-trace"] == "abc"
    assert first.json is None
    assert first.body == b""
    assert second.method == "POST"
    assert second.path == "/v1/chat/completions"
    assert second.json["messages"][0]["content"] == "recorded"
    assert second.body.startswith(b"{")
    assert second.headers["content-type"] == "application/json"
    assert emu.last_request == second
    assert second.stream is False


def test_reset_clears_script_and_records(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.text("never"))
    _ask(client, emu)
    emu.script(Reply.text("dropped"))
    emu.reset()
    assert emu.requests == []
    assert emu.pending == 0
    assert _content(_ask(client, emu, "fresh")) == "echo: fresh"


def test_usage_defaults_follow_the_stream(emu: Emulator, client: httpx.Client) -> None:
    emu.script(Reply.text("three words here"))
    usage = _ask(client, emu, "two words").json()["usage"]
    # input: 2 words + 1 message; output: 3 streamed pieces
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (3, 3, 6)


def test_explicit_usage_is_reported(emu: Emulator, client: httpx.Client) -> None:
    emu.script(
        Reply.text("hi", usage=TokenCounts(100, 7, cache_read_tokens=40, reasoning_tokens=2))
    )
    usage = _ask(client, emu).json()["usage"]
    assert usage["prompt_tokens"] == 100
    assert usage["completion_tokens"] == 7
    assert usage["prompt_tokens_details"]["cached_tokens"] == 40
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 2


def test_open_connections_return_to_zero(emu: Emulator) -> None:
    assert emu.open_connections == 0
    with httpx.Client() as http:
        _ask(http, emu)
        _ask(http, emu)
        assert emu.open_connections == 1  # one pooled keep-alive connection
    assert emu.wait_for_connections(0)
    assert emu.open_connections == 0
    assert emu.total_connections == 1


def test_connection_released_after_early_close_of_a_stream(emu: Emulator) -> None:
    emu.script(Reply.text(" ".join(["word"] * 5000)))
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    url = emu.base_url("openai") + "/chat/completions"
    with httpx.Client() as http, http.stream("POST", url, json=body) as response:
        next(response.iter_lines())
    # closing a partially read response cannot return the connection to the pool
    assert emu.wait_for_connections(0)


def test_stop_ends_a_stalled_stream(client: httpx.Client) -> None:
    emu = Emulator().start()
    emu.script(Fault.stall(3600, after_chunks=1))
    outcome: list[BaseException | None] = []
    started = threading.Event()

    def consume() -> None:
        try:
            with httpx.stream(
                "POST",
                emu.base_url("openai") + "/chat/completions",
                json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]},
                timeout=httpx.Timeout(3600),
            ) as response:
                for _ in response.iter_raw():
                    started.set()
            outcome.append(None)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=consume)
    worker.start()
    assert started.wait(10)
    emu.stop()
    worker.join(10)
    assert not worker.is_alive()
    assert isinstance(outcome[0], httpx.RemoteProtocolError)


def test_settings_can_change_while_running(emu: Emulator, client: httpx.Client) -> None:
    emu.model = "renamed"
    assert client.get(emu.base_url("openai") + "/models").json()["data"][0]["id"] == "renamed"
    emu.api_key = "sk-new"
    assert client.get(emu.base_url("openai") + "/models").status_code == 401
    emu.api_key = None
    with pytest.raises(ValueError, match="openai_dialect"):
        emu.openai_dialect = "other"  # type: ignore[assignment]


def test_behaviours_are_frozen_values() -> None:
    reply = Reply.text("x").with_headers({"X-Should-Retry": "false"}, extra="1")
    assert reply.headers == (("x-should-retry", "false"), ("extra", "1"))
    assert Reply.text("x") == Reply.text("x")
    with pytest.raises(AttributeError):
        reply.content = "y"  # type: ignore[misc]
    fault = Fault.rate_limit(retry_after=1.5, retry_after_ms=250)
    assert dict(fault.headers) == {"retry-after": "1.5", "retry-after-ms": "250"}
    with pytest.raises(ValueError, match="at least one call"):
        Reply.tool_calls([])
