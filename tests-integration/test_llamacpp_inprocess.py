"""In-process llama.cpp (`LlamaCppProvider`, avionics' `llamacpp` extra) running the same tiny
random model as the llama-server tests, directly and through `LLMGateway`.

The binding (`llama-cpp-python`, built from the same pinned sdist as llama-server) compiles
llama.cpp, so it is not part of `uv sync`: `scripts/build_llama_cpp_python.sh` builds its wheel
once, caches it under `~/.cache/airframe/wheels/`, and installs it. These tests use the binding
when it is importable; else they install the cached wheel when there is one (`uv sync` removes
packages outside the lock file, so a `make test` after the script needs this); else, in CI,
they run the script; else they skip with a one-line reason.

No sleeps (conditions are polled with a deadline), no timing assertions.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from llama_server_fixture import REPO_ROOT, LlamaServer, LlamaServerFactory, in_ci

import airframe
from airframe import (
    BackendKind,
    BadRequestError,
    ContextLengthError,
    EndpointSpec,
    FinishReason,
    ImagePart,
    InferenceRequest,
    InferenceResult,
    InferenceStreamEvent,
    Message,
    NotFoundError,
    StreamEventType,
    ToolSpec,
)
from airframe.adapters.llama_server import LlamaServerAdapter
from avionics import AvionicsSettings, LLMGateway
from avionics.factory import LLMFactory
from avionics.providers import llamacpp as llamacpp_module
from avionics.providers.llamacpp import INSTALL_HINT, LlamaCppProvider

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build_llama_cpp_python.sh"
BUILD_DEADLINE_S = 3600.0
N_CTX = 256
LONG_N_CTX = 8192
LONG_MAX_TOKENS = 8000
DEADLINE_S = 30.0


# ------------------------------------------------------------------------------ the binding


def cached_wheel() -> Path | None:
    """The wheel `scripts/build_llama_cpp_python.sh` cached, if any."""
    env = os.environ.get("LLAMA_CPP_WHEEL", "").strip()
    if env and Path(env).is_file():
        return Path(env)
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    cache = Path(
        os.environ.get("LLAMA_CPP_WHEEL_CACHE_DIR")
        or Path(cache_home) / "airframe" / "wheels" / f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}"
    )
    found = sorted(cache.glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}-*.whl"))
    return found[0] if found else None


def ensure_binding() -> str | None:
    """None when `llama_cpp` is importable (installing the cached wheel, or in CI building it,
    first), else the one-line reason to skip."""
    if importlib.util.find_spec("llama_cpp") is not None:
        return None
    if cached_wheel() is None and not in_ci():
        return (
            "llama-cpp-python not installed (bash scripts/build_llama_cpp_python.sh compiles "
            "it once: ~6 min on 2 idle cores)"
        )
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=BUILD_DEADLINE_S,
        check=False,
        env={**os.environ, "LLAMA_CPP_PYTHON_TARGET": sys.executable},
    )
    importlib.invalidate_caches()
    if proc.returncode != 0 or importlib.util.find_spec("llama_cpp") is None:
        tail = " | ".join(proc.stderr.strip().splitlines()[-5:])
        return f"{BUILD_SCRIPT.name} failed (exit {proc.returncode}): {tail}"
    return None


@pytest.fixture(scope="session")
def llama_cpp_binding() -> None:
    reason = ensure_binding()
    if reason is not None:
        if in_ci():
            pytest.fail(f"CI: {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def provider(llama_cpp_binding: None, tiny_model_path: Path) -> Iterator[LlamaCppProvider]:
    p = LlamaCppProvider(str(tiny_model_path), name="inproc", n_ctx=N_CTX)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def long_provider(llama_cpp_binding: None, tiny_model_path: Path) -> Iterator[LlamaCppProvider]:
    p = LlamaCppProvider(str(tiny_model_path), name="inproc-long", n_ctx=LONG_N_CTX)
    try:
        yield p
    finally:
        p.close()


# -------------------------------------------------------------------------------- helpers


def greedy(prompt: str, max_tokens: int, **kwargs: Any) -> InferenceRequest:
    return InferenceRequest.from_prompt(prompt, max_tokens=max_tokens, temperature=0.0, **kwargs)


async def collect(
    stream: AsyncGenerator[InferenceStreamEvent, None],
) -> tuple[list[InferenceStreamEvent], InferenceResult]:
    events = [event async for event in stream]
    assert events[-1].type is StreamEventType.MESSAGE
    assert events[-1].result is not None
    return events, events[-1].result


def tokens_of(events: list[InferenceStreamEvent]) -> list[str]:
    return [e.content for e in events if e.type is StreamEventType.TOKEN]


async def poll(check: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = check()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {DEADLINE_S:.0f}s waiting for {what}")
        await asyncio.sleep(0.01)


def toml_settings(tmp_path: Path, provider_lines: str) -> AvionicsSettings:
    """Settings from a file whose only varying part is the `[providers.local]` table."""
    path = tmp_path / f"avionics-{abs(hash(provider_lines))}.toml"
    path.write_text(
        f"""
[providers.local]
kind = "llama_server"
default_model = "tiny-llama"
retry = {{ max_retries = 0 }}
{provider_lines}

[profiles]
default = {{ provider = "local", temperature = 0.0 }}

[agents.writer]
profile = "default"
max_tokens = 6
""",
        encoding="utf-8",
    )
    return AvionicsSettings.from_file(path)


# ------------------------------------------------------------------- without the binding


def test_missing_binding_raises_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Runs everywhere: without llama-cpp-python the error says what to install."""
    monkeypatch.setattr(llamacpp_module, "binding_available", lambda: False)
    with pytest.raises(ImportError) as info:
        LlamaCppProvider("/models/any.gguf")
    assert "pip install 'jeeves-avionics[llamacpp]'" in str(info.value)
    assert str(info.value) == INSTALL_HINT
    settings = toml_settings(tmp_path, 'in_process = true\nmodel_path = "/models/any.gguf"')
    with pytest.raises(ImportError, match=r"jeeves-avionics\[llamacpp\]"):
        LLMFactory(settings).provider("local")


def test_importing_avionics_does_not_import_llama_cpp() -> None:
    code = (
        "import sys, avionics, avionics.providers.llamacpp; "
        "from avionics import LlamaCppProvider; "
        "assert 'llama_cpp' not in sys.modules, 'imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------------------ provider direct


async def test_infer_maps_result_and_usage(provider: LlamaCppProvider) -> None:
    result = await provider.infer(greedy("hello there", 7))
    assert result.finish_reason is FinishReason.LENGTH  # the tiny model never ends by itself
    assert result.text
    assert result.usage is not None
    assert result.usage.output_tokens == 7
    assert result.usage.input_tokens is not None
    assert result.usage.input_tokens > 0
    assert result.tool_calls == []
    assert result.model == provider.model_path
    assert result.response_id is not None
    assert provider.loaded


async def test_stream_matches_infer(provider: LlamaCppProvider) -> None:
    request = greedy("stream me", 9)
    whole = await provider.infer(request)
    events, result = await collect(provider.stream(request))
    tokens = tokens_of(events)
    assert len(tokens) == 9  # one chunk per token
    assert "".join(tokens) == result.text == whole.text
    assert result.finish_reason is FinishReason.LENGTH
    # Same event order as the llama-server adapter: tokens, then USAGE, then MESSAGE.
    assert [e.type for e in events[-2:]] == [StreamEventType.USAGE, StreamEventType.MESSAGE]
    assert events[-2].usage == result.usage == whole.usage  # counted by the token loop
    assert result.response_id is not None


async def test_stop_string_finishes_with_stop(provider: LlamaCppProvider) -> None:
    free = await provider.infer(greedy("stop here", 40))
    stop = free.text[1:4]
    request = greedy("stop here", 40, stop=(stop,))
    whole = await provider.infer(request)
    _, streamed = await collect(provider.stream(request))
    assert streamed.usage == whole.usage  # counted by the token loop = the binding's own usage
    for result in (whole, streamed):
        assert result.finish_reason is FinishReason.STOP
        assert result.usage is not None
        assert result.usage.output_tokens is not None
        assert result.usage.output_tokens < 40
        assert stop not in result.text
        assert free.text.startswith(result.text)


@pytest.mark.parametrize("stream", [False, True], ids=["infer", "stream"])
async def test_prompt_over_n_ctx_is_a_context_length_error(
    provider: LlamaCppProvider, stream: bool
) -> None:
    request = greedy("x" * (N_CTX + 16), 4)
    yielded: list[InferenceStreamEvent] = []

    async def call() -> None:
        if stream:
            yielded.extend([e async for e in provider.stream(request)])
        else:
            await provider.infer(request)

    with pytest.raises(ContextLengthError) as info:
        await call()
    assert info.value.context_window == N_CTX
    assert info.value.prompt_tokens is not None
    assert info.value.prompt_tokens > N_CTX
    assert not info.value.retryable
    assert info.value.backend == "llamacpp"
    assert yielded == []
    # The provider is fine afterwards.
    assert (await provider.infer(greedy("still fine", 2))).usage is not None


async def test_tools_and_images_are_refused_before_any_work(provider: LlamaCppProvider) -> None:
    tool = ToolSpec("lookup", "look something up", {"type": "object", "properties": {}})
    with pytest.raises(BadRequestError, match="tool"):
        await provider.infer(InferenceRequest.from_prompt("hi", tools=(tool,)))
    image = ImagePart(data=b"\x89PNG....", media_type="image/png")
    with pytest.raises(BadRequestError, match="image"):
        await provider.infer(InferenceRequest(messages=[Message.user([image])]))


async def test_a_missing_model_file_is_not_found(llama_cpp_binding: None, tmp_path: Path) -> None:
    p = LlamaCppProvider(str(tmp_path / "missing.gguf"), name="nope")
    try:
        assert not await p.health_check()
        with pytest.raises(NotFoundError, match="does not exist"):
            await p.infer(greedy("hi", 2))
    finally:
        p.close()


async def test_breaking_out_of_a_stream_stops_the_generation(
    long_provider: LlamaCppProvider,
) -> None:
    await long_provider.load()
    before = long_provider.get_stats()
    received: list[str] = []
    stream = long_provider.stream(greedy("a long story", LONG_MAX_TOKENS))
    async for event in stream:
        if event.type is StreamEventType.TOKEN:
            received.append(event.content)
            if len(received) == 3:
                assert long_provider.busy
                break
    await stream.aclose()  # returns once the worker has stopped
    assert not long_provider.busy
    after = long_provider.get_stats()
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["calls"] == before["calls"]  # not a finished generation
    assert after["sampled_tokens"] - before["sampled_tokens"] < LONG_MAX_TOKENS
    result = await long_provider.infer(greedy("after the cancel", 5))
    assert result.usage is not None
    assert result.usage.output_tokens == 5


@pytest.mark.parametrize("call", ["infer", "stream"])
async def test_cancelling_the_task_stops_the_generation(
    long_provider: LlamaCppProvider, call: str
) -> None:
    await long_provider.load()
    before = long_provider.get_stats()
    request = greedy("another long story", LONG_MAX_TOKENS)

    async def run() -> None:
        if call == "infer":
            await long_provider.infer(request)
        else:
            async for _ in long_provider.stream(request):
                pass

    task = asyncio.create_task(run())
    await poll(
        lambda: long_provider.busy and long_provider._current is not None
        and long_provider._current.sampled > 0,
        "the generation to start",
    )  # fmt: skip
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not long_provider.busy  # cancellation waited for the worker
    after = long_provider.get_stats()
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["sampled_tokens"] - before["sampled_tokens"] < LONG_MAX_TOKENS


async def test_concurrent_calls_queue_on_the_one_model(provider: LlamaCppProvider) -> None:
    async def one(i: int) -> InferenceResult:
        if i % 2:
            return await provider.infer(greedy(f"call {i}", 3 + i))
        return (await collect(provider.stream(greedy(f"call {i}", 3 + i))))[1]

    results = await asyncio.gather(*(one(i) for i in range(6)))
    for i, result in enumerate(results):
        assert result.usage is not None
        assert result.usage.output_tokens == 3 + i


# ------------------------------------------------------------------------- through gateway


async def test_gateway_complete_and_stream_in_process(
    llama_cpp_binding: None, tiny_model_path: Path, tmp_path: Path
) -> None:
    settings = toml_settings(
        tmp_path, f'in_process = true\nmodel_path = "{tiny_model_path}"\ncontext_window = {N_CTX}'
    )
    rows: list[dict[str, Any]] = []
    gw = LLMGateway(settings, resource_callback=rows.append)
    inproc = gw.factory.provider("local")
    assert isinstance(inproc, LlamaCppProvider)
    try:
        response = await gw.complete("hello gateway", agent_name="writer")
        assert response.provider == "local"
        assert response.completion_tokens == 6  # the agent's max_tokens
        assert response.prompt_tokens > 0
        assert response.finish_reason is FinishReason.LENGTH
        assert response.cost == Decimal(0)
        assert response.cost_usd == 0.0
        assert response.metadata["node"] is None

        chunks = [c async for c in gw.complete_stream("hello gateway", agent_name="writer")]
        *pieces, final = chunks
        assert final.is_final
        assert final.response is not None
        assert len(pieces) == 6
        assert final.response.text == "".join(c.text for c in pieces) == response.text
        assert final.response.prompt_tokens == response.prompt_tokens
        assert final.response.cost == Decimal(0)

        ledger = gw.accountant.ledger.rows()
        assert [(r.provider, r.node, str(r.outcome), r.streamed) for r in ledger] == [
            ("local", None, "ok", False),
            ("local", None, "ok", True),
        ]
        assert all(r.cost_usd == Decimal(0) for r in ledger)
        assert [r["output_tokens"] for r in rows] == [6, 6]
        assert await gw.health_check() == {"local": True}
    finally:
        inproc.close()


async def test_switching_an_agent_between_llama_server_and_in_process_in_settings_alone(
    llama_cpp_binding: None,
    llama_server: LlamaServer,
    tiny_model_path: Path,
    tmp_path: Path,
) -> None:
    """The same agent, profile and code; only `[providers.local]` differs. Same model, same
    chat template, greedy decoding: the same prompt tokens and completion length."""
    over_http = toml_settings(tmp_path, f'base_url = "{llama_server.base_url}"')
    in_process = toml_settings(
        tmp_path,
        f'base_url = "{llama_server.base_url}"\n'
        f'in_process = true\nmodel_path = "{tiny_model_path}"\ncontext_window = {N_CTX}',
    )
    answers = []
    for settings in (over_http, in_process):
        gw = LLMGateway(settings)
        try:
            answers.append(await gw.complete("switch me", agent_name="writer"))
        finally:
            p = gw.factory.provider("local")
            if isinstance(p, LlamaCppProvider):
                p.close()
            await airframe.aclose_all()
    http_answer, local_answer = answers
    assert http_answer.metadata["node"] is not None
    assert local_answer.metadata["node"] is None
    assert http_answer.completion_tokens == local_answer.completion_tokens == 6
    assert http_answer.prompt_tokens == local_answer.prompt_tokens
    ep = EndpointSpec(llama_server.base_url, BackendKind.LLAMA_SERVER)
    counted = await LlamaServerAdapter().count_tokens(ep, InferenceRequest.from_prompt("switch me"))
    assert local_answer.prompt_tokens == counted


async def test_fallback_from_in_process_to_llama_server(
    llama_cpp_binding: None, llama_server_factory: LlamaServerFactory, tmp_path: Path
) -> None:
    """A missing model file is `not_found` in process: the gateway moves on to llama-server."""
    server = llama_server_factory()
    gw = LLMGateway(
        AvionicsSettings(
            providers={
                "inproc": {
                    "kind": "llama_server",
                    "in_process": True,
                    "model_path": str(tmp_path / "missing.gguf"),
                    "default_model": "tiny-llama",
                },
                "server": {
                    "kind": "llama_server",
                    "base_url": server.base_url,
                    "default_model": "tiny-llama",
                },
            },
            profiles={"main": {"provider": "inproc"}, "backup": {"provider": "server"}},
            agents={"writer": {"profile": "main", "fallbacks": ["backup"], "max_tokens": 3}},
        )
    )
    try:
        response = await gw.complete("hello", agent_name="writer")
        assert response.provider == "server"
        assert [
            (a["provider"], a["outcome"], a["error_category"])
            for a in response.metadata["attempts"]
        ] == [("inproc", "error", "not_found"), ("server", "ok", None)]
        assert response.completion_tokens == 3
    finally:
        p = gw.factory.provider("inproc")
        if isinstance(p, LlamaCppProvider):
            p.close()
