"""State shared by the test thread and the server thread: settings, script, records, models."""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections import deque
from dataclasses import dataclass
from typing import Literal, TypeAlias

from ._behaviours import Behaviour, Fault, Reply
from ._recording import RecordedRequest
from ._turn import split_pieces

__all__ = ["EmulatorState", "OllamaModel", "OpenAIDialect", "Vocab", "ollama_name"]

OpenAIDialect: TypeAlias = Literal["openai", "llama_server"]


def ollama_name(name: str) -> str:
    """Ollama's model names default to the `latest` tag."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


@dataclass(frozen=True)
class OllamaModel:
    name: str
    digest: str
    size: int
    modified_at: str


class Vocab:
    """A deterministic vocabulary grown on demand: one id per distinct whitespace piece."""

    BOS = 1

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._pieces: dict[int, str] = {self.BOS: ""}
        self._lock = threading.Lock()

    def encode(self, text: str) -> list[int]:
        return [self.id(piece) for piece in split_pieces(text)]

    def id(self, piece: str) -> int:
        with self._lock:
            found = self._ids.get(piece)
            if found is None:
                found = 1000 + len(self._ids)
                self._ids[piece] = found
                self._pieces[found] = piece
            return found

    def decode(self, ids: list[int]) -> str:
        with self._lock:
            return "".join(self._pieces.get(token, "") for token in ids)


class EmulatorState:
    """Everything the protocol modules read; mutated from the test thread under a lock."""

    def __init__(
        self,
        *,
        token_delay: float,
        first_token_delay: float,
        api_key: str | None,
        model: str,
        context_window: int,
        openai_dialect: OpenAIDialect,
    ) -> None:
        self.token_delay = token_delay
        self.first_token_delay = first_token_delay
        self.api_key = api_key
        self.model = model
        self.context_window = context_window
        self.openai_dialect: OpenAIDialect = openai_dialect
        self.loading = False
        self.vocab = Vocab()
        self._lock = threading.Lock()
        self._script: deque[Behaviour] = deque()
        self._default: Behaviour = Reply.echo()
        self._requests: list[RecordedRequest] = []
        self._seq = itertools.count(1)
        self._pulled: dict[str, OllamaModel] = {}

    # -- script --------------------------------------------------------------------------------

    def script(self, behaviours: tuple[Behaviour, ...]) -> None:
        for behaviour in behaviours:
            if not (isinstance(behaviour, Reply | Fault) or callable(behaviour)):
                raise TypeError(f"not a behaviour: {behaviour!r} (use Reply.* or Fault.*)")
        with self._lock:
            self._script.extend(behaviours)

    def set_default(self, behaviour: Behaviour) -> None:
        if not (isinstance(behaviour, Reply | Fault) or callable(behaviour)):
            raise TypeError(f"not a behaviour: {behaviour!r} (use Reply.* or Fault.*)")
        with self._lock:
            self._default = behaviour

    def pending(self) -> int:
        with self._lock:
            return len(self._script)

    def next_behaviour(self, request: RecordedRequest) -> Reply | Fault:
        with self._lock:
            behaviour = self._script.popleft() if self._script else self._default
        if isinstance(behaviour, Reply | Fault):
            return behaviour
        decided = behaviour(request)
        if not isinstance(decided, Reply | Fault):
            raise TypeError(f"responder returned {decided!r}, not a Reply or Fault")
        return decided

    def default_reply(self) -> Reply:
        """The reply streamed around a mid-stream fault that names none."""
        with self._lock:
            default = self._default
        return default if isinstance(default, Reply) else Reply.echo()

    # -- records -------------------------------------------------------------------------------

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._requests.clear()

    def next_seq(self) -> int:
        with self._lock:
            return next(self._seq)

    # -- Ollama's local models -----------------------------------------------------------------

    def add_ollama_model(self, name: str) -> OllamaModel:
        full = ollama_name(name)
        digest = hashlib.sha256(full.encode()).hexdigest()
        model = OllamaModel(
            name=full,
            digest=digest,
            size=2_019_393_189 + int(digest[:4], 16),
            modified_at="2025-01-01T00:00:00.000000000Z",
        )
        with self._lock:
            self._pulled[full] = model
        return model

    def ollama_models(self) -> list[OllamaModel]:
        base = ollama_name(self.model)
        digest = hashlib.sha256(base.encode()).hexdigest()
        default = OllamaModel(base, digest, 2_019_393_189, "2025-01-01T00:00:00.000000000Z")
        with self._lock:
            pulled = dict(self._pulled)
        pulled.setdefault(base, default)
        return sorted(pulled.values(), key=lambda model: model.name)

    def ollama_model(self, name: str) -> OllamaModel | None:
        wanted = ollama_name(name)
        for model in self.ollama_models():
            if model.name == wanted:
                return model
        return None
