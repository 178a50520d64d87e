"""``encryip vault encrypt RELEASE``: seal a plaintext vault (vault.json + vault.npz).

Vaults written before encryption at rest are plaintext; they still read, with a
warning. This converts them in place (each file rewritten 0600, atomically), with the
passphrase from ``--passphrase-file``, ``ENCRYIP_VAULT_PASSPHRASE``,
``ENCRYIP_VAULT_KEY_FILE`` or a prompt. ``encryip vault status`` says which files are
sealed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from encryip_runtime.cli.errors import CommandError, UsageError
from encryip_runtime.cli.options import add_command, add_passphrase_argument

NAME = "vault"


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    summary = "the vault at rest: encrypt a plaintext vault, show whether it is sealed"
    p = add_command(subparsers, NAME, parents, run, summary, doc=__doc__)
    sub = p.add_subparsers(dest="vault_command", metavar="ACTION", required=True)
    for action, text in (
        ("encrypt", "seal a plaintext vault.json + vault.npz in place"),
        ("status", "which vault files are sealed"),
    ):
        a = sub.add_parser(action, parents=parents, help=text)
        a.add_argument("release", type=Path, help="release directory, or its vault.json")
        a.add_argument("--json", action="store_true", help="machine-readable output")
        add_passphrase_argument(a)


def _vault_files(release: Path) -> list[Path]:
    vault = release if release.is_file() else release / "vault.json"
    if not vault.is_file():
        raise UsageError(f"release: no vault.json at '{vault}'")
    files = [vault]
    npz = vault.parent / "vault.npz"
    if npz.is_file():
        files.append(npz)
    return files


def run(args: argparse.Namespace) -> int:
    from encryip_runtime.formats.vault_crypt import (
        ARRAYS_ROLE,
        VAULT_ROLE,
        check_vault_passphrase,
        is_sealed,
        read_vault_bytes,
        write_vault_bytes,
    )

    files = _vault_files(args.release)
    sealed = {str(f): is_sealed(f.read_bytes()[:64]) for f in files}
    if args.vault_command == "status":
        out: dict[str, Any] = {"files": sealed}
        text = "\n".join(f"{f}: {'sealed' if s else 'PLAINTEXT'}" for f, s in sealed.items())
    else:
        todo = [f for f in files if not sealed[str(f)]]
        if todo:
            check_vault_passphrase(new=True)
        try:
            for f in todo:
                role = ARRAYS_ROLE if f.suffix == ".npz" else VAULT_ROLE
                data = read_vault_bytes(f, role)
                write_vault_bytes(f, data, role)
                if read_vault_bytes(f, role) != data:  # pragma: no cover (defensive)
                    raise CommandError(f"{f}: the sealed file does not read back")
        except OSError as exc:
            raise CommandError(f"cannot rewrite: {exc}") from None
        out = {"encrypted": [str(f) for f in todo], "already_sealed": len(files) - len(todo)}
        text = f"sealed {', '.join(map(str, todo))}" if todo else "already sealed: nothing to do"
    sys.stdout.write((json.dumps(out) if args.json else text) + "\n")
    return 0
