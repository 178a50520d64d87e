"""``encryip-arbitrator verify-endpoint URL --vault V``: query a live service (v2 gRPC or
REST, or encryip.v1) with the triggers and probes: is it ours, and whose is it?"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from encryip_runtime.arbitrator.commands import common
from encryip_runtime.arbitrator.commands.common import p_value
from encryip_runtime.cli.options import add_command

NAME = "verify-endpoint"


def _number(kind: type, *, lo: float, strict: bool) -> Any:
    """An argparse type: an int/float >= lo (> lo when ``strict``), finite."""

    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if (v <= lo if strict else v < lo) or math.isinf(v) or math.isnan(v):
            bound = f"more than {lo:g}" if strict else f"at least {lo:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text!r}")
        return v

    return parse


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    summary = "query a live service (v2 gRPC/REST or encryip.v1): is it ours, whose is it?"
    p = add_command(subparsers, NAME, parents, run, summary)
    p.add_argument(
        "url",
        metavar="URL",
        help="grpc://HOST:PORT or grpcs:// (v2 gRPC or encryip.v1, detected), "
        "http://HOST:PORT or https:// (v2 REST); bare HOST:PORT is gRPC",
    )
    p.add_argument("--model", default=None, help="model name on a v2 server")
    common.add_alpha_argument(p)
    p.add_argument(
        "--max-queries", type=_number(int, lo=1, strict=False), default=1000,
        help="most inputs sent, triggers included (default 1000)",
    )  # fmt: skip
    p.add_argument(
        "--probes", type=_number(int, lo=0, strict=False), default=256,
        help="probe-set inputs sent beside the triggers, within --max-queries (default 256)",
    )  # fmt: skip
    p.add_argument(
        "--qps", type=_number(float, lo=0, strict=True), default=20.0,
        help="queries per second (default 20)",
    )  # fmt: skip
    p.add_argument(
        "--timeout", type=_number(float, lo=0, strict=True), default=10.0,
        help="seconds per query (default 10)",
    )  # fmt: skip
    p.add_argument("--ca-cert", type=Path, help="PEM root certificate(s) of the server (TLS)")
    p.add_argument("--client-cert", type=Path, help="PEM client certificate (mTLS)")
    p.add_argument("--client-key", type=Path, help="PEM client private key (mTLS)")
    p.add_argument(
        "--token-file", type=Path, help="file with a bearer token (or env ENCRYIP_TOKEN)"
    )
    p.add_argument("--output", default=None, help="output tensor to read (default: the first)")
    p.add_argument(
        "--protocol", choices=("auto", "encryip.v1", "v2"), default="auto",
        help="gRPC URLs: use this service instead of detecting it (default auto: encryip.v1 "
        "when the server offers it, else v2)",
    )  # fmt: skip
    p.add_argument(
        "--release", type=Path, default=None,
        help="release dir whose licensees/*/manifest.json name a deployment that reports its "
        "manifest (default: the vault's directory)",
    )  # fmt: skip


def _token(args: argparse.Namespace, problems: list[str]) -> str | None:
    token = os.environ.get("ENCRYIP_TOKEN") or None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"--token-file: cannot read '{args.token_file}': {exc}")
        if not token:
            problems.append(f"--token-file: '{args.token_file}' is empty")
    return token


def run(args: argparse.Namespace) -> int:
    from encryip_runtime.arbitrator.endpoint import TlsOptions
    from encryip_runtime.arbitrator.verify_endpoint import verify_endpoint
    from encryip_runtime.exceptions import EncryIPError

    problems: list[str] = []
    if (args.client_cert is None) != (args.client_key is None):
        problems.append("--client-cert/--client-key: give both or neither")
    token = _token(args, problems)
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
        title = f"verify-endpoint {v.url} ({v.protocol}, model {v.model!r})"
        verdict = "OWNED" if v.owned else "NOT PROVEN"
        lines = [
            *common.verdict_lines(title, verdict, v.licensee, v.summary),
            f"  answers:   {v.answers}; {v.queries_sent} queries ({v.num_triggers} triggers, "
            f"{v.probes_sent} probes, {v.failed_queries} failed) in {v.seconds:.1f} s",
            f"  p-value:   {p_value(v.log10_p_value)} (threshold {v.alpha:g})",
        ]
        lines += [f"  note: {n}" for n in v.notes]
        return lines

    common.emit(args, v.to_json(), text)
    return v.exit_code
