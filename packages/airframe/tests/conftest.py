"""Shared fixtures of airframe's test suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import airframe


@pytest.fixture(autouse=True)
async def _close_pools() -> AsyncIterator[None]:
    """Close the test's pooled connections on its own event loop, so none outlive it."""
    yield
    await airframe.aclose_all()
