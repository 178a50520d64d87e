"""``encryip decrypt --key KEY (--ciphertext HEX... | --predictions FILE)``: decrypt offline.

``--predictions`` reads what ``encryip predict --json`` printed (or a JSON list of rows
with a ``ciphertext``, or of hex strings). The key must belong to the public key the
predictions name (their ``pk_fingerprint``), and to ``--manifest``'s or ``--pk``'s when
given: a key of another public key is refused before anything is decrypted.

Whatever the key, every ciphertext decrypts to some label: nothing here tells a trigger
(a Fake ciphertext) from an ordinary one (docs/security.md, "Decryption never rejects").
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from encryip_runtime.cli.errors import CommandError, UsageError
from encryip_runtime.cli.options import add_command, add_key_passphrase_argument

NAME = "decrypt"
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(
        subparsers, NAME, parents, run, "decrypt confused labels (hex) with a licensee key"
    )
    p.add_argument("--key", type=Path, required=True, help="licensee key file")
    add_key_passphrase_argument(p)
    p.add_argument(
        "--ciphertext",
        nargs="+",
        metavar="HEX",
        help="wire ciphertexts in hex ('-' reads them from stdin, one per line)",
    )
    p.add_argument(
        "--predictions",
        metavar="FILE",
        help="JSON printed by `encryip predict --json` ('-' reads stdin)",
    )
    p.add_argument(
        "--manifest",
        type=Path,
        help="manifest.json of the deployment: refuse a key of another public key",
    )
    p.add_argument(
        "--pk",
        metavar="FINGERPRINT",
        help="public-key fingerprint (64 hex, as `predict --json` prints it): refuse a key "
        "of another public key",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def _read_predictions(source: str, problems: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Hex ciphertexts and the header fields (pk_fingerprint, ...) of a predictions file."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        doc = json.loads(text)
    except OSError as exc:
        problems.append(f"--predictions: cannot read '{source}': {exc.strerror}")
        return [], {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"--predictions: '{source}' is not JSON ({exc})")
        return [], {}
    header: dict[str, Any] = {}
    rows = doc
    if isinstance(doc, dict):
        header = {k: v for k, v in doc.items() if k != "predictions"}
        rows = doc.get("predictions")
    if not isinstance(rows, list):
        problems.append(f"--predictions: '{source}' has no list of predictions")
        return [], header
    texts: list[str] = []
    for i, row in enumerate(rows):
        ct = row.get("ciphertext") if isinstance(row, dict) else row
        if not isinstance(ct, str):
            problems.append(f"--predictions: row {i}: no 'ciphertext' hex string")
            continue
        texts.append(ct.strip())
    return texts, header


def run(args: argparse.Namespace) -> int:
    from encryip_runtime.client import decrypt_batch
    from encryip_runtime.exceptions import EncodingError, EncryIPError
    from encryip_runtime.formats.keyfile import LicenseeKey
    from encryip_runtime.formats.manifest import Manifest

    problems: list[str] = []
    texts: list[str] = []
    header: dict[str, Any] = {}
    if (args.ciphertext is None) == (args.predictions is None):
        problems.append("--ciphertext/--predictions: give exactly one")
    for item in args.ciphertext or ():
        if item == "-":
            texts.extend(line.strip() for line in sys.stdin if line.strip())
        else:
            texts.append(item.strip())
    if args.predictions is not None:
        texts, header = _read_predictions(args.predictions, problems)
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
    # The public keys the key must belong to: the predictions', the manifest's, --pk.
    expected: list[tuple[str, str]] = []
    fp = header.get("pk_fingerprint")
    if fp is not None:
        if isinstance(fp, str) and _FINGERPRINT.fullmatch(fp.lower()):
            expected.append((fp.lower(), f"the predictions ({args.predictions})"))
        else:
            problems.append("--predictions: 'pk_fingerprint' is not 64 hex digits")
    if args.manifest is not None:
        try:
            manifest = Manifest.load(args.manifest)
            expected.append((manifest.pk_fingerprint, f"--manifest '{args.manifest}'"))
        except OSError as exc:
            problems.append(f"--manifest: cannot read '{args.manifest}': {exc.strerror}")
        except EncryIPError as exc:
            problems.append(f"--manifest: {exc}")
    if args.pk is not None:
        if _FINGERPRINT.fullmatch(args.pk.strip().lower()):
            expected.append((args.pk.strip().lower(), "--pk"))
        else:
            problems.append(f"--pk: not a 64-hex-digit fingerprint: {args.pk[:70]!r}")
    if key is not None:
        w = key.scheme.ciphertext_size
        claimed = header.get("ciphertext_size")
        if claimed is not None and claimed != w:
            problems.append(
                f"--predictions: ciphertexts of {claimed} bytes, a {key.profile} key "
                f"decrypts {w}-byte ciphertexts"
            )
        for i, blob in blobs:
            if len(blob) != w:
                problems.append(
                    f"--ciphertext #{i + 1}: {len(blob)} bytes, a {key.profile} ciphertext has {w}"
                )
    if not texts and not problems:
        problems.append("--ciphertext: none given")
    if problems or key is None:
        raise UsageError(problems)
    for want, source in expected:
        if want != key.pk_fingerprint:
            raise CommandError(
                f"--key '{args.key}' (licensee {key.licensee!r}, pk {key.pk_fingerprint[:16]}…) "
                f"does not belong to the public key of {source} (pk {want[:16]}…): it would "
                "decrypt these ciphertexts to meaningless labels. Use the key of that deployment."
            )
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
