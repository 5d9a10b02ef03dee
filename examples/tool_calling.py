"""A tool-calling loop: the model asks for tools, the gateway runs them and feeds the results back.

    python examples/tool_calling.py                              # offline (wire emulator)
    AVIONICS_CONFIG=avionics.toml python examples/tool_calling.py    # your backends

`LLMGateway.chat_with_tools` runs the loop: call the model with the tools, run each requested
tool (sync or async handlers), append the results, call again until the model answers in text.
Tokens and cost add up over every turn.
"""

from __future__ import annotations

import asyncio

from _support import backends

import airframe
from airframe.testing import Reply
from avionics import LLMGateway

SETTINGS = """
[providers.openai]
kind = "openai"
default_model = "gpt-4o-mini"

[profiles]
default = { provider = "openai", model = "gpt-4o-mini" }

[agents.assistant]
profile = "default"
system = "Use the tools to answer. Be brief."
"""

# -- the agent code ------------------------------------------------------------------------------

WEATHER = {"Paris": "18°C, sunny", "Oslo": "4°C, rain"}

TOOLS = [
    airframe.ToolSpec(
        "get_weather",
        "Current weather in a city",
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    ),
    airframe.ToolSpec(
        "convert_c_to_f",
        "Convert Celsius to Fahrenheit",
        {"type": "object", "properties": {"celsius": {"type": "number"}}, "required": ["celsius"]},
    ),
]


def get_weather(city: str) -> str:
    print(f"  tool get_weather(city={city!r})")
    return WEATHER.get(city, "unknown")


async def convert_c_to_f(celsius: float) -> float:  # handlers may be async
    print(f"  tool convert_c_to_f(celsius={celsius})")
    return round(celsius * 9 / 5 + 32, 1)


async def ask(gateway: LLMGateway, question: str) -> str:
    response = await gateway.chat_with_tools(
        [{"role": "user", "content": question}],
        TOOLS,
        {"get_weather": get_weather, "convert_c_to_f": convert_c_to_f},
        max_iterations=5,
        agent_name="assistant",
    )
    print(f"{response.metadata['turns']} model calls, {response.tokens_used} tokens")
    return response.text


# -- run it --------------------------------------------------------------------------------------


async def run(gateway: LLMGateway) -> None:
    try:
        answer = await ask(gateway, "Is it warmer in Paris or Oslo? Give Paris in Fahrenheit.")
        print(f"answer: {answer}")
    finally:
        await airframe.aclose_all()


def main() -> None:
    script = (  # what the emulated model does: two parallel calls, one more call, then answers
        Reply.tool_calls([("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})]),
        Reply.tool_calls([("convert_c_to_f", {"celsius": 18})]),
        Reply.text("Paris is warmer: 18°C (64.4°F) and sunny, against 4°C and rain in Oslo."),
    )
    with backends(SETTINGS, *script) as settings:
        asyncio.run(run(LLMGateway(settings)))


if __name__ == "__main__":
    main()
