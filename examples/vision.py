"""Vision: send an image with the prompt; routes whose model cannot see are skipped.

    python examples/vision.py                              # offline (wire emulator)
    python examples/vision.py photo.jpg                    # your own image
    AVIONICS_CONFIG=avionics.toml python examples/vision.py photo.jpg   # your backends

`images=` takes bytes, a file path, an http(s) or data: URL, or an `airframe.ImagePart`. The agent
below is routed to a local text-only model first; settings say it cannot see
(`[capabilities."qwen2.5-7b-instruct"] vision = false`), so the gateway skips that route, before
any network I/O, and the vision-capable fallback answers.
"""

from __future__ import annotations

import asyncio
import struct
import sys
import zlib

from _support import backends

import airframe
from airframe.testing import Reply
from avionics import LLMGateway

SETTINGS = """
[providers.local]
kind = "llama_server"
base_url = "http://127.0.0.1:8080"
default_model = "qwen2.5-7b-instruct"

[providers.openai]
kind = "openai"
default_model = "gpt-4o-mini"

[profiles]
local = { provider = "local" }
eyes = { provider = "openai", model = "gpt-4o-mini" }
default = "local"

[agents.inspector]
profile = "local"
fallbacks = ["eyes"]
max_tokens = 200

[capabilities."qwen2.5-7b-instruct"]
vision = false
"""


def red_square_png(size: int = 8) -> bytes:
    """A tiny red PNG, so the example needs no image file."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * size for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# -- the agent code ------------------------------------------------------------------------------


async def describe(gateway: LLMGateway, image: airframe.ImagePart) -> str:
    response = await gateway.complete(
        "What is in this picture? One sentence.", images=[image], agent_name="inspector"
    )
    for skipped in response.metadata["skipped"]:
        print(f"skipped {skipped['provider']}/{skipped['model']}: {skipped['reason']}")
    print(f"answered by {response.provider}/{response.model}")
    return response.text


# -- run it --------------------------------------------------------------------------------------


async def run(gateway: LLMGateway, image: airframe.ImagePart) -> None:
    try:
        print(await describe(gateway, image))
    finally:
        await airframe.aclose_all()


def main() -> None:
    if len(sys.argv) > 1:
        image = airframe.ImagePart.from_path(sys.argv[1])
    else:
        image = airframe.ImagePart(data=red_square_png(), media_type="image/png")
    with backends(SETTINGS, Reply.text("A small, plain red square.")) as settings:
        asyncio.run(run(LLMGateway(settings), image))


if __name__ == "__main__":
    main()
