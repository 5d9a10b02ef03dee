"""Structured output: ask for JSON that fits a schema, get a typed object back.

    python examples/structured_output.py                              # offline (wire emulator)
    AVIONICS_CONFIG=avionics.toml python examples/structured_output.py    # your backends

`response_format=` takes a pydantic model class (its JSON schema is sent, strict), a JSON-schema
dict, "json" for any JSON object, or an `airframe.ResponseFormat`. Each backend gets its own wire
shape (OpenAI `response_format`, Anthropic `output_config.format`, llama-server's
grammar-constrained `json_schema`, Ollama `format`); routes that cannot carry a schema are skipped.
"""

from __future__ import annotations

import asyncio
import json

from _support import backends
from pydantic import BaseModel

import airframe
from airframe.testing import Reply
from avionics import LLMGateway

SETTINGS = """
[providers.local]
kind = "llama_server"
base_url = "http://127.0.0.1:8080"
default_model = "qwen2.5-7b-instruct"

[profiles]
default = { provider = "local", temperature = 0.0 }

[agents.extractor]
profile = "default"
max_tokens = 300
system = "Extract the fields. Answer with JSON only."
"""

# -- the agent code ------------------------------------------------------------------------------


class Ticket(BaseModel):
    title: str
    priority: int
    tags: list[str]


async def extract_ticket(gateway: LLMGateway, email: str) -> Ticket:
    response = await gateway.complete(email, response_format=Ticket, agent_name="extractor")
    return Ticket.model_validate_json(response.text)


async def extract_any_json(gateway: LLMGateway, text: str) -> dict[str, object]:
    response = await gateway.complete(text, response_format="json", agent_name="extractor")
    data = json.loads(response.text)
    assert isinstance(data, dict)
    return data


# -- run it --------------------------------------------------------------------------------------

EMAIL = "Subject: checkout broken!! Customers cannot pay since 9am. Urgent. -- Dana, payments"


async def run(gateway: LLMGateway) -> None:
    try:
        ticket = await extract_ticket(gateway, EMAIL)
        print(f"ticket: {ticket!r}")
        print(f"json: {await extract_any_json(gateway, 'Dana works on payments.')}")
    finally:
        await airframe.aclose_all()


def main() -> None:
    script = (
        Reply.text('{"title": "Checkout broken", "priority": 1, "tags": ["payments", "outage"]}'),
        Reply.text('{"name": "Dana", "team": "payments"}'),
    )
    with backends(SETTINGS, *script) as settings:
        asyncio.run(run(LLMGateway(settings)))


if __name__ == "__main__":
    main()
