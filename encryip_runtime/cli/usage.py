"""``encryip usage``: per-licensee requests and rows for billing, as JSON or CSV.

Reads the server's usage ledger (``--usage-file`` of ``encryip serve``; counts survive
restarts) or, with ``--metrics-url``, the live counters of a running server's
Prometheus endpoint (since that process started).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from encryip_runtime.cli.errors import CommandError, UsageError
from encryip_runtime.cli.options import add_command

NAME = "usage"
OUTCOMES = ("ok", "error", "refused")


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(
        subparsers, NAME, parents, run, "per-licensee requests and rows (billing export)"
    )
    p.add_argument(
        "usage_file", nargs="?", type=Path, metavar="USAGE_FILE",
        help="the server's --usage-file ledger",
    )  # fmt: skip
    p.add_argument(
        "--metrics-url", help="read a running server's counters instead (http://HOST:9090/metrics)"
    )
    p.add_argument(
        "--format", choices=("json", "csv"), default="json", help="output format (default json)"
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds for --metrics-url")


def from_metrics(text: str) -> dict[str, Any]:
    """The ledger's shape from Prometheus text (``encryip_licensee_*`` counters)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.labels.get("licensee")
            if name is None:
                continue
            acct = out.setdefault(name, {"requests": {}, "rows": 0})
            if sample.name == "encryip_licensee_requests_total":
                outcome = sample.labels.get("outcome", "ok")
                acct["requests"][outcome] = int(sample.value)
            elif sample.name == "encryip_licensee_rows_total":
                acct["rows"] = int(sample.value)
    return {"format": "encryip-usage/1", "since": "process start", "updated": "",
            "licensees": dict(sorted(out.items()))}  # fmt: skip


def to_csv(doc: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["licensee", *(f"requests_{o}" for o in OUTCOMES), "rows", "since", "updated"])
    for name, acct in doc["licensees"].items():
        req = acct["requests"]
        w.writerow([name, *(req.get(o, 0) for o in OUTCOMES), acct["rows"], doc["since"],
                    doc["updated"]])  # fmt: skip
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    from encryip_runtime.exceptions import EncryIPError

    if (args.usage_file is None) == (args.metrics_url is None):
        raise UsageError("give USAGE_FILE or --metrics-url (one of them)")
    if args.metrics_url is not None:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(args.metrics_url, timeout=args.timeout) as resp:
                doc = from_metrics(resp.read().decode("utf-8", "replace"))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise CommandError(f"--metrics-url: cannot read {args.metrics_url}: {exc}") from None
    else:
        from encryip_runtime.server.licensees import read_usage

        try:
            doc = read_usage(args.usage_file)
        except EncryIPError as exc:
            raise CommandError(str(exc)) from None
    if args.format == "csv":
        sys.stdout.write(to_csv(doc))
    else:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    return 0
