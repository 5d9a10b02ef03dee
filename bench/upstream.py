"""The benchmark upstream: airframe's wire emulator in its own process.

    python -m bench.upstream --port 0 [--token-delay 0.05]

Prints ``READY <port>`` on stdout once the socket listens, then serves until stdin closes (the
parent exits) or SIGTERM/SIGINT. Every client is measured against this same server, so its cost
never lands in the client process being measured.

What it answers (OpenAI ``/v1/chat/completions`` and Anthropic ``/v1/messages``, streamed or
not, in each backend's real wire shape): the reply length is read from the last user message.
A message containing ``n=N`` gets an N-token reply (one SSE content event per token); anything
else gets the fixed 48-token answer `SHORT_TEXT`. Token timing is off unless ``--token-delay``
is given (then the emulator waits that long between token events, for the slow-stream figure).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import re
import resource
import signal
import sys
import threading
from typing import Any

from airframe.testing import Emulator, RecordedRequest, Reply

__all__ = ["SHORT_TEXT", "long_text", "main", "prompt_for"]

_VOCAB = [
    *("The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "a"),
    *("streamed", "answer", "arrives", "token", "by", "token,", "each", "one", "a", "small"),
    *("JSON", "event", "on", "the", "wire"),
]

SHORT_TEXT = " ".join(_VOCAB[i % len(_VOCAB)] for i in range(48))
"""The non-streamed answer: 48 tokens, about 250 bytes of text."""

_N = re.compile(r"\bn=(\d+)\b")


def prompt_for(tokens: int | None) -> str:
    """The user message that asks the upstream for a `tokens`-token reply (None: the short one)."""
    base = "Summarise the benchmark method in one paragraph."
    return base if tokens is None else f"{base} n={tokens}"


@functools.lru_cache(maxsize=64)
def long_text(tokens: int) -> str:
    """`tokens` whitespace-separated words: the emulator streams one token event per word."""
    return " ".join(_VOCAB[i % len(_VOCAB)] for i in range(tokens))


@functools.lru_cache(maxsize=64)
def _reply(tokens: int | None) -> Reply:
    return Reply.text(SHORT_TEXT if tokens is None else long_text(tokens))


def _responder(request: RecordedRequest) -> Reply:
    body = request.json if isinstance(request.json, dict) else {}
    messages = body.get("messages") or []
    last = messages[-1].get("content", "") if messages else ""
    if isinstance(last, list):  # content parts
        last = " ".join(str(p.get("text", "")) for p in last if isinstance(p, dict))
    match = _N.search(str(last))
    return _reply(int(match.group(1)) if match else None)


def _long_keep_alive(seconds: int) -> None:
    """Let idle keep-alive connections live `seconds` instead of uvicorn's 5.

    Clients are measured in interleaved rounds, so a client's connections sit idle while the
    others run; with a 5 s server timeout every round would start by reconnecting. Real APIs keep
    idle connections open for a minute or more. The emulator builds its `uvicorn.Config` when it
    starts, so the default is changed here, in this process only.
    """
    import uvicorn

    class Config(uvicorn.Config):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("timeout_keep_alive", seconds)
            super().__init__(*args, **kwargs)

    uvicorn.Config = Config  # type: ignore[misc]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--token-delay", type=float, default=0.0)
    args = parser.parse_args(argv)

    # 1,000 concurrent streams need more descriptors than the usual soft limit of 1,024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))

    _long_keep_alive(300)
    emu = Emulator(host=args.host, port=args.port, token_delay=args.token_delay, model="bench-1")
    emu.set_default(_responder)
    emu.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def watch_stdin() -> None:  # the parent went away: stop
        with contextlib.suppress(Exception):
            sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(f"READY {emu.port}", flush=True)
    # The emulator records every request; a benchmark sends hundreds of thousands.
    while not stop.wait(2.0):
        emu.reset()
    emu.stop()


if __name__ == "__main__":
    main()
