"""Several nodes behind one provider: least-in-flight choice and a circuit breaker per node.

A node that fails with a node-level error (connection, timeout, server, overloaded) counts a
failure; `failure_threshold` consecutive failures open its breaker for `cooldown` seconds. After the
cooldown one request is let through (half-open probe): success closes the breaker, failure opens it
again. A health check that succeeds closes it at once.

Breaker state lives behind `BreakerStore` so several processes can share it (the Redis store).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from airframe import EndpointSpec, ErrorCategory

__all__ = [
    "NODE_FAILURES",
    "BreakerState",
    "BreakerStore",
    "MemoryBreakerStore",
    "NoHealthyNodeError",
    "Node",
    "NodePool",
]

NODE_FAILURES = frozenset(
    {
        ErrorCategory.CONNECTION,
        ErrorCategory.TIMEOUT,
        ErrorCategory.SERVER,
        ErrorCategory.OVERLOADED,
    }
)


@dataclass(slots=True)
class BreakerState:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


class BreakerStore(Protocol):
    """Where breaker state lives: this process (`MemoryBreakerStore`) or shared (Redis)."""

    def get(self, key: str) -> BreakerState: ...

    def put(self, key: str, state: BreakerState) -> None: ...


class MemoryBreakerStore:
    def __init__(self) -> None:
        self._states: dict[str, BreakerState] = {}

    def get(self, key: str) -> BreakerState:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = BreakerState()
        return state

    def put(self, key: str, state: BreakerState) -> None:
        self._states[key] = state


@dataclass(slots=True)
class Node:
    """One server of a provider. `name` is "provider/host:port"."""

    name: str
    endpoint: EndpointSpec
    in_flight: int = 0
    healthy_hint: bool = field(default=True)


class NoHealthyNodeError(Exception):
    """Every node of a provider is cooling down."""


class NodePool:
    def __init__(
        self,
        nodes: Sequence[Node],
        *,
        failure_threshold: int = 3,
        cooldown: float = 30.0,
        store: BreakerStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not nodes:
            raise ValueError("a provider needs at least one node")
        self.nodes = list(nodes)
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._store: BreakerStore = store or MemoryBreakerStore()
        self._clock = clock

    def _available(self, node: Node, now: float) -> bool:
        state = self._store.get(node.name)
        if state.opened_at is None:
            return True
        return now - state.opened_at >= self.cooldown and not state.probing

    def pick(self, exclude: Sequence[str] = ()) -> Node:
        """The available node with the fewest requests in flight (first listed on ties)."""
        if len(self.nodes) == 1 and not exclude:
            node = self.nodes[0]
            if self._store.get(node.name).opened_at is None:
                return node
        now = self._clock()
        best: Node | None = None
        for node in self.nodes:
            if node.name in exclude or not self._available(node, now):
                continue
            if best is None or node.in_flight < best.in_flight:
                best = node
        if best is None:
            names = ", ".join(n.name for n in self.nodes)
            raise NoHealthyNodeError(f"every node is cooling down after failures: {names}")
        state = self._store.get(best.name)
        if state.opened_at is not None:  # half-open: this request is the probe
            state.probing = True
            self._store.put(best.name, state)
        return best

    def record_success(self, node: Node) -> None:
        state = self._store.get(node.name)
        if state.failures or state.opened_at is not None or state.probing:
            self._store.put(node.name, BreakerState())

    def record_failure(self, node: Node, category: ErrorCategory) -> None:
        """Count a failure; only node-level categories (not bad requests) trip the breaker."""
        state = self._store.get(node.name)
        if category not in NODE_FAILURES:
            if state.probing:  # the probe reached a working server
                self._store.put(node.name, BreakerState())
            return
        failures = state.failures + 1
        opened = state.opened_at
        if state.probing or failures >= self.failure_threshold:
            opened = self._clock()
        self._store.put(node.name, BreakerState(failures, opened, False))

    def mark(self, node_name: str, healthy: bool) -> None:
        """Set a node's health from outside (health checks, operators)."""
        for node in self.nodes:
            if node.name == node_name or node.endpoint.base_url == node_name:
                if healthy:
                    self._store.put(node.name, BreakerState())
                else:
                    self._store.put(
                        node.name, BreakerState(self.failure_threshold, self._clock(), False)
                    )
                return
        raise KeyError(f"no node named {node_name!r}; nodes: {[n.name for n in self.nodes]}")

    def state(self, node: Node) -> str:
        """ "closed" (healthy), "open" (cooling down) or "half_open" (probe allowed)."""
        st = self._store.get(node.name)
        if st.opened_at is None:
            return "closed"
        return "half_open" if self._clock() - st.opened_at >= self.cooldown else "open"
