"""What the commands of ``encryip`` and ``encryip-arbitrator`` declare alike: a command's
parser, and the passphrase options. One definition each, so that the flags and their help
read the same in every command."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_command", "add_key_passphrase_argument", "add_passphrase_argument"]


def add_command(
    subparsers: Any,
    name: str,
    parents: list[argparse.ArgumentParser],
    run: Callable[[argparse.Namespace], int],
    help: str,
    *,
    doc: str | None = None,
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """The parser of command ``name``, listed with ``help``; ``args.run`` is ``run``.

    ``doc`` (the command module's docstring) is its ``--help`` description with the line
    breaks kept; ``kwargs`` go to ``add_parser`` as they are."""
    if doc is not None:
        kwargs.update(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p: argparse.ArgumentParser = subparsers.add_parser(name, parents=parents, help=help, **kwargs)
    p.set_defaults(run=run)
    return p


def add_passphrase_argument(p: argparse._ActionsContainer, note: str = "") -> None:
    """``--passphrase-file``: where the vault's passphrase comes from (cli/runner.py)."""
    p.add_argument(
        "--passphrase-file",
        type=Path,
        default=None,
        help="file whose first line is the vault passphrase (else ENCRYIP_VAULT_PASSPHRASE, "
        f"ENCRYIP_VAULT_KEY_FILE, or a prompt on a terminal){note}",
    )


def add_key_passphrase_argument(p: argparse._ActionsContainer) -> None:
    """``--key-passphrase-file``: for a licensee key sealed with ``encryip keys seal``."""
    p.add_argument(
        "--key-passphrase-file",
        type=Path,
        default=None,
        help="only for a key sealed with `encryip keys seal`: file whose first line is its "
        "passphrase (else ENCRYIP_KEY_PASSPHRASE, or a prompt on a terminal)",
    )
