"""Helpers shared by the gateway, provider and factory tests (not a test module).

Tests run with `--import-mode=importlib`, so a test module puts this directory on `sys.path`
and imports what it needs:

    sys.path.insert(0, str(Path(__file__).parent))
    from gateway_kit import provider, settings, ...
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from airframe.testing import Emulator
from avionics import AvionicsSettings, LLMGateway
from avionics.ledger import LedgerRow

FAST_RETRY = {"max_retries": 1, "initial_delay": 0.001, "max_delay": 0.002}
NO_RETRY = {"max_retries": 0}
CLOUD = frozenset({"openai", "anthropic", "azure_openai"})

_HELPER_PATHS = frozenset({"/apply-template", "/tokenize", "/detokenize"})

DEFAULT_MODELS = {
    "openai": "gpt-4o",
    "anthropic": "claude-sonnet-4-5",
    "azure_openai": "gpt-4o",
    "llama_server": "qwen2.5-7b",
    "ollama": "llama3.2",
}


def provider(
    emu: Emulator | None,
    kind: str,
    *,
    nodes: list[Emulator] | None = None,
    url: str | None = None,
    retry: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Settings of one provider pointing at `emu` (or at each of `nodes`, or at `url`)."""
    spec: dict[str, Any] = {
        "kind": kind,
        "default_model": DEFAULT_MODELS[kind],
        "retry": FAST_RETRY if retry is None else retry,
    }
    if nodes is not None:
        spec["nodes"] = [n.base_url(kind) for n in nodes]
    elif url is not None:
        spec["base_url"] = url
    else:
        assert emu is not None
        spec["base_url"] = emu.base_url(kind)
    if kind in CLOUD:
        spec["api_key"] = "sk-test"
    if kind == "azure_openai":
        spec.update(deployment="gpt-4o", api_version="2024-10-21")
    if kind == "ollama" and emu is not None:
        emu.add_ollama_model(spec["default_model"])
    spec.update(extra)
    return spec


def settings(
    providers: dict[str, dict[str, Any]],
    profiles: dict[str, Any] | None = None,
    agents: dict[str, Any] | None = None,
    **extra: Any,
) -> AvionicsSettings:
    """Settings with a `default` profile on the first provider unless `profiles` has one."""
    profiles = dict(profiles or {})
    if "default" not in profiles:
        first = next(iter(providers))
        profiles["default"] = {"provider": first}
    values: dict[str, Any] = {"providers": providers, "profiles": profiles, **extra}
    if agents is not None:
        values["agents"] = agents
    return AvionicsSettings(**values)


def gateway(emu: Emulator, kind: str = "openai", **kw: Any) -> LLMGateway:
    """A gateway with one provider `p` of `kind` on `emu` (the `default` profile)."""
    return LLMGateway(settings({"p": provider(emu, kind)}), **kw)


def inference_requests(emu: Emulator) -> list[Any]:
    """The emulator's recorded inference requests (health checks, model lists and llama-server
    template/tokenize helpers left out)."""
    return [r for r in emu.requests if r.method == "POST" and r.path not in _HELPER_PATHS]


def rows_cost(rows: list[LedgerRow] | list[dict[str, Any]]) -> Decimal:
    total = Decimal(0)
    for row in rows:
        cost = row["cost_usd"] if isinstance(row, dict) else row.cost_usd
        total += Decimal(str(cost)) if cost is not None else Decimal(0)
    return total


@contextmanager
def refused_url(kind: str = "openai") -> Iterator[str]:
    """A loopback URL whose port refuses connections (bound, never listening)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    try:
        suffix = "/v1" if kind == "openai" else ""
        yield f"http://127.0.0.1:{port}{suffix}"
    finally:
        sock.close()


class FakeClock:
    """A monotonic clock tests move by hand (for `NodePool.clock`)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
