"""``encryip-arbitrator``: verify-onnx, verify-key, verify-labels, verify-endpoint,
export-triggers.

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

    ep = sub.add_parser(
        "verify-endpoint",
        parents=[common],
        help="query a live service (v2 gRPC/REST or encryip.v1): is it ours, whose is it?",
    )
    ep.add_argument(
        "url",
        metavar="URL",
        help="grpc://HOST:PORT or grpcs:// (v2 gRPC or encryip.v1, detected), "
        "http://HOST:PORT or https:// (v2 REST); bare HOST:PORT is gRPC",
    )
    ep.add_argument("--vault", type=Path, required=True, help="vault.json (or the release dir)")
    ep.add_argument("--model", default=None, help="model name on a v2 server")
    ep.add_argument(
        "--alpha", type=_alpha, default=DEFAULT_ALPHA,
        help=f"significance level (default {DEFAULT_ALPHA:g})",
    )  # fmt: skip
    ep.add_argument(
        "--max-queries", type=_positive_int, default=1000,
        help="most inputs sent, triggers included (default 1000)",
    )  # fmt: skip
    ep.add_argument(
        "--probes", type=_non_negative_int, default=256,
        help="probe-set inputs sent beside the triggers, within --max-queries (default 256)",
    )  # fmt: skip
    ep.add_argument(
        "--qps", type=_positive_float, default=20.0, help="queries per second (default 20)"
    )
    ep.add_argument(
        "--timeout", type=_positive_float, default=10.0, help="seconds per query (default 10)"
    )
    ep.add_argument("--ca-cert", type=Path, help="PEM root certificate(s) of the server (TLS)")
    ep.add_argument("--client-cert", type=Path, help="PEM client certificate (mTLS)")
    ep.add_argument("--client-key", type=Path, help="PEM client private key (mTLS)")
    ep.add_argument(
        "--token-file", type=Path, help="file with a bearer token (or env ENCRYIP_TOKEN)"
    )
    ep.add_argument("--output", default=None, help="output tensor to read (default: the first)")
    ep.add_argument(
        "--protocol", choices=("auto", "encryip.v1", "v2"), default="auto",
        help="gRPC URLs: use this service instead of detecting it (default auto: encryip.v1 "
        "when the server offers it, else v2)",
    )  # fmt: skip
    ep.add_argument(
        "--release", type=Path, default=None,
        help="release dir whose licensees/*/manifest.json name a deployment that reports its "
        "manifest (default: the vault's directory)",
    )  # fmt: skip
    ep.set_defaults(run=_run_endpoint)

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


def _run_endpoint(args: argparse.Namespace) -> int:
    import os

    from encryip_runtime.arbitrator.endpoint import TlsOptions
    from encryip_runtime.arbitrator.verify_endpoint import verify_endpoint
    from encryip_runtime.exceptions import EncryIPError

    problems = []
    if (args.client_cert is None) != (args.client_key is None):
        problems.append("--client-cert/--client-key: give both or neither")
    token = os.environ.get("ENCRYIP_TOKEN") or None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"--token-file: cannot read '{args.token_file}': {exc}")
        if not token:
            problems.append(f"--token-file: '{args.token_file}' is empty")
    for flag in ("ca_cert", "client_cert", "client_key"):
        path = getattr(args, flag)
        if path is not None and not path.is_file():
            problems.append(f"--{flag.replace('_', '-')}: no such file: '{path}'")
    if problems:
        raise EncryIPError("; ".join(problems))
    v = verify_endpoint(
        args.url,
        args.vault,
        model=args.model,
        alpha=args.alpha,
        max_queries=args.max_queries,
        probes=args.probes,
        qps=args.qps,
        timeout_s=args.timeout,
        tls=TlsOptions(args.ca_cert, args.client_cert, args.client_key, token),
        output_name=args.output,
        release=args.release,
        protocol=args.protocol,
    )

    def text() -> list[str]:
        lines = [
            f"verify-endpoint {v.url} ({v.protocol}, model {v.model!r})",
            f"  verdict:   {'OWNED' if v.owned else 'NOT PROVEN'}"
            + (f", licensee {v.licensee!r}" if v.licensee else ""),
            f"  {v.summary}",
            f"  answers:   {v.answers}; {v.queries_sent} queries ({v.num_triggers} triggers, "
            f"{v.probes_sent} probes, {v.failed_queries} failed) in {v.seconds:.1f} s",
            f"  p-value:   {_p(v.log10_p_value)} (threshold {v.alpha:g})",
        ]
        lines += [f"  note: {n}" for n in v.notes]
        return lines

    _emit(args, v.to_json(), text)
    return v.exit_code


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return v


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0 or math.isinf(v):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return v


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
