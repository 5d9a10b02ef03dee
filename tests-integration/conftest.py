"""Fixtures for cross-package integration tests against real servers."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import airframe

# pytest runs with --import-mode=importlib, which does not put this directory on sys.path;
# the helper modules next to this file are imported by their plain names.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from llama_server_fixture import (  # noqa: E402
    llama_server,
    llama_server_bin,
    llama_server_factory,
    llama_server_loading,
    tiny_model_path,
)

__all__ = [
    "llama_server",
    "llama_server_bin",
    "llama_server_factory",
    "llama_server_loading",
    "tiny_model_path",
]
from redis_fixture import redis_server, redis_server_bin, redis_server_factory  # noqa: E402, F401


@pytest.fixture(autouse=True)
async def _close_pools() -> AsyncIterator[None]:
    """Close the test's pooled airframe connections on its own event loop."""
    yield
    await airframe.aclose_all()
