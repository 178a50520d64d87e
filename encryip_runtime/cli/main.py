"""``encryip``: one dispatcher, one module per command (``serve``, ``predict``, ``info``,
``decrypt``, ``keys``, ``tokens``, ``usage``).

A command module ``encryip_runtime.cli.<name>`` provides::

    def register(subparsers, parents) -> None    # add_parser(name, parents=parents, ...)
                                                 # and set_defaults(run=run)
    def run(args: argparse.Namespace) -> int     # the exit code

Modules keep heavy imports (numpy, grpc, onnxruntime) inside ``run`` so ``--help`` is
fast. Commands raise ``CommandError``/``UsageError`` listing every problem; ``main``
prints them on stderr and exits non-zero, with a traceback only under ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from encryip_runtime import __version__
from encryip_runtime.cli.errors import CommandError

__all__ = ["COMMANDS", "build_parser", "main"]

# Order of `encryip --help`. A listed module that does not exist yet is skipped.
COMMANDS: tuple[str, ...] = ("serve", "predict", "info", "decrypt", "keys", "tokens", "usage")

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
        module_name = f"{__package__}.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.register(sub, [common])
    return parser


def _report(command: str, problems: Sequence[str]) -> None:
    for problem in problems:
        print(f"{PROG} {command}: error: {problem}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    command = str(args.command)
    try:
        return int(args.run(args))
    except CommandError as exc:
        if debug:
            raise
        _report(command, exc.problems)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG} {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        from encryip_runtime.exceptions import EncryIPError, SecretMaterialError

        if isinstance(exc, EncryIPError):
            _report(command, [str(exc)])
            return 2 if isinstance(exc, SecretMaterialError) else 1
        _report(command, [f"unexpected {type(exc).__name__}: {exc} (run with --debug for details)"])
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
