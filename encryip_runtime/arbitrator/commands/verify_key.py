"""``encryip-arbitrator verify-key KEYFILE --vault V``: whose is this leaked key?"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from encryip_runtime.arbitrator.commands import common
from encryip_runtime.cli.options import add_command

NAME = "verify-key"


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(subparsers, NAME, parents, run, "whose is this leaked key?")
    p.add_argument("key", type=Path, metavar="KEYFILE")


def run(args: argparse.Namespace) -> int:
    from encryip_runtime.arbitrator.verify_key import verify_key

    v = verify_key(args.key, args.vault)
    common.emit(
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
