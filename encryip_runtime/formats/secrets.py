"""Secret-file checks, in one place: is there a key or the vault where it must not be?

The runtime serves a directory (model.onnx + manifest.json) and must never be handed
secret material. :func:`refuse_secret_material` reads the directory as a whole and
refuses it when anything under it is

- named like a secret: ``vault.json``, ``vault.npz``, ``*.key``, or any file in ``keys/``;
- secret by content, whatever its name: a JSON document that parses as a licensee key
  or a vault (by its ``format`` field or by its fields: ``sk`` with ``a``/``b``, or the
  trapdoor ``t`` beside ``licensees``), an npz holding the vault's arrays (trigger
  inputs, probe set), or a sealed (encrypted) vault file;
- a symlink that leads out of the directory (what it points to is not part of the
  release, and could be anything).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from encryip_runtime.exceptions import SecretMaterialError

__all__ = ["SEALED_MAGIC", "find_secret_material", "refuse_secret_material", "secret_kind"]

SECRET_NAMES = ("vault.json", "vault.npz")
# Sealed (encrypted-at-rest) vault files start with this (formats/vault_crypt.py).
SEALED_MAGIC = b"ENCRYIP-SEALED/"
_SECRET_FORMATS = ("encryip-key/", "encryip-vault/", "encryip-sealed/")
_VAULT_ARRAYS = {"trigger_inputs", "probe_inputs", "probe_labels"}
# Larger JSON is not parsed (a key or vault document is far smaller; the loaders refuse
# documents above their own limit anyway).
_MAX_JSON_BYTES = 256 * 1024 * 1024
# A release holds a handful of files; a tree far larger than this is not a release.
_MAX_ENTRIES = 10_000


def _looks_secret_json(doc: Any) -> bool:
    if not isinstance(doc, dict):
        return False
    fmt = doc.get("format")
    if isinstance(fmt, str) and fmt.startswith(_SECRET_FORMATS):
        return True
    sk = doc.get("sk")
    if isinstance(sk, dict) and {"a", "b"} <= set(sk):
        return True
    if "t" in doc and "licensees" in doc:
        return True
    licensees = doc.get("licensees")
    if isinstance(licensees, list):
        return any(isinstance(x, dict) and "sk" in x for x in licensees)
    return False


def secret_kind(path: Path) -> str | None:
    """What secret ``path`` holds by its content ("key or vault (JSON)", ...), or None."""
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
            if head.startswith(SEALED_MAGIC):
                return "sealed vault"
            if head.startswith(b"PK"):
                fh.seek(0)
                try:
                    with zipfile.ZipFile(fh) as z:
                        names = {n.removesuffix(".npy") for n in z.namelist()}
                except (zipfile.BadZipFile, OSError, ValueError):
                    return None
                return "vault arrays (npz)" if names & _VAULT_ARRAYS else None
            if not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
                return None
            if path.stat().st_size > _MAX_JSON_BYTES:
                return None
            fh.seek(0)
            raw = fh.read()
    except OSError:
        return None
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return "key or vault (JSON)" if _looks_secret_json(doc) else None


def find_secret_material(directory: Path) -> list[str]:
    """Every reason to refuse ``directory`` (empty when it holds nothing secret)."""
    root = Path(directory).resolve()
    found: list[str] = []
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            seen += 1
            if seen > _MAX_ENTRIES:
                found.append(f"{root}: more than {_MAX_ENTRIES} entries (not a release)")
                return found
            path = here / name
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root):
                    found.append(f"{path} (a symlink out of the directory, to {target})")
                    continue
                if target.is_dir():
                    continue  # its contents are walked where they really are
            if name in dirnames:
                continue
            rel = path.relative_to(root)
            if name in SECRET_NAMES or name.endswith(".key") or "keys" in rel.parts[:-1]:
                found.append(f"{path} (secret by name)")
                continue
            kind = secret_kind(path)
            if kind is not None:
                found.append(f"{path} ({kind}, whatever its name)")
    return found


def refuse_secret_material(directory: Path) -> None:
    """Raise ``SecretMaterialError`` if ``directory`` holds a key, the vault, or a link out."""
    found = find_secret_material(directory)
    if found:
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        raise SecretMaterialError(
            f"refusing to serve {directory}: {'; '.join(found[:5])}{more}. "
            "The runtime needs only model.onnx and manifest.json; serve a licensee directory "
            "(release/licensees/NAME) or copy those two files to a directory of their own."
        )
