"""The one runner behind ``encryip``, ``encryip-arbitrator`` and ``encryip-export``.

Each program builds its argparse parser (one module per command where it has several)
and hands it to :func:`run_cli`, which does what every program does the same way:

- an unknown flag is reported with the *subcommand's* usage (``encryip predict
  --bogus`` shows ``usage: encryip predict ...``), exit 2;
- gRPC's C-core log lines stay off stderr unless ``--debug`` (``GRPC_VERBOSITY``);
- ``--passphrase-file`` / ``--key-passphrase-file`` (where a command has them) are where
  the vault's / a sealed licensee key's passphrase comes from (formats/vault_crypt.py);
- errors print as ``PROG COMMAND: error: ...`` on stderr, one line per problem, a
  traceback only under ``--debug``; exit codes: a ``CommandError``'s own, else
  ``error_code(exc)`` (each program's convention), 130 on Ctrl-C;
- a reader that goes away (``encryip predict ... | head -1``) ends the program quietly
  (exit 141, as for SIGPIPE), never with "unexpected BrokenPipeError".
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from encryip_runtime.cli.errors import CommandError

__all__ = ["default_error_code", "report", "run_cli", "subcommand_parser"]

EXIT_BROKEN_PIPE = 141


def report(prog: str, command: str, problems: Sequence[str]) -> None:
    """``PROG COMMAND: error: PROBLEM`` on stderr, one line per problem."""
    where = f"{prog} {command}".strip()
    for problem in problems:
        print(f"{where}: error: {problem}", file=sys.stderr)


def subcommand_parser(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The innermost (sub)parser that ``args`` went through (``encryip keys add``)."""
    current = parser
    while True:
        actions = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions:
            return current
        chosen = getattr(args, actions[0].dest, None)
        if chosen is None or chosen not in actions[0].choices:
            return current
        current = actions[0].choices[chosen]


def default_error_code(exc: BaseException) -> int:
    """``encryip``'s convention: 2 for refused secret material or bad input, else 1."""
    from encryip_runtime.exceptions import SecretMaterialError

    return 2 if isinstance(exc, SecretMaterialError) else 1


def _quiet_grpc() -> None:
    # Before grpc is imported: its C core otherwise logs add_port.cc /
    # ssl_transport_security.cc lines on stderr next to our own one-line errors.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    os.environ.setdefault("GRPC_TRACE", "")


def _silence_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def run_cli(
    prog: str,
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    *,
    error_code: Callable[[BaseException], int] = default_error_code,
    setup: Callable[[argparse.Namespace], None] | None = None,
    expected: tuple[type[BaseException], ...] = (),
) -> int:
    """Parse ``argv``, run ``args.run(args)`` and turn every failure into a message and an
    exit code. ``setup`` runs after parsing (logging, per-program checks); ``expected``:
    more exception types reported as plain errors, not as "unexpected"."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        subcommand_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    debug = bool(getattr(args, "debug", False))
    if not debug:
        _quiet_grpc()
    command = str(getattr(args, "command", "") or "")
    try:
        passphrase_file = getattr(args, "passphrase_file", None)
        key_passphrase_file = getattr(args, "key_passphrase_file", None)
        if passphrase_file is not None or key_passphrase_file is not None:
            from encryip_runtime.formats import vault_crypt

            if passphrase_file is not None:
                vault_crypt.use_passphrase_file(passphrase_file)
            if key_passphrase_file is not None:
                vault_crypt.use_key_passphrase_file(key_passphrase_file)
        if setup is not None:
            setup(args)
        code = int(args.run(args))
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except CommandError as exc:
        if debug:
            raise
        report(prog, command, exc.problems)
        return exc.exit_code
    except KeyboardInterrupt:
        report(prog, command, ["interrupted"])
        return 130
    except Exception as exc:
        if debug:
            raise
        from encryip_runtime.exceptions import EncryIPError

        if isinstance(exc, (EncryIPError, *expected)):
            message = str(exc)
        elif isinstance(exc, OSError) and exc.strerror:
            message = f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")
        else:
            message = f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"
        report(prog, command, [message])
        return error_code(exc)


def basic_logging(debug: bool, level: int = logging.WARNING, fmt: str | None = None) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else level,
        format=fmt or "%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
