"""Several nodes behind one provider: least-in-flight choice and a circuit breaker per node.

A node that fails with a node-level error (connection, timeout, server, overloaded) counts a
failure; `failure_threshold` consecutive failures open its breaker for `cooldown` seconds. After the
cooldown one request is let through (half-open probe): success closes the breaker, failure opens it
again. A probe whose caller gave up (cancelled, stream closed early) gives no verdict: the next
request probes instead; a probe unanswered for another `cooldown` is presumed lost (a crashed
process holding it in a shared store) and another one is let through. A health check that
succeeds closes the breaker at once; one that fails opens it.

    node = pool.acquire()               # least in flight among available nodes; in_flight += 1
    try: ...                            # the call
    finally: pool.release(node, category)   # in_flight -= 1; None = success

`pick` chooses without side effects; `acquire`/`release` are what a call uses. `clock` is a public
attribute so tests can move time.

Breaker state lives behind `BreakerStore` so several processes can share it (the Redis store).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from airframe import AirframeError, EndpointSpec, ErrorCategory

__all__ = [
    "NODE_FAILURES",
    "BreakerState",
    "BreakerStore",
    "MemoryBreakerStore",
    "NoHealthyNodeError",
    "Node",
    "NodePool",
    "node_category",
]

NODE_FAILURES = frozenset(
    {
        ErrorCategory.CONNECTION,
        ErrorCategory.TIMEOUT,
        ErrorCategory.SERVER,
        ErrorCategory.OVERLOADED,
    }
)


def node_category(error: AirframeError) -> ErrorCategory:
    """The category a node's breaker judges: an interrupted stream counts as what broke it."""
    if error.category is ErrorCategory.INTERRUPTED and isinstance(error.__cause__, AirframeError):
        return error.__cause__.category
    return error.category


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
        self.clock = clock

    def _available(self, node: Node, now: float) -> bool:
        state = self._store.get(node.name)
        if state.opened_at is None:
            return True
        elapsed = now - state.opened_at
        if state.probing:  # one probe at a time, unless it looks lost
            return elapsed >= 2 * self.cooldown
        return elapsed >= self.cooldown

    def _choose(self, exclude: Sequence[str]) -> Node | None:
        if len(self.nodes) == 1 and not exclude:
            node = self.nodes[0]
            if self._store.get(node.name).opened_at is None:
                return node
        now = self.clock()
        best: Node | None = None
        for node in self.nodes:
            if node.name in exclude or not self._available(node, now):
                continue
            if best is None or node.in_flight < best.in_flight:
                best = node
        return best

    def has_available(self, exclude: Sequence[str] = ()) -> bool:
        """Whether `pick(exclude)` would find a node."""
        return self._choose(exclude) is not None

    def pick(self, exclude: Sequence[str] = ()) -> Node:
        """The available node with the fewest requests in flight (first listed on ties).

        No side effects: `acquire` is what a call uses."""
        best = self._choose(exclude)
        if best is None:
            names = ", ".join(n.name for n in self.nodes)
            raise NoHealthyNodeError(f"every node is cooling down after failures: {names}")
        return best

    def acquire(self, exclude: Sequence[str] = ()) -> Node:
        """`pick`, then count the call in flight (and make it the probe of a half-open node).
        Pair with `release`."""
        node = self.pick(exclude)
        node.in_flight += 1
        state = self._store.get(node.name)
        if state.opened_at is not None:  # half-open: this request is the probe
            self._store.put(node.name, BreakerState(state.failures, state.opened_at, True))
        return node

    def release(
        self, node: Node, error: ErrorCategory | None = None, *, completed: bool = True
    ) -> None:
        """End a call started with `acquire`: feed its outcome to the breaker (`error` None is a
        success). `completed=False` (the caller gave up) gives no verdict on the node."""
        node.in_flight -= 1
        if not completed:
            state = self._store.get(node.name)
            if state.probing:  # let the next request probe instead
                self._store.put(node.name, BreakerState(state.failures, state.opened_at, False))
        elif error is None:
            self.record_success(node)
        else:
            self.record_failure(node, error)

    def record_success(self, node: Node) -> None:
        state = self._store.get(node.name)
        if state.failures or state.opened_at is not None or state.probing:
            self._store.put(node.name, BreakerState())

    def record_failure(self, node: Node, category: ErrorCategory) -> None:
        """Count a failure; only node-level categories (not bad requests) trip the breaker."""
        if category not in NODE_FAILURES:  # the node answered: as good as a success
            self.record_success(node)
            return
        state = self._store.get(node.name)
        failures = state.failures + 1
        opened = state.opened_at
        if state.probing or failures >= self.failure_threshold:
            opened = self.clock()
        self._store.put(node.name, BreakerState(failures, opened, False))

    def mark(self, node_name: str, healthy: bool) -> None:
        """Set a node's health from outside (health checks, operators)."""
        for node in self.nodes:
            if node.name == node_name or node.endpoint.base_url == node_name:
                if healthy:
                    self._store.put(node.name, BreakerState())
                else:
                    self._store.put(
                        node.name, BreakerState(self.failure_threshold, self.clock(), False)
                    )
                return
        raise KeyError(f"no node named {node_name!r}; nodes: {[n.name for n in self.nodes]}")

    def state(self, node: Node) -> str:
        """ "closed" (healthy), "open" (cooling down) or "half_open" (probe allowed)."""
        st = self._store.get(node.name)
        if st.opened_at is None:
            return "closed"
        if st.probing or self.clock() - st.opened_at >= self.cooldown:
            return "half_open"
        return "open"
