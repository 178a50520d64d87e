"""``encryip-arbitrator verify-labels OBSERVED.json --vault V``: which licensee's key
explains the labels a service gave for the triggers? (Eqn. 5)"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from encryip_runtime.arbitrator.commands import common
from encryip_runtime.arbitrator.commands.common import p_value
from encryip_runtime.cli.options import add_command

NAME = "verify-labels"


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    summary = "which licensee's key explains the labels a service gave for the triggers? (Eqn. 5)"
    p = add_command(subparsers, NAME, parents, run, summary)
    p.add_argument(
        "observed",
        type=Path,
        metavar="OBSERVED.json",
        help='a JSON list, or {"labels": [...]}, in trigger order (null = no answer)',
    )
    common.add_alpha_argument(p)


def run(args: argparse.Namespace) -> int:
    from encryip_runtime.arbitrator.verify_labels import verify_labels

    v = verify_labels(args.observed, args.vault, args.alpha)

    def text() -> list[str]:
        verdict = "PROVEN" if v.proven else "NOT PROVEN"
        lines = [
            *common.verdict_lines(f"verify-labels {v.observed}", verdict, v.licensee, v.summary),
            f"  p-value:   {p_value(v.log10_p_value)} (binomial tail, "
            f"chance {v.chance_per_trigger:.4g}"
            f" per trigger, Bonferroni over {len(v.licensees)} licensees)",
            f"  threshold: p < {v.alpha:g}; needs >= {v.min_matches} of {v.answered} answered "
            "triggers matching one licensee",
            f"  null:      {v.null}",
        ]
        many = v.current_generation > 1
        lines += [
            f"    {m.name:<20} {m.matches:>4}/{v.answered:<4} p <= {p_value(m.log10_p_value)}"
            + (f"  (key generation {m.generation})" if many else "")
            for m in v.licensees
        ]
        return lines

    common.emit(args, v.to_json(), text)
    return v.exit_code
