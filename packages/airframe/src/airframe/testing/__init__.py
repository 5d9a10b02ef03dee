"""airframe.testing: a wire-level emulator of LLM backends, for tests, demos and benchmarks.

`Emulator` is a real HTTP server on loopback that speaks each backend's real wire protocol
(OpenAI, Azure OpenAI, Anthropic, Ollama, llama-server) and injects faults on demand:

    from airframe.testing import Emulator, Fault, Reply

    with Emulator() as emu:
        emu.script(Fault.rate_limit(retry_after=0), Reply.text("Hello there"))
        ...  # point any client at emu.base_url("openai") / ("anthropic") / ...
        assert emu.requests[-1].json["messages"][0]["content"] == "Hi"

Requires the `testing` extra (uvicorn), imported only when a server starts.
airframe itself never imports this package.
"""

from ._behaviours import Behaviour, ErrorKind, Fault, Reply, Responder, TokenCounts, ToolCallSpec
from ._emulator import Emulator
from ._recording import RecordedRequest

__all__ = [
    "Behaviour",
    "Emulator",
    "ErrorKind",
    "Fault",
    "RecordedRequest",
    "Reply",
    "Responder",
    "TokenCounts",
    "ToolCallSpec",
]
