"""``encryip``: one dispatcher, one module per command (``serve``, ``predict``, ``info``,
``health``, ``decrypt``, ``keys``, ``vault``, ``tokens``, ``usage``).

A command module ``encryip_runtime.cli.<name>`` provides::

    def register(subparsers, parents) -> None    # p = add_command(subparsers, NAME,
                                                 #     parents, run, HELP) (cli/options.py)
    def run(args: argparse.Namespace) -> int     # the exit code

Modules keep heavy imports (numpy, grpc, onnxruntime) inside ``run`` so ``--help`` is
fast. Commands raise ``CommandError``/``UsageError`` listing every problem; the shared
runner (cli/runner.py) prints them on stderr and exits non-zero, with a traceback only
under ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from encryip_runtime import __version__
from encryip_runtime.cli.runner import run_cli

__all__ = ["COMMANDS", "build_parser", "main"]

# Order of `encryip --help`; each is the module encryip_runtime.cli.<name>.
COMMANDS: tuple[str, ...] = (
    "serve", "predict", "info", "health", "decrypt", "keys", "vault", "tokens", "usage",
)  # fmt: skip

PROG = "encryip"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=False, help="show tracebacks and debug logs"
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="EncryIP runtime: serve confused labels, predict and decrypt them locally.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.{name}").register(sub, [common])
    return parser


def _setup(args: argparse.Namespace) -> None:
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, build_parser(), argv, setup=_setup)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
