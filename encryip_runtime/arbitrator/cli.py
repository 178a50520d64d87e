"""``encryip-arbitrator``: verify-onnx, verify-key, verify-labels, export-triggers.

Exit codes: 0 = the claim is proven (owned / licensee named), 1 = not proven,
2 = no decision could be made (bad, corrupt or mismatched input; too few triggers
for --alpha). Plain text on stdout by default, ``--json`` for machines; errors on
stderr, a traceback only with ``--debug``. Heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

PROG = "encryip-arbitrator"
DEFAULT_ALPHA = 1e-6


def _alpha(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (0.0 < v < 1.0) or math.isnan(v):
        raise argparse.ArgumentTypeError(f"must lie in (0, 1), got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    common.add_argument("--debug", action="store_true", help="tracebacks and debug logs")
    common.add_argument(
        "--passphrase-file",
        type=Path,
        default=None,
        help="file whose first line is the vault passphrase (else ENCRYIP_VAULT_PASSPHRASE, "
        "ENCRYIP_VAULT_KEY_FILE, or a prompt on a terminal)",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Prove that a leaked model, key or service is ours and name its licensee. "
        "Exit codes: 0 claim proven, 1 not proven, 2 bad input / no decision possible.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "verify-onnx",
        parents=[common],
        help="is this ONNX file ours, and which licensee's copy is it?",
    )
    p.add_argument("suspect", type=Path, metavar="SUSPECT.onnx")
    p.add_argument("--vault", type=Path, required=True, help="vault.json (or the release dir)")
    p.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="the suspect's manifest.json, if found beside it (undoes a re-permutation)",
    )
    p.add_argument(
        "--alpha",
        type=_alpha,
        default=DEFAULT_ALPHA,
        help=f"significance level (default {DEFAULT_ALPHA:g})",
    )
    p.set_defaults(run=_run_onnx)

    k = sub.add_parser("verify-key", parents=[common], help="whose is this leaked key?")
    k.add_argument("key", type=Path, metavar="KEYFILE")
    k.add_argument("--vault", type=Path, required=True, help="vault.json (or the release dir)")
    k.set_defaults(run=_run_key)

    lb = sub.add_parser(
        "verify-labels",
        parents=[common],
        help="which licensee's key explains the labels a service gave for the triggers? (Eqn. 5)",
    )
    lb.add_argument(
        "observed",
        type=Path,
        metavar="OBSERVED.json",
        help='a JSON list, or {"labels": [...]}, in trigger order (null = no answer)',
    )
    lb.add_argument("--vault", type=Path, required=True, help="vault.json (or the release dir)")
    lb.add_argument(
        "--alpha",
        type=_alpha,
        default=DEFAULT_ALPHA,
        help=f"significance level (default {DEFAULT_ALPHA:g})",
    )
    lb.set_defaults(run=_run_labels)

    e = sub.add_parser(
        "export-triggers",
        parents=[common],
        help="write the trigger inputs as PNG + triggers.npy to query a service",
    )
    e.add_argument("--vault", type=Path, required=True, help="vault.json (or the release dir)")
    e.add_argument("--out", type=Path, required=True, help="output directory")
    e.set_defaults(run=_run_export)
    return parser


# ----------------------------------------------------------------------------- output


def _emit(args: argparse.Namespace, doc: dict[str, Any], text: Callable[[], list[str]]) -> None:
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write("\n".join(text()) + "\n")


def _p(log10_p: float) -> str:
    if log10_p == -math.inf:
        return "0"
    if log10_p > -300:
        return f"{10**log10_p:.3g}"
    return f"1e{log10_p:.0f}"


def _run_onnx(args: argparse.Namespace) -> int:
    from encryip_runtime.arbitrator.verify_onnx import verify_onnx

    v = verify_onnx(args.suspect, args.vault, args.alpha, manifest_path=args.manifest)

    def text() -> list[str]:
        lines = [
            f"verify-onnx {v.suspect}",
            f"  verdict:   {'OWNED' if v.owned else 'NOT PROVEN'}"
            + (f", licensee {v.licensee!r}" if v.licensee else ""),
            f"  {v.summary}",
            f"  p-value:   {_p(v.log10_p_value)} (bound; Bonferroni over "
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
                f"probe acc {acc:<6} p <= {_p(c.log10_p_value)}{tag}"
            )
        r = v.slot_recovery
        lines.append(f"  slot recovery: {r.detail}; p <= {_p(r.log10_p_value)}")
        lines.append(f"    null: {r.null}")
        w = v.weights
        if w is None:
            lines.append(
                "  weight fingerprint: not run (no fingerprint, base model or same shapes)"
            )
        else:
            lines.append(f"  weight fingerprint: {w.detail}")
            lines += [
                f"    {m.name:<20} z = {m.z:8.2f}  p <= {_p(m.log10_p_value)}" for m in w.licensees
            ]
            lines.append(f"    null: {w.null}")
        lines += [f"  note: {n}" for n in v.notes]
        return lines

    _emit(args, v.to_json(), text)
    return v.exit_code


def _run_key(args: argparse.Namespace) -> int:
    from encryip_runtime.arbitrator.verify_key import verify_key

    v = verify_key(args.key, args.vault)
    _emit(
        args,
        v.to_json(),
        lambda: [
            f"verify-key {v.key}",
            f"  verdict: {v.status.upper()}" + (f", licensee {v.licensee!r}" if v.licensee else ""),
            f"  {v.summary}",
            *(
                [f"  key generation: {v.generation} of {v.current_generation}"]
                if v.generation is not None
                else []
            ),
        ],
    )
    return v.exit_code


def _run_labels(args: argparse.Namespace) -> int:
    from encryip_runtime.arbitrator.verify_labels import verify_labels

    v = verify_labels(args.observed, args.vault, args.alpha)

    def text() -> list[str]:
        lines = [
            f"verify-labels {v.observed}",
            f"  verdict:   {'PROVEN' if v.proven else 'NOT PROVEN'}"
            + (f", licensee {v.licensee!r}" if v.licensee else ""),
            f"  {v.summary}",
            f"  p-value:   {_p(v.log10_p_value)} (binomial tail, chance {v.chance_per_trigger:.4g}"
            f" per trigger, Bonferroni over {len(v.licensees)} licensees)",
            f"  threshold: p < {v.alpha:g}; needs >= {v.min_matches} of {v.answered} answered "
            "triggers matching one licensee",
            f"  null:      {v.null}",
        ]
        many = v.current_generation > 1
        lines += [
            f"    {m.name:<20} {m.matches:>4}/{v.answered:<4} p <= {_p(m.log10_p_value)}"
            + (f"  (key generation {m.generation})" if many else "")
            for m in v.licensees
        ]
        return lines

    _emit(args, v.to_json(), text)
    return v.exit_code


def _run_export(args: argparse.Namespace) -> int:
    from encryip_runtime.arbitrator.export_triggers import export_triggers

    files = export_triggers(args.vault, args.out)
    _emit(
        args,
        {"command": "export-triggers", "files": [str(f) for f in files]},
        lambda: [
            f"wrote {len(files)} files to {args.out} (secret, 0600): query the suspect service "
            "with them, save the labels in trigger order as a JSON list, then run verify-labels",
        ],
    )
    return 0


# ----------------------------------------------------------------------------- main


def _setup(args: argparse.Namespace) -> None:
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    else:
        logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    from encryip_runtime.cli.runner import run_cli

    # Every failure is "no decision" (2): bad, corrupt or mismatched input.
    return run_cli(PROG, build_parser(), argv, error_code=lambda exc: 2, setup=_setup)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
