"""What the arbitrator's commands share besides the options every one takes (--vault and
the rest, arbitrator/cli.py): --alpha, and how results are printed."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from typing import Any

DEFAULT_ALPHA = 1e-6


def alpha(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (0.0 < v < 1.0) or math.isnan(v):
        raise argparse.ArgumentTypeError(f"must lie in (0, 1), got {text!r}")
    return v


def add_alpha_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--alpha",
        type=alpha,
        default=DEFAULT_ALPHA,
        help=f"significance level (default {DEFAULT_ALPHA:g})",
    )


def emit(args: argparse.Namespace, doc: dict[str, Any], text: Callable[[], list[str]]) -> None:
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write("\n".join(text()) + "\n")


def verdict_lines(title: str, verdict: str, licensee: str | None, summary: str) -> list[str]:
    """A verdict's first lines: what was examined, the verdict (and the licensee it
    names), and its one-line summary."""
    named = f", licensee {licensee!r}" if licensee else ""
    return [title, f"  verdict:   {verdict}{named}", f"  {summary}"]


def p_value(log10_p: float) -> str:
    if log10_p == -math.inf:
        return "0"
    if log10_p > -300:
        return f"{10**log10_p:.3g}"
    return f"1e{log10_p:.0f}"
