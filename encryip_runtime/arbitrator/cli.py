"""``encryip-arbitrator``: verify-onnx, verify-key, verify-labels, verify-endpoint, export-triggers.

Exit codes: 0 = the claim is proven (owned / licensee named), 1 = not proven,
2 = no decision could be made (bad, corrupt or mismatched input; too few triggers
for --alpha). Plain text on stdout by default, ``--json`` for machines; errors on
stderr, a traceback only with ``--debug``. One module per command
(arbitrator/commands/); heavy imports happen inside them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from encryip_runtime.arbitrator import commands
from encryip_runtime.arbitrator.commands import COMMANDS
from encryip_runtime.cli.options import add_passphrase_argument

__all__ = ["build_parser", "main"]

PROG = "encryip-arbitrator"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    common.add_argument("--debug", action="store_true", help="tracebacks and debug logs")
    add_passphrase_argument(common)
    # every command reads the vault
    common.add_argument("--vault", type=Path, required=True, help="vault.json (or the release dir)")
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Prove that a leaked model, key or service is ours and name its licensee. "
        "Exit codes: 0 claim proven, 1 not proven, 2 bad input / no decision possible.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{commands.__name__}.{name}").register(sub, [common])
    return parser


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
