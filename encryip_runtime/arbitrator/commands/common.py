"""What the arbitrator's commands share: their parser with --vault, --alpha, and how results
are printed."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from encryip_runtime.cli.options import add_command

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


def command_parser(
    subparsers: Any,
    name: str,
    parents: list[argparse.ArgumentParser],
    run: Callable[[argparse.Namespace], int],
    summary: str,
) -> argparse.ArgumentParser:
    """An arbitrator command's parser: every command reads the vault (``--vault``)."""
    p = add_command(subparsers, name, parents, run, summary)
    p.add_argument("--vault", type=Path, required=True, help="vault.json (or the release dir)")
    return p


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
