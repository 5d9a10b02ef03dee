"""`LlamaCppProvider`: in-process llama.cpp through the `llama-cpp-python` binding.

Install with `pip install 'jeeves-avionics[llamacpp]'` (it compiles llama.cpp). Same settings
shape as a llama-server provider, so an agent moves between a llama-server node and in-process
inference by settings alone:

    [providers.local]
    kind = "llama_server"
    base_url = "http://127.0.0.1:8080"        # a llama-server node ...
    in_process = true                          # ... or, with these two lines, this process
    model_path = "/models/qwen2.5-7b-q4_k_m.gguf"
    context_window = 4096                      # n_ctx of the in-process model
    default_model = "qwen2.5-7b"

Results map to airframe exactly as the llama-server adapter's do: finish reasons `stop` /
`length`, `Usage(input_tokens=prompt tokens, output_tokens=generated tokens)`, a prompt that does
not fit the context is `ContextLengthError` (with `prompt_tokens` and `context_window`), and a
stream is `TOKEN`... then `USAGE`, then `MESSAGE` last.

Threads: a `Llama` object is not thread-safe, so each provider owns one worker thread that loads
the model (lazily, once, on the first call) and runs every generation, one at a time; concurrent
calls queue. `infer` awaits the worker's result; `stream` gets chunks from it through an asyncio
queue. Cancelling the caller (task cancellation, `break` + `aclose()` of the stream) stops the
generation at the next token and waits until the worker is idle again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import importlib.util
import inspect
import re
import threading
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airframe import (
    AirframeError,
    BadRequestError,
    ContextLengthError,
    FinishReason,
    InferenceRequest,
    InferenceResult,
    InferenceStreamEvent,
    InterruptedError,
    NotFoundError,
    ServerError,
    StreamEventType,
    TransportHooks,
    Usage,
)

from ..nodes import Node
from .base import LLMProvider

if TYPE_CHECKING:
    from ..settings import ProviderSettings

__all__ = ["DEFAULT_N_CTX", "INSTALL_HINT", "LlamaCppCapabilities", "LlamaCppProvider"]

INSTALL_HINT = (
    "in-process llama.cpp (in_process = true) needs the llama-cpp-python binding; install it "
    "with: pip install 'jeeves-avionics[llamacpp]' (this compiles llama.cpp; in the airframe "
    "repository, bash scripts/build_llama_cpp_python.sh builds it once and caches the wheel)"
)
DEFAULT_N_CTX = 4096
"""`n_ctx` when settings give no `context_window` (llama-server's usual `-c` as well)."""

BACKEND = "llamacpp"

_FINISH_REASONS: Mapping[str | None, FinishReason] = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
}
# llama-cpp-python: "Requested tokens (300) exceed context window of 256"
_CONTEXT_ERROR = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")
# create_chat_completion parameters an `extra_body` may set (the rest is airframe's own fields).
_RESERVED = frozenset({"messages", "stream", "tools", "tool_choice", "functions", "function_call"})


@dataclass(frozen=True, slots=True)
class LlamaCppCapabilities:
    """What in-process inference carries: text chats, JSON output (by grammar); no images (the
    binding is built without its multimodal library) and no tool calling."""

    vision: bool = False
    tools: bool = False
    json_object: bool = True
    json_schema: bool = True
    image_urls: bool = False


@dataclass(slots=True)
class _Run:
    """One generation, shared by the caller and the worker thread."""

    cancel: threading.Event = field(default_factory=threading.Event)
    prompt_tokens: int | None = None  # what llama.cpp evaluated as the prompt
    sampled: int = 0  # tokens sampled and handed to llama-cpp-python's completion loop
    last_token: int | None = None
    stopped_by_cancel: bool = False


def _import_llama_cpp() -> Any:
    try:
        return importlib.import_module("llama_cpp")
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc


def binding_available() -> bool:
    """Whether `llama_cpp` can be found (without importing it: that loads libllama)."""
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        return False


class LlamaCppProvider(LLMProvider):
    """Runs a GGUF model inside this process (CPU) on a worker thread of its own."""

    local = True

    def __init__(
        self,
        model_path: str,
        *,
        name: str = "llamacpp",
        n_ctx: int = DEFAULT_N_CTX,
        default_model: str | None = None,
        **llama_kwargs: Any,
    ) -> None:
        """`llama_kwargs` go to `llama_cpp.Llama` (`n_threads`, `n_batch`, `seed`, ...).

        Raises `ImportError` with the install command when llama-cpp-python is missing; the
        binding itself (and the model) load on the first call."""
        if not binding_available():
            raise ImportError(INSTALL_HINT)
        self.name = name
        self.kind = BACKEND
        self.model_path = model_path
        self.default_model = default_model or model_path
        self.n_ctx = n_ctx
        self._llama_kwargs = llama_kwargs
        self._llama: Any = None
        self._chat_params: frozenset[str] = frozenset()
        self._is_eog: Callable[[int], bool] = lambda token: False
        self._load_lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._current: _Run | None = None  # the worker thread's generation, if any
        # calls/input/output: finished generations; sampled: every token llama.cpp sampled,
        # cancelled generations included; cancelled: generations stopped by their caller.
        self._stats = {
            "calls": 0,
            "cancelled": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "sampled_tokens": 0,
        }

    @classmethod
    def from_settings(cls, name: str, settings: ProviderSettings) -> LlamaCppProvider:
        if not settings.model_path:
            raise ValueError(f"provider {name!r} has in_process = true but no model_path")
        return cls(
            str(Path(settings.model_path).expanduser()),
            name=name,
            n_ctx=settings.context_window or DEFAULT_N_CTX,
            default_model=settings.default_model,
        )

    # -- the model, on the worker thread ------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    @property
    def busy(self) -> bool:
        """Whether a generation is running on the worker thread right now."""
        return self._current is not None

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=f"llamacpp-{self.name}"
                )
            return self._executor

    def _ensure_loaded(self) -> Any:
        """The `Llama` object, loaded on first use (once, whichever thread asks first)."""
        llama = self._llama
        if llama is not None:
            return llama
        with self._load_lock:
            if self._llama is None:
                self._llama = self._load()
            return self._llama

    def _load(self) -> Any:
        llama_cpp = _import_llama_cpp()
        if not Path(self.model_path).is_file():
            raise NotFoundError(
                f"model file {self.model_path} does not exist (model_path of provider "
                f"{self.name!r})",
                backend=BACKEND,
                endpoint=self.name,
            )
        kwargs = {"n_ctx": self.n_ctx, "verbose": False, **self._llama_kwargs}
        try:
            llama = llama_cpp.Llama(model_path=self.model_path, **kwargs)
        except (ValueError, RuntimeError) as exc:
            raise ServerError(
                f"llama.cpp could not load {self.model_path}: {exc}",
                backend=BACKEND,
                endpoint=self.name,
            ) from exc
        self._chat_params = (
            frozenset(inspect.signature(llama.create_chat_completion).parameters) - _RESERVED
        )
        vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._is_eog = lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))
        self._instrument(llama)
        return llama

    def _instrument(self, llama: Any) -> None:
        """Wrap `llama.generate` (the token loop under every completion) to count the prompt
        and the sampled tokens (the binding's streams report no usage) and to stop a cancelled
        generation at the next token (non-streamed calls have no other hook)."""
        original = llama.generate

        def counted(run: _Run, inner: Iterator[int]) -> Iterator[int]:
            try:
                for token in inner:
                    if run.cancel.is_set():
                        run.stopped_by_cancel = True
                        return
                    run.sampled += 1
                    run.last_token = token
                    yield token
            finally:
                close = getattr(inner, "close", None)
                if close is not None:
                    close()

        def generate(tokens: Sequence[int], *args: Any, **kwargs: Any) -> Iterator[int]:
            inner = original(tokens, *args, **kwargs)
            run = self._current
            if run is None:
                return inner  # type: ignore[no-any-return]
            run.prompt_tokens = len(tokens)
            return counted(run, inner)

        llama.generate = generate

    def _call(self, run: _Run, stream: bool, kwargs: dict[str, Any]) -> Any:
        """`create_chat_completion` on the worker thread, errors mapped to airframe's."""
        llama = self._ensure_loaded()
        kwargs = {k: v for k, v in kwargs.items() if k in self._chat_params or k == "messages"}
        self._current = run
        try:
            return llama.create_chat_completion(stream=stream, **kwargs)
        except Exception as exc:
            raise self._error(exc) from exc

    def _error(self, exc: BaseException) -> AirframeError:
        if isinstance(exc, AirframeError):
            return exc
        message = str(exc)
        found = _CONTEXT_ERROR.search(message)
        if found:
            return ContextLengthError(
                message,
                prompt_tokens=int(found.group(1)),
                context_window=int(found.group(2)),
                backend=BACKEND,
                endpoint=self.name,
            )
        if isinstance(exc, ValueError):  # the binding's way of rejecting arguments
            return BadRequestError(message, backend=BACKEND, endpoint=self.name)
        return ServerError(
            f"llama.cpp failed: {type(exc).__name__}: {message}",
            backend=BACKEND,
            endpoint=self.name,
        )

    def _usage(self, run: _Run, reported: Any = None) -> Usage | None:
        """The binding's own `usage` when it gave one (non-streamed), else what the token loop
        counted: prompt tokens, and sampled tokens minus an end-of-generation token (which the
        binding samples but does not count)."""
        if isinstance(reported, dict):
            prompt, completion = reported.get("prompt_tokens"), reported.get("completion_tokens")
            if isinstance(prompt, int) and isinstance(completion, int):
                return Usage(input_tokens=prompt, output_tokens=completion)
        if run.prompt_tokens is None:
            return None
        output = run.sampled
        if run.last_token is not None and self._is_eog(run.last_token):
            output -= 1
        return Usage(input_tokens=run.prompt_tokens, output_tokens=output)

    def _count(self, usage: Usage | None) -> None:
        self._stats["calls"] += 1
        if usage is not None:
            self._stats["input_tokens"] += usage.input_tokens or 0
            self._stats["output_tokens"] += usage.output_tokens or 0

    def _infer_job(self, run: _Run, kwargs: dict[str, Any]) -> InferenceResult | None:
        """The whole answer, or None when the caller cancelled."""
        if run.cancel.is_set():
            return None
        try:
            response = self._call(run, False, kwargs)
        finally:
            self._end(run)
        if run.stopped_by_cancel:
            return None
        choice = (response.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        content = message.get("content")
        usage = self._usage(run, response.get("usage"))
        self._count(usage)
        return InferenceResult(
            text=content if isinstance(content, str) else "",
            tool_calls=[],
            finish_reason=_FINISH_REASONS.get(choice.get("finish_reason"), FinishReason.OTHER),
            usage=usage,
            model=str(response.get("model") or ""),
            response_id=response.get("id"),
        )

    def _stream_job(
        self, run: _Run, kwargs: dict[str, Any], put: Callable[[tuple[str, Any]], None]
    ) -> None:
        """Feed `put` with ("token", text)..., then ("done", (finish, model, id, usage)) or
        ("error", AirframeError). Stops quietly when the caller cancelled."""
        try:
            if run.cancel.is_set():
                return
            chunks = self._call(run, True, kwargs)
            finish: str | None = None
            model, response_id = "", None
            try:
                for chunk in chunks:
                    if run.cancel.is_set():
                        run.stopped_by_cancel = True
                        return
                    model = str(chunk.get("model") or model)
                    response_id = chunk.get("id") or response_id
                    for choice in chunk.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content")
                        if text and isinstance(text, str):
                            put(("token", text))
                        finish = choice.get("finish_reason") or finish
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()  # stops the binding's token loop when we left early
            if run.stopped_by_cancel:
                return
            usage = self._usage(run)
            self._count(usage)
            put(("done", (finish, model, response_id, usage)))
        except Exception as exc:
            put(("error", self._error(exc)))
        finally:
            self._end(run)

    def _end(self, run: _Run) -> None:
        self._current = None
        self._stats["sampled_tokens"] += run.sampled

    async def _await_job(
        self, run: _Run, job: concurrent.futures.Future[InferenceResult | None]
    ) -> InferenceResult:
        """The job's result; when the caller is cancelled, stop the generation and wait until
        the worker has let go of the model (a job still queued never starts)."""
        waiter = asyncio.wrap_future(job)
        try:
            result = await asyncio.shield(waiter)
        except asyncio.CancelledError:
            await self._stop(run, job, waiter)
            raise
        if result is None:  # stopped by a cancellation (cannot happen without one)
            raise asyncio.CancelledError
        return result

    async def _stop(
        self,
        run: _Run,
        job: concurrent.futures.Future[Any],
        waiter: asyncio.Future[Any] | None = None,
    ) -> None:
        """Stop a generation whose caller went away; return once the worker is idle."""
        run.cancel.set()
        if job.cancel():  # still queued: never runs
            self._stats["cancelled"] += 1
            return
        if not job.done():
            self._stats["cancelled"] += 1
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await (waiter if waiter is not None else asyncio.wrap_future(job))

    # -- LLMProvider ----------------------------------------------------------------------------

    def protocol_capabilities(self) -> Any:
        return LlamaCppCapabilities()

    def _check(self, request: InferenceRequest) -> None:
        if request.tools:
            raise BadRequestError(
                "in-process llama.cpp has no tool calling here; use a llama-server provider "
                '(api_type = "openai") for tools',
                backend=BACKEND,
                endpoint=self.name,
            )
        if request.has_images():
            raise BadRequestError(
                "in-process llama.cpp is built without image support; use a llama-server "
                "provider with a multimodal projector",
                backend=BACKEND,
                endpoint=self.name,
            )

    def chat_kwargs(self, request: InferenceRequest) -> dict[str, Any]:
        """`create_chat_completion` arguments for `request` (what is unset keeps the binding's
        default; `extra_body` keys the binding does not know are dropped, as llama-server
        ignores unknown fields)."""
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        for message in request.messages:
            entry: dict[str, Any] = {"role": message.role, "content": message.text()}
            if message.tool_call_id is not None:
                entry["tool_call_id"] = message.tool_call_id
            messages.append(entry)
        kwargs: dict[str, Any] = {"messages": messages}
        if request.max_tokens is not None:
            kwargs["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.top_p is not None:
            kwargs["top_p"] = request.top_p
        if request.stop:
            kwargs["stop"] = list(request.stop)
        if request.seed is not None:
            kwargs["seed"] = request.seed
        fmt = request.response_format
        if fmt is not None:
            kwargs["response_format"] = (
                {"type": "json_object", "schema": dict(fmt.schema)}
                if fmt.type == "json_schema" and fmt.schema is not None
                else {"type": "json_object"}
            )
        for key, value in request.extra_body.items():
            if key == "n_predict":
                kwargs.setdefault("max_tokens", value)
            elif key not in _RESERVED:
                kwargs[key] = value
        return kwargs

    async def infer(
        self,
        request: InferenceRequest,
        *,
        node: Node | None = None,
        hooks: TransportHooks | None = None,
    ) -> InferenceResult:
        self._check(request)
        run = _Run()
        job = self._pool().submit(self._infer_job, run, self.chat_kwargs(request))
        return await self._await_job(run, job)

    async def stream(
        self,
        request: InferenceRequest,
        *,
        node: Node | None = None,
        hooks: TransportHooks | None = None,
    ) -> AsyncGenerator[InferenceStreamEvent, None]:
        self._check(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        run = _Run()

        def put(item: tuple[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the caller's loop is gone: nobody is listening
                run.cancel.set()

        job = self._pool().submit(self._stream_job, run, self.chat_kwargs(request), put)
        text: list[str] = []
        finished = False  # the worker has said its last word (done or error)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "token":
                    text.append(value)
                    yield InferenceStreamEvent(StreamEventType.TOKEN, value)
                    continue
                finished = True
                if kind == "error":
                    assert isinstance(value, AirframeError)
                    if not text:
                        raise value
                    usage = self._usage(run)
                    raise InterruptedError(
                        f"stream interrupted after output began: {value.message}",
                        backend=BACKEND,
                        endpoint=self.name,
                        partial=self._result("".join(text), None, "", None, usage),
                    ) from value
                else:
                    finish, model, response_id, usage = value
                    result = self._result("".join(text), finish, model, response_id, usage)
                    if usage is not None:
                        yield InferenceStreamEvent(StreamEventType.USAGE, usage=usage)
                    yield InferenceStreamEvent(StreamEventType.MESSAGE, result=result)
                    return
        finally:
            if finished:  # the worker is only tidying up
                with contextlib.suppress(Exception):
                    await asyncio.wrap_future(job)
            else:  # the caller left early (break + aclose, cancellation): stop generating
                await self._stop(run, job)

    @staticmethod
    def _result(
        text: str, finish: str | None, model: str, response_id: str | None, usage: Usage | None
    ) -> InferenceResult:
        return InferenceResult(
            text=text,
            tool_calls=[],
            finish_reason=_FINISH_REASONS.get(finish, FinishReason.OTHER),
            usage=usage,
            model=model,
            response_id=response_id,
        )

    async def load(self) -> None:
        """Load the model now instead of on the first call."""
        await asyncio.wrap_future(self._pool().submit(self._ensure_loaded))

    async def health_check(self) -> bool:
        """Loaded, or loadable: the binding is installed and the model file exists."""
        return self.loaded or self._loadable()

    def _loadable(self) -> bool:
        return binding_available() and Path(self.model_path).is_file()

    def close(self) -> None:
        """Stop any generation, end the worker thread and free the model."""
        run = self._current
        if run is not None:
            run.cancel.set()
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        llama, self._llama = self._llama, None
        if llama is not None:
            with contextlib.suppress(Exception):
                llama.close()

    def get_stats(self) -> dict[str, Any]:
        stats = super().get_stats()
        stats.update(
            model_path=self.model_path, n_ctx=self.n_ctx, loaded=self.loaded, **self._stats
        )
        return stats
