"""What the emulator saw: one `RecordedRequest` per HTTP request, in arrival order."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RecordedRequest"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received. `headers` names are lowercased; repeated headers are joined
    with ", ". `json` is the parsed body when it is JSON, else None; `body` is the raw bytes."""

    method: str
    path: str
    query: dict[str, str] = field(hash=False)
    headers: dict[str, str] = field(hash=False)
    json: Any = field(hash=False)
    body: bytes

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    @property
    def stream(self) -> bool:
        """Whether the JSON body asked for a stream (Ollama's /api/chat streams by default)."""
        if not isinstance(self.json, dict):
            return False
        if self.path == "/api/chat":
            return self.json.get("stream", True) is not False
        return self.json.get("stream") is True


def parse_json(body: bytes) -> Any:
    """The body parsed as JSON, or None."""
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None
