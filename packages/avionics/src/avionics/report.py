"""Renderings of gateway results for people and scripts: the per-agent cost table, the span
tree of one call, its attempts, a response as JSON, Ollama pull progress.

Used by `avionics demo` and the `avionics` command line; plain functions over plain data
(`LLMGateway.get_stats()`, `LLMResponse`, finished OpenTelemetry spans).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from .responses import LLMResponse

__all__ = [
    "PullProgressPrinter",
    "attempt_tree",
    "cost_table",
    "money",
    "response_dict",
    "span_tree",
]


def money(value: Decimal | str | float | None) -> str:
    """`$0.000123`; `?` when the cost is unknown."""
    if value is None:
        return "?"
    return f"${Decimal(str(value)):.6f}"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        cells = [
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [fmt(header), rule, *[fmt(r) for r in rows[:-1]], rule, fmt(rows[-1])]


def cost_table(stats: Mapping[str, Any], agents: Sequence[str]) -> list[str]:
    """Per-agent calls, tokens and cost from `LLMGateway.get_stats()`, with a total row."""
    header = ("AGENT", "CALLS", "FAILED", "INPUT TOK", "OUTPUT TOK", "COST USD")
    rows = []
    by_agent = stats.get("by_agent", {})
    for agent in [*agents, *sorted(set(by_agent) - set(agents))]:
        row = by_agent.get(agent)
        if row is None:
            continue
        rows.append(
            (
                agent,
                str(row["calls"]),
                str(row["errors"]),
                str(row["input_tokens"]),
                str(row["output_tokens"]),
                money(row["cost_usd"]),
            )
        )
    total = stats["totals"]
    rows.append(
        (
            "total",
            str(total["calls"]),
            str(total["errors"]),
            str(total["input_tokens"]),
            str(total["output_tokens"]),
            money(total["cost_usd"]),
        )
    )
    return _table(header, rows, right={1, 2, 3, 4, 5})


def attempt_tree(response: LLMResponse) -> list[str]:
    """One gateway call as a tree: the call, then one branch per attempt (from the ledger rows
    in `response.metadata["attempts"]`)."""
    attempts = response.metadata.get("attempts", [])
    head = (
        f"gateway call  agent={response.agent_name}  request={response.request_id[:12]}  "
        f"{response.latency_ms / 1000:.2f}s  {money(response.cost)}"
    )
    lines = [head]
    for index, row in enumerate(attempts):
        branch = "└── " if index == len(attempts) - 1 else "├── "
        outcome = row["outcome"] if not row["error_category"] else f"error={row['error_category']}"
        tokens = f"in={_count(row['input_tokens'])} out={_count(row['output_tokens'])}"
        lines.append(
            f"{branch}attempt {row['attempt']}: chat {row['model']}  provider={row['provider']}  "
            f"node={row['node']}  {outcome}  {tokens}  {money(row['cost_usd'])}  "
            f"{row['latency_ms'] / 1000:.2f}s"
        )
    return lines


def span_tree(spans: Sequence[Any], request_id: str) -> list[str]:
    """The spans of one gateway call (its `invoke_agent` span and descendants) as a tree.

    `spans` are finished OpenTelemetry SDK spans (e.g. from an `InMemorySpanExporter`)."""
    from .observability import semconv as sc

    root = next(
        (s for s in spans if (s.attributes or {}).get(sc.AVIONICS_REQUEST_ID) == request_id),
        None,
    )
    if root is None:
        return []
    children: dict[int, list[Any]] = {}
    for span in spans:
        if span.parent is not None and span.context.trace_id == root.context.trace_id:
            children.setdefault(span.parent.span_id, []).append(span)
    lines: list[str] = []

    def walk(span: Any, prefix: str, branch: str) -> None:
        lines.append(f"{prefix}{branch}{_span_line(span, sc)}")
        kids = sorted(children.get(span.context.span_id, []), key=lambda k: k.start_time or 0)
        inner = prefix + ("" if not branch else "│   " if branch == "├── " else "    ")
        for index, kid in enumerate(kids):
            walk(kid, inner, "└── " if index == len(kids) - 1 else "├── ")

    walk(root, "", "")
    return lines


def _span_line(span: Any, sc: Any) -> str:
    attrs = dict(span.attributes or {})
    seconds = ((span.end_time or 0) - (span.start_time or 0)) / 1e9
    kind = str(getattr(span.kind, "name", span.kind))
    parts = [span.name, kind, f"{seconds:.2f}s"]
    provider = attrs.get(sc.GEN_AI_PROVIDER_NAME)
    address = attrs.get(sc.SERVER_ADDRESS)
    if provider and address:
        parts.append(f"{provider} @ {address}:{attrs.get(sc.SERVER_PORT)}")
    elif provider:
        parts.append(str(provider))
    if attrs.get(sc.HTTP_REQUEST_RESEND_COUNT):
        parts.append(f"resend={attrs[sc.HTTP_REQUEST_RESEND_COUNT]}")
    if attrs.get(sc.AVIONICS_FALLBACK):
        parts.append("fallback")
    if sc.ERROR_TYPE in attrs:
        parts.append(f"error.type={attrs[sc.ERROR_TYPE]}")
    if sc.GEN_AI_USAGE_INPUT_TOKENS in attrs or sc.GEN_AI_USAGE_OUTPUT_TOKENS in attrs:
        parts.append(
            f"tokens in={attrs.get(sc.GEN_AI_USAGE_INPUT_TOKENS, '-')} "
            f"out={attrs.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS, '-')}"
        )
    if sc.AVIONICS_COST_USD in attrs:
        parts.append(money(attrs[sc.AVIONICS_COST_USD]))
    return "  ".join(parts)


def response_dict(response: LLMResponse) -> dict[str, Any]:
    """A JSON-ready view of an `LLMResponse` (what `chat --json` prints)."""
    return {
        "text": response.text,
        "agent": response.agent_name,
        "provider": response.provider,
        "model": response.model,
        "finish_reason": str(response.finish_reason),
        "prompt_tokens": response.prompt_tokens,
        "completion_tokens": response.completion_tokens,
        "cost_usd": None if response.cost is None else str(response.cost),
        "latency_ms": round(response.latency_ms, 1),
        "fallback_used": bool(response.metadata.get("fallback_used")),
        "tool_calls": [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in response.tool_calls
        ],
        "attempts": response.metadata.get("attempts", []),
        "request_id": response.request_id,
    }


class PullProgressPrinter:
    """Progress of an Ollama pull on stderr: one rewritten line on a terminal, else one line per
    status change and per 10% of each layer."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last: tuple[str, int] | None = None

    def __call__(self, progress: Any) -> None:
        fraction = progress.fraction
        step = -1 if fraction is None else int(fraction * 10)
        key = (f"{progress.status} {progress.digest or ''}", step)
        if not self.tty and key == self._last:
            return
        self._last = key
        text = progress.status
        if fraction is not None and progress.total:
            text += f" {fraction:6.1%} of {progress.total / 1e6:,.1f} MB"
        if self.tty:
            self.out.write(f"\r\033[K{text}")
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()
