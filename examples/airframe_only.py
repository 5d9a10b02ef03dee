"""airframe alone: raw streaming inference, no settings, no gateway (`pip install jeeves-airframe`).

    python examples/airframe_only.py                                      # offline (emulator)
    LLAMA_SERVER_URL=http://127.0.0.1:8080 python examples/airframe_only.py   # a real llama-server

One `EndpointSpec` says where the backend is and how to talk to it; `stream_infer` yields token
events and ends with the whole result. Errors are typed by category (`airframe.ErrorCategory`);
airframe already retried what was worth retrying.
"""

from __future__ import annotations

import asyncio
import os

import airframe
from airframe.testing import Emulator, Fault, Reply


async def ask(endpoint: airframe.EndpointSpec, prompt: str) -> airframe.InferenceResult | None:
    request = airframe.InferenceRequest.from_prompt(prompt, max_tokens=128, temperature=0.2)
    try:
        async for event in airframe.stream_infer(endpoint, request):
            if event.type is airframe.StreamEventType.TOKEN:
                print(event.content, end="", flush=True)
            elif event.type is airframe.StreamEventType.MESSAGE:
                print()
                return event.result
    except airframe.AirframeError as error:
        print(f"\nfailed: {error.category.value} (retryable={error.retryable}): {error.message}")
    finally:
        await airframe.aclose_all()
    return None


def run(base_url: str) -> None:
    endpoint = airframe.EndpointSpec(
        base_url,
        airframe.BackendKind.LLAMA_SERVER,
        retry=airframe.RetryPolicy(max_retries=2, initial_delay=0.1),
    )
    result = asyncio.run(ask(endpoint, "Name three rivers in one line."))
    if result is not None and result.usage is not None:
        print(
            f"{result.usage.input_tokens} in / {result.usage.output_tokens} out tokens, "
            f"finish {result.finish_reason.value}"
        )


def main() -> None:
    real = os.environ.get("LLAMA_SERVER_URL")
    if real:
        run(real)
        return
    with Emulator(token_delay=0.01) as emu:
        # The first answer is a 503 (overloaded); airframe retries it and the second one works.
        emu.script(Fault.overloaded(), Reply.text("The Nile, the Amazon and the Danube."))
        run(emu.base_url("llama_server"))
        print(
            f"requests the server saw: {len([r for r in emu.requests if r.path == '/completion'])}"
        )


if __name__ == "__main__":
    main()
