"""Differential check: airframe's linear pool pass decides exactly as httpcore 1.0's own.

    uv run python -m bench.pool_check [--states 20000] [--seed 1]

`airframe._pool` replaces httpcore's `_assign_requests_to_connections` (O(n^2) in pooled
connections) with a linear pass that must make the same decisions. This drives both methods from
identical random pool states (connections closed, expired, idle, busy, for one or two origins;
requests queued or not; pools full or not; keep-alive limits low or high) and compares everything
they decide: which connections stay, in what order, which are closed, which request gets which
connection, which connections are created. Prints the number of states checked; raises on the
first difference.
"""

from __future__ import annotations

import argparse
import random
from typing import Any

import httpcore

from airframe._pool import _linear_pool_class

__all__ = ["main"]


class FakeConnection:
    def __init__(self, ident: str, origin: str, state: str, expired: bool) -> None:
        self.ident = ident
        self.origin = origin
        self.state = state  # "idle" | "active" | "new" | "closed"
        self.expired = expired

    def is_closed(self) -> bool:
        return self.state == "closed"

    def has_expired(self) -> bool:
        return self.expired

    def is_idle(self) -> bool:
        return self.state == "idle"

    def is_available(self) -> bool:
        return self.state == "idle"

    def can_handle_request(self, origin: Any) -> bool:
        return bool(origin == self.origin)


class FakeURL:
    def __init__(self, origin: str) -> None:
        self.origin = origin


class FakeRequest:
    def __init__(self, origin: str) -> None:
        self.url = FakeURL(origin)


class FakePoolRequest:
    def __init__(self, ident: str, origin: str, queued: bool) -> None:
        self.ident = ident
        self.request = FakeRequest(origin)
        self.queued = queued
        self.assigned: list[str] = []

    def is_queued(self) -> bool:
        return self.queued

    def assign_to_connection(self, connection: FakeConnection) -> None:
        self.assigned.append(connection.ident)


def _state(rng: random.Random) -> dict[str, Any]:
    origins = ["a", "b"][: rng.randint(1, 2)]
    n = rng.randint(0, 12)
    conns = [
        (
            f"c{i}",
            rng.choice(origins),
            rng.choice(["idle", "idle", "active", "new", "closed"]),
            rng.random() < 0.2,
        )
        for i in range(n)
    ]
    reqs = [(f"r{i}", rng.choice(origins), rng.random() < 0.6) for i in range(rng.randint(0, 8))]
    return {
        "conns": conns,
        "reqs": reqs,
        "max_connections": rng.randint(0, 14),
        "max_keepalive": rng.randint(0, 10),
    }


def _run(pool_cls: type[Any], state: dict[str, Any]) -> dict[str, Any]:
    pool = pool_cls.__new__(pool_cls)  # no sockets, no SSL context: only the bookkeeping
    pool._connections = [FakeConnection(*c) for c in state["conns"]]
    pool._requests = [FakePoolRequest(*r) for r in state["reqs"]]
    pool._max_connections = state["max_connections"]
    pool._max_keepalive_connections = state["max_keepalive"]
    created: list[str] = []

    def create_connection(origin: Any) -> FakeConnection:
        conn = FakeConnection(f"new{len(created)}", origin, "new", False)
        created.append(conn.ident)
        return conn

    pool.create_connection = create_connection
    closing = pool._assign_requests_to_connections()
    return {
        "connections": [c.ident for c in pool._connections],
        "closing": [c.ident for c in closing],
        "assigned": {r.ident: r.assigned for r in pool._requests},
        "created": created,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pool_check", description=__doc__)
    parser.add_argument("--states", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    linear = _linear_pool_class()
    if linear is None:
        raise SystemExit(f"httpcore {httpcore.__version__}: airframe keeps httpcore's own pass")
    rng = random.Random(args.seed)
    for i in range(args.states):
        state = _state(rng)
        stock = _run(httpcore.AsyncConnectionPool, state)
        ours = _run(linear, state)
        if stock != ours:
            raise AssertionError(f"state {i} differs:\n{state}\nhttpcore: {stock}\nours: {ours}")
    version = httpcore.__version__
    print(f"{args.states} random pool states: identical decisions (httpcore {version})")


if __name__ == "__main__":
    main()
