"""Swap an agent's backend with an environment variable: no code change.

    python examples/swap_backend.py                     # offline: runs the agent both ways
    AVIONICS_AGENTS__SUMMARIZER__PROFILE=cloud python my_app.py    # what you do in production

Any settings key can be set as `AVIONICS_<SECTION>__<NAME>__<KEY>`; the environment wins over the
file. Here the `summarizer` agent runs on the local llama-server, then, with
`AVIONICS_AGENTS__SUMMARIZER__PROFILE=cloud`, on Anthropic. `avionics routes` shows the resolved
table for the current environment.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import airframe
from airframe.testing import Emulator
from avionics import AvionicsSettings, LLMGateway
from avionics.demo import emulated_settings

SETTINGS = """
[providers.local]
kind = "llama_server"
base_url = "http://127.0.0.1:8080"
default_model = "qwen2.5-7b-instruct"

[providers.anthropic]
kind = "anthropic"
default_model = "claude-haiku-4-5"

[profiles]
local = { provider = "local" }
cloud = { provider = "anthropic", model = "claude-haiku-4-5" }
default = "local"

[agents.summarizer]
profile = "local"
max_tokens = 200
"""

# -- the agent code: identical in both runs ------------------------------------------------------


async def summarize(settings: AvionicsSettings, text: str) -> str:
    gateway = LLMGateway(settings)
    try:
        response = await gateway.complete(f"Summarize: {text}", agent_name="summarizer")
    finally:
        await airframe.aclose_all()
    print(f"summarizer -> {response.provider}/{response.model}: {response.text}")
    return response.text


# -- run it both ways ----------------------------------------------------------------------------


def main() -> None:
    text = "The meeting moved to Thursday at 10."
    with Emulator() as emu, tempfile.TemporaryDirectory() as tmp:
        path: Path = emulated_settings(emu, tmp, source=SETTINGS)
        asyncio.run(summarize(AvionicsSettings.from_file(path), text))

        os.environ["AVIONICS_AGENTS__SUMMARIZER__PROFILE"] = "cloud"  # what a deployment sets
        try:
            asyncio.run(summarize(AvionicsSettings.from_file(path), text))
        finally:
            del os.environ["AVIONICS_AGENTS__SUMMARIZER__PROFILE"]
        print("paths the emulator saw:", [r.path for r in emu.requests])


if __name__ == "__main__":
    main()
