"""``encryip decrypt --key KEY --ciphertext HEX...``: decrypt confused labels offline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from encryip_runtime.cli.errors import CommandError, UsageError

NAME = "decrypt"


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        NAME, parents=parents, help="decrypt confused labels (hex) with a licensee key"
    )
    p.add_argument("--key", type=Path, required=True, help="licensee key file")
    p.add_argument(
        "--key-passphrase-file",
        type=Path,
        default=None,
        help="only for a key sealed with `encryip keys seal`: file whose first line is its "
        "passphrase (else ENCRYIP_KEY_PASSPHRASE, or a prompt on a terminal)",
    )
    p.add_argument(
        "--ciphertext",
        nargs="+",
        required=True,
        metavar="HEX",
        help="wire ciphertexts in hex ('-' reads them from stdin, one per line)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from encryip_runtime.client import decrypt_batch
    from encryip_runtime.exceptions import EncodingError, EncryIPError
    from encryip_runtime.formats.keyfile import LicenseeKey

    problems: list[str] = []
    texts: list[str] = []
    for item in args.ciphertext:
        if item == "-":
            texts.extend(line.strip() for line in sys.stdin if line.strip())
        else:
            texts.append(item.strip())
    blobs: list[tuple[int, bytes]] = []
    for i, text in enumerate(texts):
        try:
            blobs.append((i, bytes.fromhex(text)))
        except ValueError:
            problems.append(f"--ciphertext #{i + 1}: not hex: {text[:40]!r}")
    key = None
    try:
        key = LicenseeKey.load(args.key)
    except OSError as exc:
        problems.append(f"--key: cannot read '{args.key}': {exc.strerror}")
    except EncryIPError as exc:
        problems.append(f"--key: {exc}")
    if key is not None:
        w = key.scheme.ciphertext_size
        for i, blob in blobs:
            if len(blob) != w:
                problems.append(
                    f"--ciphertext #{i + 1}: {len(blob)} bytes, a {key.profile} ciphertext has {w}"
                )
    if not texts:
        problems.append("--ciphertext: none given")
    if problems or key is None:
        raise UsageError(problems)
    try:
        labels = decrypt_batch([b for _, b in blobs], key)
    except EncodingError as exc:
        raise CommandError(f"--ciphertext: {exc}") from None
    rows = [
        {"ciphertext": t, "label": int(y), "class_name": key.class_names[int(y)]}
        for t, y in zip(texts, labels, strict=True)
    ]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for r in rows:
            print(f"{r['label']}\t{r['class_name']}")
    return 0
