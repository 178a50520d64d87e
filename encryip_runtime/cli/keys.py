"""``encryip keys add|rotate|list RELEASE``: manage licensee keys without retraining."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from encryip_runtime.cli.errors import CommandError, UsageError
from encryip_runtime.cli.options import add_command, add_passphrase_argument

NAME = "keys"


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    summary = "add a licensee or rotate every key of a release (no training)"
    p = add_command(subparsers, NAME, parents, run, summary)
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    add = sub.add_parser(
        "add", parents=parents, help="issue a key and a permuted model to a new licensee"
    )
    add.add_argument("release", type=Path, help="release directory (holds vault.json)")
    add.add_argument("name", help="the new licensee's name (letters, digits, '_', '.', '-')")
    add.add_argument("--json", action="store_true", help="machine-readable output")
    add_passphrase_argument(add)
    rot = sub.add_parser(
        "rotate",
        parents=parents,
        help="secure profile: new key family and codebook; every old key stops working",
    )
    rot.add_argument("release", type=Path, help="release directory (holds vault.json)")
    rot.add_argument("--json", action="store_true", help="machine-readable output")
    add_passphrase_argument(rot)
    seal = sub.add_parser(
        "seal",
        parents=parents,
        help="optional: encrypt licensee key files in place (they stay plaintext by default); "
        "they then need ENCRYIP_KEY_PASSPHRASE, --key-passphrase-file or a prompt to load",
    )
    seal.add_argument("keyfiles", type=Path, nargs="+", metavar="KEYFILE")
    seal.add_argument(
        "--key-passphrase-file",
        type=Path,
        default=None,
        help="file whose first line is the new passphrase (else ENCRYIP_KEY_PASSPHRASE, "
        "or a prompt on a terminal)",
    )
    seal.add_argument("--json", action="store_true", help="machine-readable output")
    ls = sub.add_parser("list", parents=parents, help="list the licensees of a release")
    ls.add_argument("release", type=Path, help="release directory (holds vault.json)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    add_passphrase_argument(ls)


def _check_release(release: Path) -> None:
    problems = []
    if not release.is_dir():
        problems.append(f"release: '{release}' is not a directory")
    else:
        for name in ("manifest.json", "model.onnx", "vault.json"):
            if not (release / name).is_file():
                problems.append(f"release: '{release / name}' is missing")
    if problems:
        raise UsageError(problems)


def run(args: argparse.Namespace) -> int:
    from encryip_runtime.exceptions import EncryIPError
    from encryip_runtime.formats.vault import Vault
    from encryip_runtime.formats.vault_crypt import check_vault_passphrase
    from encryip_runtime.release import add_licensee, rotate_keys

    if args.keys_command == "seal":
        return _seal(args)
    release: Path = args.release
    _check_release(release)
    try:
        if args.keys_command in ("add", "rotate"):
            # They rewrite the vault at the end: no passphrase, no work at all.
            check_vault_passphrase()
        if args.keys_command == "add":
            try:
                key = add_licensee(release, args.name)
            except ValueError as exc:
                raise UsageError(f"name: {exc}") from None
            gen = Vault.load(release / "vault.json").generation
            out = {
                "added": args.name,
                "key": str(key),
                "model_dir": str(release / "licensees" / args.name),
                "generation": gen,
            }
            text = (
                f"added licensee {args.name} to key generation {gen}: key {key} (0600, hand it "
                f"over privately), model {release / 'licensees' / args.name}"
            )
        elif args.keys_command == "rotate":
            keys = rotate_keys(release)
            gen = Vault.load(release / "vault.json").generation
            out = {
                "rotated": [str(k) for k in keys],
                "manifest": str(release / "manifest.json"),
                "generation": gen,
            }
            text = (
                f"rotated {len(keys)} keys to key generation {gen} (the vault keeps generations "
                f"1-{gen} for the arbitrator); every old key stops working once servers load the "
                f"new manifests (rolling restart or SIGHUP). New keys: {', '.join(map(str, keys))}"
            )
        else:
            vault = Vault.load(release / "vault.json")
            out = {
                "licensees": [r.name for r in vault.licensees],
                "profile": vault.profile,
                "generation": vault.generation,
            }
            text = "\n".join(r.name for r in vault.licensees)
    except EncryIPError as exc:
        raise CommandError(str(exc)) from None
    sys.stdout.write((json.dumps(out) if args.json else text) + "\n")
    return 0


def _seal(args: argparse.Namespace) -> int:
    """Seal each key file in place (0600); already sealed ones are left alone."""
    from encryip_runtime.exceptions import EncryIPError
    from encryip_runtime.formats.jsonio import atomic_write_bytes
    from encryip_runtime.formats.keyfile import LicenseeKey
    from encryip_runtime.formats.vault_crypt import KEY_ROLE, is_sealed, seal

    sealed, skipped = [], []
    try:
        for path in args.keyfiles:
            raw = path.read_bytes()
            if is_sealed(raw):
                skipped.append(str(path))
                continue
            LicenseeKey.load(path)  # only a valid key file is sealed
            atomic_write_bytes(path, seal(raw, KEY_ROLE), secret=True)
            LicenseeKey.load(path)  # and it opens again with the passphrase just used
            sealed.append(str(path))
    except OSError as exc:
        raise CommandError(f"{exc.filename}: {exc.strerror}") from None
    except EncryIPError as exc:
        raise CommandError(str(exc)) from None
    out = {"sealed": sealed, "already_sealed": skipped}
    text = f"sealed {len(sealed)} key file(s)" + (
        f"; already sealed: {', '.join(skipped)}" if skipped else ""
    )
    sys.stdout.write((json.dumps(out) if args.json else text) + "\n")
    return 0
