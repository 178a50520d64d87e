"""``encryip keys add|rotate|list RELEASE``: manage licensee keys without retraining."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from encryip_runtime.cli.errors import CommandError, UsageError
from encryip_runtime.cli.vault import add_passphrase_argument

NAME = "keys"


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        NAME, parents=parents, help="add a licensee or rotate every key of a release (no training)"
    )
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
    ls = sub.add_parser("list", parents=parents, help="list the licensees of a release")
    ls.add_argument("release", type=Path, help="release directory (holds vault.json)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    add_passphrase_argument(ls)
    p.set_defaults(run=run)


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
            out = {
                "added": args.name,
                "key": str(key),
                "model_dir": str(release / "licensees" / args.name),
            }
            text = (
                f"added licensee {args.name}: key {key} (0600, hand it over privately), "
                f"model {release / 'licensees' / args.name}"
            )
        elif args.keys_command == "rotate":
            keys = rotate_keys(release)
            out = {"rotated": [str(k) for k in keys], "manifest": str(release / "manifest.json")}
            text = (
                f"rotated {len(keys)} keys; every old key stops working once servers load the new "
                f"manifests (rolling restart or SIGHUP). New keys: {', '.join(map(str, keys))}"
            )
        else:
            vault = Vault.load(release / "vault.json")
            out = {"licensees": [r.name for r in vault.licensees], "profile": vault.profile}
            text = "\n".join(r.name for r in vault.licensees)
    except EncryIPError as exc:
        raise CommandError(str(exc)) from None
    sys.stdout.write((json.dumps(out) if args.json else text) + "\n")
    return 0
