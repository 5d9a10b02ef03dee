"""The table, the targets, the JSON and the PNG chart of one benchmark run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .clients import CLIENTS, FLOOR_CALL, FLOOR_STREAM

__all__ = ["render", "targets", "write_chart", "write_json"]


def _num(value: Any, fmt: str = "{:.0f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def _x(value: Any) -> str:
    return _num(value, "{:.2f}x")


def _with(value: Any, ratio: Any, fmt: str = "{:.0f}") -> str:
    if value is None:
        return "-"
    return f"{_num(value, fmt)} ({_x(ratio)})"


COLUMNS = (
    ("client", "<"),
    ("CPU/call µs", ">"),
    ("p99", ">"),
    ("CPU/call @64", ">"),
    ("chunks/s", ">"),
    ("CPU/chunk µs", ">"),
    ("+TTFT ms", ">"),
    ("import ms", ">"),
    ("RSS MB", ">"),
    ("{n} streams: KB/stream", ">"),
    ("lag p99 ms", ">"),
    ("leaked", ">"),
)


def _rows(data: dict[str, Any]) -> list[list[str]]:
    calls = data.get("calls", {})
    streams = data.get("streams", {})
    imports = data.get("imports", {})
    slow = data.get("slow", {})
    names = [n for n in CLIENTS if n in calls or n in streams or n in imports or n in slow]
    rows = []
    for name in names:
        c, s, i, w = calls.get(name), streams.get(name), imports.get(name), slow.get(name)
        rows.append(
            [
                name,
                _with(c["seq_median_us"], c["seq_ratio"]) if c else "-",
                _num(c["seq_p99_us"]) if c else "-",
                _with(c["conc_median_us"], c["conc_ratio"]) if c else "-",
                _with(s["chunks_per_s"], s["rate_ratio"]) if s else "-",
                _with(s["cpu_per_chunk_us"], s["cpu_ratio"], "{:.1f}") if s else "-",
                _num(s["ttft_added_ms"], "{:+.2f}") if s else "-",
                _num(i["import_ms"]) if i else "-",
                _num(i["rss_mb"], "{:.1f}") if i else "-",
                _num(w.get("kb_per_stream"), "{:.1f}") if w and "failed" not in w else "-",
                _num(w.get("lag_p99_ms"), "{:.1f}") if w and "failed" not in w else "-",
                _num(w.get("leaked_sockets")) if w and "failed" not in w else "-",
            ]
        )
    return rows


def table(data: dict[str, Any]) -> str:
    rows = _rows(data)
    n = data.get("plan", {}).get("slow_streams", 1000)
    heads = [c[0].format(n=f"{n:,}") for c in COLUMNS]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(heads)]
    aligns = [c[1] for c in COLUMNS]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(f"{cell:{a}{w}}" for cell, a, w in zip(cells, aligns, widths, strict=True))
            + " |"
        )

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if a == ">" else (":" + "-" * (w + 1))
            for a, w in zip(aligns, widths, strict=True)
        )
        + "|"
    )
    return "\n".join([line(heads), rule, *(line(r) for r in rows)])


def targets(data: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each target of the issue that this run measured."""
    calls = data.get("calls", {})
    streams = data.get("streams", {})
    imports = data.get("imports", {})
    slow = data.get("slow", {})
    out: list[tuple[str, str, bool | None]] = []

    def add(label: str, value: float | None, limit: float, fmt: str, below: bool = True) -> None:
        if value is None or math.isnan(value):
            return
        met = value <= limit if below else value >= limit
        out.append((label, fmt.format(value), met))

    for name in ("airframe", "airframe (anthropic)"):
        if name in calls:
            row = calls[name]
            add(f"{name}: CPU/call <= 1.15x httpx (seq)", row["seq_ratio"], 1.15, "{:.2f}x")
            add(f"{name}: CPU/call <= 1.15x httpx (@64)", row["conc_ratio"], 1.15, "{:.2f}x")
        if name in streams:
            add(f"{name}: chunks/s >= 0.85x httpx-sse", streams[name]["rate_ratio"], 0.85,
                "{:.2f}x", below=False)  # fmt: skip
    if "avionics" in calls:
        av = calls["avionics"]
        add("avionics: CPU/call <= 1.5x httpx (seq)", av["seq_ratio"], 1.5, "{:.2f}x")
        add("avionics: CPU/call <= 1.5x httpx (@64)", av["conc_ratio"], 1.5, "{:.2f}x")
        for peer, factor in (("litellm", 4.0), ("openai SDK", 1.0)):
            if peer in calls and av["seq_overhead_us"] > 0:
                ratio = calls[peer]["seq_overhead_us"] / av["seq_overhead_us"]
                add(f"avionics: overhead {factor:g}x+ less than {peer}'s (seq)", ratio, factor,
                    "{:.1f}x less", below=False)  # fmt: skip
    if "airframe" in imports and "httpx" in imports:
        extra = imports["airframe"]["import_ms"] - imports["httpx"]["import_ms"]
        add("import airframe <= 50 ms over import httpx", extra, 50, "+{:.0f} ms")
    if "avionics" in imports:
        add("import avionics <= 300 ms", imports["avionics"]["import_ms"], 300, "{:.0f} ms")
    for name in ("airframe", "avionics"):
        row = slow.get(name)
        if row and "failed" not in row:
            n = f"{row['streams']:,} streams"
            add(f"{name}: {n}: loop lag p99 < 50 ms", row["lag_p99_ms"], 50, "{:.1f} ms")
            add(f"{name}: {n}: < 64 KB RSS per stream", row["kb_per_stream"], 64, "{:.1f} KB")
            add(f"{name}: {n}: 0 leaked sockets", row["leaked_sockets"], 0, "{:.0f}")
    return out


def render(data: dict[str, Any]) -> str:
    parts = [table(data), ""]
    plan = data.get("plan", {})
    parts.append(
        "Ratios (in brackets) are to the floor of the same protocol measured in the same run: "
        "CPU to `httpx` (POST + json.loads), streaming to `httpx-sse`; each is the median over "
        f"{plan.get('rounds')} interleaved rounds of the within-round ratio. +TTFT: median time "
        "to first token minus the floor's. Streams columns: "
        f"{plan.get('slow_streams')} concurrent streams, {plan.get('slow_tokens')} tokens "
        f"{_num(plan.get('slow_delay', 0) * 1e3)} ms apart; leaked = TCP connections to the "
        "upstream still open after the client was closed."
    )
    redis = data.get("redis")
    if redis is not None and redis.get("latency"):
        parts += ["", "Redis limits (figure 5; gateway over a mock provider, sequential, vs the "
                  "in-memory limiter):"]  # fmt: skip
        for row in redis["latency"]:
            parts.append(
                f"  {row['config']}: {row['round_trips_per_call']:.0f} Redis round trip(s) per "
                f"call, {row['extra_ms_per_call']:+.2f} ms per call "
                f"({row['ms_per_call']:.2f} vs {row['memory_ms_per_call']:.2f} ms)"
            )
    elif redis is not None:
        parts += ["", "Redis limits (figure 5): " + json.dumps(redis)[:400]]
    elif "redis" in data:
        parts += ["", "Redis limits (figure 5): not run (bench/redis_roundtrips.py absent)."]
    checks = targets(data)
    if checks:
        parts += ["", "Targets:"]
        for label, value, met in checks:
            mark = "PASS" if met else "MISS"
            parts.append(f"  [{mark}] {label}: {value}")
    return "\n".join(parts)


def write_json(data: dict[str, Any], rendered: str, path: Path) -> None:
    doc = {**data, "table": rendered, "targets": [
        {"target": t, "measured": v, "met": m} for t, v, m in targets(data)
    ]}  # fmt: skip
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def write_chart(data: dict[str, Any], path: Path) -> Path | None:
    """Four panels of ratios to the floor (log scale: LiteLLM is an order of magnitude away)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels: list[tuple[str, dict[str, float]]] = []
    calls = data.get("calls", {})
    streams = data.get("streams", {})
    imports = data.get("imports", {})
    slow = data.get("slow", {})
    floors = set(FLOOR_CALL.values()) | set(FLOOR_STREAM.values())
    if calls:
        seq = {n: r["seq_ratio"] for n, r in calls.items() if r["seq_ratio"]}
        conc = {n: r["conc_ratio"] for n, r in calls.items() if r["conc_ratio"]}
        panels.append(("CPU per non-streamed call\n(x httpx, lower is better)", seq))
        panels.append(("CPU per call, 64 concurrent\n(x httpx, lower is better)", conc))
    if streams:
        rate = {n: r["rate_ratio"] for n, r in streams.items() if r["rate_ratio"]}
        panels.append(("Streamed chunks/s\n(x httpx-sse, higher is better)", rate))
    if imports:
        base = imports.get("httpx", {}).get("import_ms")
        if base:
            panels.append(("Import time\n(x import httpx, lower is better)", {
                n: r["import_ms"] / base for n, r in imports.items()
                if not n.startswith("_") and r["import_ms"]
            }))  # fmt: skip
    if slow:
        panels.append(("Concurrent slow streams: KB RSS per stream\n(lower is better)", {
            n: r["kb_per_stream"] for n, r in slow.items() if "kb_per_stream" in r
        }))  # fmt: skip
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.6 * len(panels) + 0.6))
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, (title, values) in zip(axes, panels, strict=True):
        names = [n for n in CLIENTS if n in values]
        vals = [values[n] for n in names]
        colors = [
            "#999999" if n in floors else "#d62728" if n.startswith("litellm")
            else "#1f77b4" if n.startswith(("airframe", "avionics")) else "#ff7f0e"
            for n in names
        ]  # fmt: skip
        ax.barh(names, vals, color=colors)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
        if "KB" not in title:
            ax.axvline(1.0, color="black", linewidth=0.8)
            if vals and max(vals) / max(min(vals), 1e-9) > 20:
                ax.set_xscale("log")
        for y, v in enumerate(vals):
            ax.text(v, y, f" {v:.2f}", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
