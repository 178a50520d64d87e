"""``encryip-arbitrator verify-onnx SUSPECT.onnx --vault V``: is this ONNX file ours, and
which licensee's copy is it?"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from encryip_runtime.arbitrator.commands import common
from encryip_runtime.arbitrator.commands.common import p_value
from encryip_runtime.cli.options import add_command

NAME = "verify-onnx"


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    summary = "is this ONNX file ours, and which licensee's copy is it?"
    p = add_command(subparsers, NAME, parents, run, summary)
    p.add_argument("suspect", type=Path, metavar="SUSPECT.onnx")
    p.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="the suspect's manifest.json, if found beside it (undoes a re-permutation)",
    )
    common.add_alpha_argument(p)


def run(args: argparse.Namespace) -> int:
    from encryip_runtime.arbitrator.verify_onnx import verify_onnx

    v = verify_onnx(args.suspect, args.vault, args.alpha, manifest_path=args.manifest)

    def text() -> list[str]:
        verdict = "OWNED" if v.owned else "NOT PROVEN"
        lines = [
            *common.verdict_lines(f"verify-onnx {v.suspect}", verdict, v.licensee, v.summary),
            f"  p-value:   {p_value(v.log10_p_value)} (bound; Bonferroni over "
            f"{len(v.candidates)} output orders x 2 tests)",
            f"  threshold: p < {v.alpha:g}; a named file needs >= {v.min_trigger_hits} of "
            f"{v.num_triggers} trigger hits under one output order",
            f"  null:      {v.null}",
            "  evidence per output order (trigger hits; probe accuracy after undoing it):",
        ]
        for c in v.candidates:
            acc = "n/a" if c.probe_accuracy is None else f"{c.probe_accuracy:.3f}"
            tag = " (= --manifest)" if c.manifest_agrees else ""
            lines.append(
                f"    {c.name:<20} {c.trigger_hits:>4}/{c.num_triggers:<4} "
                f"probe acc {acc:<6} p <= {p_value(c.log10_p_value)}{tag}"
            )
        r = v.slot_recovery
        lines.append(f"  slot recovery: {r.detail}; p <= {p_value(r.log10_p_value)}")
        lines.append(f"    null: {r.null}")
        w = v.weights
        if w is None:
            lines.append(
                "  weight fingerprint: not run (no fingerprint, base model or same shapes)"
            )
        else:
            lines.append(f"  weight fingerprint: {w.detail}")
            lines += [
                f"    {m.name:<20} z = {m.z:8.2f}  p <= {p_value(m.log10_p_value)}"
                for m in w.licensees
            ]
            lines.append(f"    null: {w.null}")
        lines += [f"  note: {n}" for n in v.notes]
        return lines

    common.emit(args, v.to_json(), text)
    return v.exit_code
