"""``encryip-arbitrator export-triggers --vault V --out DIR``: the trigger inputs as
PNG + triggers.npy, to query a suspect service."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from encryip_runtime.arbitrator.commands import common
from encryip_runtime.cli.options import add_command

NAME = "export-triggers"


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    summary = "write the trigger inputs as PNG + triggers.npy to query a service"
    p = add_command(subparsers, NAME, parents, run, summary)
    p.add_argument("--out", type=Path, required=True, help="output directory")


def run(args: argparse.Namespace) -> int:
    from encryip_runtime.arbitrator.export_triggers import export_triggers

    files = export_triggers(args.vault, args.out)
    common.emit(
        args,
        {"command": "export-triggers", "files": [str(f) for f in files]},
        lambda: [
            f"wrote {len(files)} files to {args.out} (secret, 0600): query the suspect service "
            "with them, save the labels in trigger order as a JSON list, then run verify-labels",
        ],
    )
    return 0
