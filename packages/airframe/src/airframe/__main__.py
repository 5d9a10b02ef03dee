"""The airframe command line: raw inference against one backend, no settings file.

    python -m airframe chat --backend llama_server --base-url http://127.0.0.1:8080 "Hello"
    python -m airframe chat --backend openai --model gpt-4o-mini "Hello"      # key: $OPENAI_API_KEY
    python -m airframe models --backend ollama
    python -m airframe health --backend llama_server --base-url http://127.0.0.1:8080

`chat` streams tokens to stdout and prints usage to stderr; `--json` prints one JSON object
instead. The API key is read only from an environment variable (`--api-key-env VAR`, default
OPENAI_API_KEY / ANTHROPIC_API_KEY / AZURE_OPENAI_API_KEY) and is never printed.

Every failure prints one line on stderr and exits with a code by error category (`EXIT_CODES`):

    0  success                              5  rate_limit, quota
    1  unexpected failure                   6  connection, timeout
    2  usage error (bad arguments)          7  bad_request, context_length, content_filter
    3  auth                                 8  server, overloaded
    4  not_found                            9  protocol, interrupted
                                          130  interrupted by Ctrl-C
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, TextIO

from ._config import BackendKind, EndpointSpec, RetryPolicy, Timeouts
from ._errors import AirframeError, ErrorCategory
from ._types import InferenceRequest, InferenceResult, Message, StreamEventType, Usage

__all__ = [
    "DEFAULT_BASE_URLS",
    "DEFAULT_KEY_ENVS",
    "EXIT_CODES",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "HINTS",
    "exit_code",
    "main",
    "one_line",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES: Mapping[ErrorCategory, int] = {
    ErrorCategory.AUTH: 3,
    ErrorCategory.NOT_FOUND: 4,
    ErrorCategory.RATE_LIMIT: 5,
    ErrorCategory.QUOTA: 5,
    ErrorCategory.CONNECTION: 6,
    ErrorCategory.TIMEOUT: 6,
    ErrorCategory.BAD_REQUEST: 7,
    ErrorCategory.CONTEXT_LENGTH: 7,
    ErrorCategory.CONTENT_FILTER: 7,
    ErrorCategory.SERVER: 8,
    ErrorCategory.OVERLOADED: 8,
    ErrorCategory.PROTOCOL: 9,
    ErrorCategory.INTERRUPTED: 9,
}
"""Process exit status per error category (shared with the `avionics` command line)."""

HINTS: Mapping[ErrorCategory, str] = {
    ErrorCategory.AUTH: "check the API key in the environment variable (or --api-key-env)",
    ErrorCategory.NOT_FOUND: "check the model name and the base URL (OpenAI-compatible URLs "
    "end in /v1); the `models` command lists what the server has",
    ErrorCategory.RATE_LIMIT: "wait and try again, or allow more retries",
    ErrorCategory.QUOTA: "the account is out of quota or credit: add credit or raise its limit",
    ErrorCategory.CONNECTION: "is the server running at that address? check the base URL",
    ErrorCategory.TIMEOUT: "the server is slow or stalled: try again, or raise the timeout",
    ErrorCategory.BAD_REQUEST: "the request was refused: check the options sent",
    ErrorCategory.CONTEXT_LENGTH: "shorten the prompt or lower max tokens",
    ErrorCategory.CONTENT_FILTER: "the provider's content filter blocked the prompt or answer",
    ErrorCategory.SERVER: "the server failed: try again later",
    ErrorCategory.OVERLOADED: "the server is overloaded or still loading its model: retry later",
    ErrorCategory.PROTOCOL: "the answer was malformed or cut short (a proxy in the way?)",
    ErrorCategory.INTERRUPTED: "the stream broke after output began; what arrived was printed",
}
"""One line of advice per error category."""

DEFAULT_BASE_URLS: Mapping[BackendKind, str] = {
    BackendKind.OPENAI: "https://api.openai.com/v1",
    BackendKind.ANTHROPIC: "https://api.anthropic.com",
    BackendKind.LLAMA_SERVER: "http://127.0.0.1:8080",
    BackendKind.OLLAMA: "http://127.0.0.1:11434",
}

DEFAULT_KEY_ENVS: Mapping[BackendKind, str] = {
    BackendKind.OPENAI: "OPENAI_API_KEY",
    BackendKind.ANTHROPIC: "ANTHROPIC_API_KEY",
    BackendKind.AZURE_OPENAI: "AZURE_OPENAI_API_KEY",
}

_HEALTH_EXIT = {"ok": EXIT_OK, "loading": 8, "down": 6, "error": 8}


class UsageError(Exception):
    """Bad command-line input found after parsing (exit 2)."""


class MissingKeyError(Exception):
    """`--api-key-env` names a variable that is not set (exit 3, like auth)."""


class _IO:
    """Where a command reads and writes (the real streams, or test doubles)."""

    def __init__(self, stdin: TextIO, stdout: TextIO, stderr: TextIO, environ: Mapping[str, str]):
        self.stdin, self.stdout, self.stderr, self.environ = stdin, stdout, stderr, environ


def exit_code(error: BaseException) -> int:
    """The exit status for an exception: by `ErrorCategory` for airframe errors."""
    category = getattr(error, "category", None)
    if isinstance(category, ErrorCategory):
        return EXIT_CODES[category]
    if isinstance(error, MissingKeyError):
        return EXIT_CODES[ErrorCategory.AUTH]
    if isinstance(error, UsageError):
        return EXIT_USAGE
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_FAILURE


def one_line(error: BaseException, hint: str | None = None) -> str:
    """`category: message — where. Fix: hint`, on one line, never holding a key."""
    text = " ".join(str(error).split()) or type(error).__name__
    category = getattr(error, "category", None)
    if hint is None and isinstance(category, ErrorCategory):
        hint = HINTS.get(category)
    return f"{text}. Fix: {hint}" if hint else text


def _auth_hint(args: argparse.Namespace) -> str:
    kind = getattr(args, "backend", None)
    default = DEFAULT_KEY_ENVS.get(kind) if isinstance(kind, BackendKind) else None
    var = getattr(args, "api_key_env", None) or default
    if var:
        return f"check the API key in ${var} (or read another variable with --api-key-env)"
    return "this server wants a key: export it and pass --api-key-env VAR"


# ----------------------------------------------------------------------------------- arguments


def _backend(value: str) -> BackendKind:
    text = value.strip().lower().replace("-", "_")
    try:
        return BackendKind(text)
    except ValueError:
        known = ", ".join(k.value for k in BackendKind)
        raise argparse.ArgumentTypeError(
            f"unknown backend {value!r}; use one of: {known}"
        ) from None


def _endpoint_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("endpoint")
    group.add_argument(
        "--backend",
        required=True,
        type=_backend,
        metavar="KIND",
        help="openai, azure_openai, anthropic, llama_server or ollama",
    )
    group.add_argument(
        "--base-url",
        metavar="URL",
        help="as for the official SDK (OpenAI-compatible: include /v1); default: "
        "the backend's usual address (required for azure_openai)",
    )
    group.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the API key (default OPENAI_API_KEY, "
        "ANTHROPIC_API_KEY or AZURE_OPENAI_API_KEY; keys are never arguments)",
    )
    group.add_argument("--deployment", help="azure_openai: the deployment name")
    group.add_argument("--api-version", help="azure_openai: the api-version query parameter")
    group.add_argument(
        "--api-type",
        choices=("native", "openai"),
        default="native",
        help="llama_server: native /completion or its OpenAI-compatible /v1",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="longest silence while waiting for bytes (default 120)",
    )
    group.add_argument(
        "--retries",
        type=int,
        default=2,
        metavar="N",
        help="retries of retryable failures (default 2)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object for scripts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airframe",
        description="Raw inference against one LLM backend (no settings file).",
        epilog="Exit codes: 0 ok, 1 unexpected, 2 usage, 3 auth, 4 not_found, 5 rate_limit/quota, "
        "6 connection/timeout, 7 bad_request/context_length/content_filter, "
        "8 server/overloaded, 9 protocol/interrupted, 130 Ctrl-C.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chat = sub.add_parser("chat", help="send a prompt; stream the answer to stdout")
    _endpoint_options(chat)
    chat.add_argument("prompt", nargs="?", help="the prompt ('-' or none: read stdin)")
    chat.add_argument("--model", help="model id (local servers may ignore it)")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--max-tokens", type=int, metavar="N", help="upper bound on output tokens")
    chat.add_argument("--temperature", type=float, help="sampling temperature")
    chat.add_argument("--no-stream", action="store_true", help="one non-streamed request")
    chat.add_argument("--reasoning", action="store_true", help="print reasoning to stderr")
    models = sub.add_parser("models", help="list the models the server offers")
    _endpoint_options(models)
    health = sub.add_parser("health", help="probe the server once")
    _endpoint_options(health)
    sub.add_parser("backends", help="list the backend kinds this airframe knows")
    return parser


def endpoint_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> EndpointSpec:
    """The endpoint the options describe; the key comes from the environment only."""
    kind: BackendKind = args.backend
    base_url = args.base_url or DEFAULT_BASE_URLS.get(kind)
    if not base_url:
        raise UsageError(f"--base-url is required for {kind.value} (https://NAME.openai.azure.com)")
    key_env = args.api_key_env or DEFAULT_KEY_ENVS.get(kind)
    key = environ.get(key_env, "").strip() if key_env else ""
    if args.api_key_env and not key:
        raise MissingKeyError(
            f"auth: environment variable {args.api_key_env} is not set. "
            f"Fix: export {args.api_key_env}=<your key>"
        )
    if args.retries < 0 or args.timeout <= 0:
        raise UsageError("--retries must be >= 0 and --timeout > 0")
    try:
        return EndpointSpec(
            base_url,
            kind,
            api_key=key or None,
            api_type=args.api_type,
            api_version=args.api_version,
            deployment=args.deployment,
            timeouts=Timeouts(read=args.timeout),
            retry=RetryPolicy(max_retries=args.retries),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


# ------------------------------------------------------------------------------------ commands


def _write(out: TextIO, text: str) -> None:
    out.write(text)
    out.flush()


def _usage_dict(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }


def result_dict(result: InferenceResult, elapsed: float) -> dict[str, Any]:
    """A JSON-ready view of a result (what `chat --json` prints)."""
    return {
        "text": result.text,
        "finish_reason": result.finish_reason.value,
        "model": result.model,
        "response_id": result.response_id,
        "usage": _usage_dict(result.usage),
        "tool_calls": [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in result.tool_calls
        ],
        "reasoning": result.reasoning,
        "refusal": result.refusal,
        "elapsed_s": round(elapsed, 3),
    }


def usage_line(usage: Usage | None) -> str:
    """`input 12 · output 34 tokens` (unknown counts say so)."""
    if usage is None:
        return "usage not reported"

    def show(value: int | None) -> str:
        return "?" if value is None else str(value)

    text = f"input {show(usage.input_tokens)} · output {show(usage.output_tokens)} tokens"
    if usage.cache_read_tokens:
        text += f" · cache read {usage.cache_read_tokens}"
    if usage.reasoning_tokens:
        text += f" · reasoning {usage.reasoning_tokens}"
    return text


def _read_prompt(args: argparse.Namespace, stdin: TextIO) -> str:
    if args.prompt not in (None, "-"):
        return str(args.prompt)
    if args.prompt is None and stdin.isatty():
        raise UsageError("give a prompt (or pipe one on stdin)")
    text = stdin.read().strip()
    if not text:
        raise UsageError("the prompt read from stdin is empty")
    return text


async def _chat(args: argparse.Namespace, io: _IO) -> int:
    from .adapters import get_adapter

    endpoint = endpoint_from_args(args, io.environ)
    request = InferenceRequest(
        [Message.user(_read_prompt(args, io.stdin))],
        model=args.model,
        system=args.system,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
    )
    adapter = get_adapter(endpoint.backend_kind)
    started = time.perf_counter()
    if args.no_stream:
        result = await adapter.infer(endpoint, request)
        if not args.json:
            _write(io.stdout, result.text)
    else:
        result = await _stream(adapter, endpoint, request, args, io)
    elapsed = time.perf_counter() - started
    if args.json:
        _write(io.stdout, json.dumps(result_dict(result, elapsed)) + "\n")
        return EXIT_OK
    if not result.text.endswith("\n"):
        _write(io.stdout, "\n")
    model = f" · model {result.model}" if result.model else ""
    _write(
        io.stderr,
        f"[{usage_line(result.usage)} · finish {result.finish_reason.value}"
        f"{model} · {elapsed:.2f}s]\n",
    )
    return EXIT_OK


async def _stream(
    adapter: Any,
    endpoint: EndpointSpec,
    request: InferenceRequest,
    args: argparse.Namespace,
    io: _IO,
) -> InferenceResult:
    result: InferenceResult | None = None
    printed = False
    try:
        async with aclosing(adapter.stream_infer(endpoint, request)) as events:
            async for event in events:
                if event.type is StreamEventType.TOKEN and not args.json:
                    _write(io.stdout, event.content)
                    printed = True
                elif event.type is StreamEventType.REASONING and args.reasoning:
                    _write(io.stderr, event.content)
                elif event.type is StreamEventType.MESSAGE:
                    result = event.result
    except AirframeError:
        if printed:
            _write(io.stdout, "\n")
        raise
    assert result is not None, "a stream always ends with MESSAGE"
    return result


async def _models(args: argparse.Namespace, io: _IO) -> int:
    from .adapters import get_adapter

    endpoint = endpoint_from_args(args, io.environ)
    names = await get_adapter(endpoint.backend_kind).list_models(endpoint)
    if args.json:
        _write(io.stdout, json.dumps({"backend": str(endpoint.backend_kind), "models": names}))
        _write(io.stdout, "\n")
    else:
        _write(io.stdout, "".join(f"{name}\n" for name in names))
    return EXIT_OK


async def _health(args: argparse.Namespace, io: _IO) -> int:
    from .adapters import get_adapter

    endpoint = endpoint_from_args(args, io.environ)
    status = await get_adapter(endpoint.backend_kind).health_check(endpoint)
    latency = None if status.latency_ms is None else round(status.latency_ms, 1)
    if args.json:
        body = {
            "ok": status.ok,
            "state": status.state,
            "latency_ms": latency,
            "detail": status.detail,
            "endpoint": endpoint.name,
        }
        _write(io.stdout, json.dumps(body) + "\n")
    else:
        took = f" in {latency} ms" if latency is not None else ""
        detail = f": {' '.join(status.detail.split())}" if status.detail else ""
        _write(io.stdout, f"{endpoint.name} {status.state}{took}{detail}\n")
    return _HEALTH_EXIT[status.state]


async def _backends(args: argparse.Namespace, io: _IO) -> int:
    from .adapters import available_backends

    _write(io.stdout, "".join(f"{name}\n" for name in available_backends()))
    return EXIT_OK


_COMMANDS: Mapping[str, Callable[[argparse.Namespace, _IO], Any]] = {
    "chat": _chat,
    "models": _models,
    "health": _health,
    "backends": _backends,
}


async def _run(args: argparse.Namespace, io: _IO) -> int:
    from ._pool import aclose_all

    try:
        code: int = await _COMMANDS[args.command](args, io)
        return code
    finally:
        await aclose_all()


def _report(error: BaseException, args: argparse.Namespace, io: _IO) -> int:
    code = exit_code(error)
    auth = getattr(error, "category", None) is ErrorCategory.AUTH
    _write(io.stderr, f"airframe: {one_line(error, _auth_hint(args) if auth else None)}\n")
    if getattr(args, "json", False):
        category = getattr(error, "category", None)
        body = {
            "error": {
                "category": category.value if isinstance(category, ErrorCategory) else None,
                "message": " ".join(str(error).split()),
                "status_code": getattr(error, "status_code", None),
                "retryable": getattr(error, "retryable", False),
                "request_id": getattr(error, "request_id", None),
                "exit_code": code,
            }
        }
        _write(io.stdout, json.dumps(body) + "\n")
    return code


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the command line; returns the exit status (see `EXIT_CODES`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    io = _IO(
        stdin or sys.stdin,
        stdout or sys.stdout,
        stderr or sys.stderr,
        os.environ if environ is None else environ,
    )
    if args.command is None:
        parser.print_help(io.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(_run(args, io))
    except KeyboardInterrupt:
        _write(io.stderr, "\nairframe: interrupted\n")
        return EXIT_INTERRUPTED
    except (AirframeError, UsageError, MissingKeyError) as exc:
        return _report(exc, args, io)


if __name__ == "__main__":
    raise SystemExit(main())
