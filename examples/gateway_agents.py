"""Agent code using the gateway: two agents, each routed by settings, one streaming.

    python examples/gateway_agents.py                            # offline (wire emulator)
    AVIONICS_CONFIG=avionics.toml python examples/gateway_agents.py   # your backends

The agents name themselves (`agent_name=`); which backend, model, parameters and fallbacks they
get is the settings file's business, so the code below never changes when the routing does.
"""

from __future__ import annotations

import asyncio

from _support import backends

import airframe
from airframe.testing import Reply
from avionics import LLMGateway

SETTINGS = """
[providers.local]
kind = "llama_server"
base_url = "http://127.0.0.1:8080"
default_model = "qwen2.5-7b-instruct"

[providers.anthropic]
kind = "anthropic"
default_model = "claude-sonnet-4-5"

[profiles]
fast = { provider = "local", temperature = 0.2 }
smart = { provider = "anthropic", model = "claude-sonnet-4-5" }
default = "fast"

[agents.researcher]
profile = "smart"
fallbacks = ["fast"]
max_tokens = 300
system = "You are a researcher. Answer with three short facts."

[agents.writer]
profile = "fast"
max_tokens = 400
system = "You are a writer. Turn notes into one friendly paragraph."

[pricing."anthropic/claude-sonnet-4-5"]
input = 3.0
output = 15.0
"""


# -- the agent code ------------------------------------------------------------------------------


class Agent:
    """An agent is a name and a gateway; settings decide where its calls go."""

    def __init__(self, name: str, gateway: LLMGateway) -> None:
        self.name = name
        self.gateway = gateway

    async def ask(self, prompt: str) -> str:
        response = await self.gateway.complete(prompt, agent_name=self.name)
        return response.text

    async def stream(self, prompt: str) -> str:
        parts = []
        async for chunk in await self.gateway.complete_stream(prompt, agent_name=self.name):
            if not chunk.is_final:
                print(chunk.text, end="", flush=True)
                parts.append(chunk.text)
        print()
        return "".join(parts)


async def write_article(gateway: LLMGateway, topic: str) -> str:
    """The pipeline: research, then write (streamed)."""
    researcher = Agent("researcher", gateway)
    writer = Agent("writer", gateway)
    notes = await researcher.ask(f"Facts about {topic}?")
    print(f"researcher notes:\n{notes}\n\nwriter:")
    return await writer.stream(f"Notes:\n{notes}\n\nWrite about {topic}.")


# -- run it --------------------------------------------------------------------------------------


async def run(gateway: LLMGateway) -> None:
    try:
        await write_article(gateway, "bees")
    finally:
        await airframe.aclose_all()  # close pooled connections before the event loop ends


def main() -> None:
    script = (
        Reply.text(
            "1. Honey never spoils.\n2. Bees dance to share directions.\n3. A hive "
            "makes about 25 kg of honey a year."
        ),
        Reply.text(
            "Bees are remarkable: their honey never spoils, they dance to tell each "
            "other where flowers are, and one hive makes about 25 kg of honey a year."
        ),
    )
    with backends(SETTINGS, *script) as settings:
        gateway = LLMGateway(settings)
        asyncio.run(run(gateway))
        stats = gateway.get_stats()
        for agent, row in stats["by_agent"].items():
            print(
                f"{agent}: {row['calls']} call(s), {row['input_tokens']} in / "
                f"{row['output_tokens']} out tokens, ${row['cost_usd']}"
            )


if __name__ == "__main__":
    main()
