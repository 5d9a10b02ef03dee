"""`avionics.report`: the renderings the CLI and the demo print."""

from __future__ import annotations

import io
from decimal import Decimal

from airframe.adapters.ollama import PullProgress
from avionics.report import PullProgressPrinter, cost_table, money, span_tree


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_pull_progress_on_a_terminal_rewrites_one_line() -> None:
    out = Tty()
    printer = PullProgressPrinter(out)
    printer(PullProgress("pulling manifest"))
    printer(PullProgress("pulling abc", "sha256:abc", total=2_000_000, completed=500_000))
    printer(PullProgress("success"))
    printer.close()
    text = out.getvalue()
    assert text.count("\r\033[K") == 3
    assert " 25.0% of 2.0 MB" in text
    assert text.endswith("success\n")


def test_pull_progress_in_a_log_prints_each_step_once() -> None:
    out = io.StringIO()
    printer = PullProgressPrinter(out)
    for done in (0, 10, 20, 500_000, 500_001, 1_000_000):
        printer(PullProgress("pulling abc", "sha256:abc", total=1_000_000, completed=done))
    printer.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # 0%, 50%, 100%: one line per 10% step
    assert lines[-1].endswith("100.0% of 1.0 MB")


def test_cost_table_has_a_total_row() -> None:
    row = {"calls": 2, "errors": 1, "input_tokens": 10, "output_tokens": 5, "cost_usd": "0.5"}
    stats = {"by_agent": {"a": row, "zed": row}, "totals": {**row, "calls": 4, "cost_usd": "1"}}
    lines = cost_table(stats, ["a"])
    assert lines[0].split() == [
        "AGENT",
        "CALLS",
        "FAILED",
        "INPUT",
        "TOK",
        "OUTPUT",
        "TOK",
        "COST",
        "USD",
    ]
    assert [line.split()[0] for line in lines[2:]] == ["a", "zed", "-----", "total"]
    assert lines[-1].split()[-1] == "$1.000000"


def test_money_and_unknown_cost() -> None:
    assert money(Decimal("0.0000126")) == "$0.000013"
    assert money(None) == "?"


def test_span_tree_without_the_call() -> None:
    assert span_tree([], "nope") == []
