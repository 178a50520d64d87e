"""Strict JSON reading with errors that name file and field; atomic, private writes."""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from encryip_runtime.exceptions import EncodingError, FormatError

__all__ = [
    "Fields",
    "atomic_write_bytes",
    "canonical_json",
    "json_bytes",
    "parse_json_document",
    "read_json_document",
    "sha256_file",
    "write_json",
]

T = TypeVar("T")
MAX_DOCUMENT_BYTES = 256 * 1024 * 1024


def canonical_json(doc: Any) -> bytes:
    """The canonical byte form used for digests (sorted keys, no whitespace)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes, *, secret: bool = False) -> None:
    """Write via a temp file in the same folder + fsync + rename; 0600 when ``secret``.

    The temp file is created 0600 from the start, so secret bytes are never
    readable by others, not even for a moment.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600 if secret else 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):
        dfd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def json_bytes(doc: Any) -> bytes:
    """The bytes ``write_json`` writes (indented, keys in the given order)."""
    return (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode()


def write_json(path: Path, doc: Any, *, secret: bool = False) -> None:
    atomic_write_bytes(path, json_bytes(doc), secret=secret)


def read_json_document(path: Path, expected_format: str | tuple[str, ...]) -> Fields:
    """Read a JSON object whose ``format`` field must equal ``expected_format`` (or one
    of several accepted versions)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FormatError("file not found", path=str(path)) from None
    except OSError as exc:
        raise FormatError(f"cannot read: {exc.strerror}", path=str(path)) from None
    if size > MAX_DOCUMENT_BYTES:
        raise FormatError(f"file too large ({size} bytes)", path=str(path))
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FormatError(f"cannot read: {exc.strerror}", path=str(path)) from None
    return parse_json_document(raw, path, expected_format)


def parse_json_document(raw: bytes, path: Path, expected_format: str | tuple[str, ...]) -> Fields:
    """Parse the bytes of a JSON document read from ``path`` (named in every error)."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise FormatError(f"file too large ({len(raw)} bytes)", path=str(path))
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise FormatError("not UTF-8 text", path=str(path)) from None
    except json.JSONDecodeError as exc:
        raise FormatError(
            # json's own messages may end in "at" ("Invalid control character at").
            f"not valid JSON ({exc.msg.removesuffix(' at')} at line {exc.lineno}, "
            f"column {exc.colno})",
            path=str(path),
        ) from None
    fields = Fields(doc, str(path), "")
    fmt = fields.str("format")
    accepted = (expected_format,) if isinstance(expected_format, str) else expected_format
    if fmt not in accepted:
        want = " or ".join(repr(a) for a in accepted)
        raise FormatError(f"expected {want}, got {fmt!r}", path=str(path), field="format")
    return fields


class Fields:
    """A typed view of one JSON object; every accessor names file and field on error."""

    def __init__(self, obj: Any, path: builtins.str, prefix: builtins.str):
        if not isinstance(obj, dict):
            raise FormatError(
                f"expected a JSON object, got {type(obj).__name__}", path=path, field=prefix or None
            )
        self.obj = obj
        self.path = path
        self.prefix = prefix

    def _name(self, key: builtins.str) -> builtins.str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: builtins.str, message: builtins.str) -> FormatError:
        return FormatError(message, path=self.path, field=self._name(key))

    def has(self, key: builtins.str) -> bool:
        return key in self.obj and self.obj[key] is not None

    def raw(self, key: builtins.str) -> Any:
        if key not in self.obj:
            raise self.error(key, "missing")
        return self.obj[key]

    def str(self, key: builtins.str) -> builtins.str:
        v = self.raw(key)
        if not isinstance(v, str):
            raise self.error(key, f"expected a string, got {type(v).__name__}")
        return v

    def int(
        self, key: builtins.str, *, lo: builtins.int | None = None, hi: builtins.int | None = None
    ) -> builtins.int:
        v = self.raw(key)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(key, f"expected an integer, got {type(v).__name__}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.error(key, f"value {v} out of range [{lo}, {hi}]")
        return v

    def list(self, key: builtins.str, *, length: builtins.int | None = None) -> builtins.list[Any]:
        v = self.raw(key)
        if not isinstance(v, list):
            raise self.error(key, f"expected a list, got {type(v).__name__}")
        if length is not None and len(v) != length:
            raise self.error(key, f"expected {length} items, got {len(v)}")
        return v

    def obj_(self, key: builtins.str) -> Fields:
        return Fields(self.raw(key), self.path, self._name(key))

    def int_list(
        self,
        key: builtins.str,
        *,
        length: builtins.int | None = None,
        lo: builtins.int = 0,
        hi: builtins.int | None = None,
    ) -> builtins.list[builtins.int]:
        items = self.list(key, length=length)
        for i, v in enumerate(items):
            if isinstance(v, bool) or not isinstance(v, int):
                raise self.error(f"{key}[{i}]", f"expected an integer, got {type(v).__name__}")
            if v < lo or (hi is not None and v > hi):
                raise self.error(f"{key}[{i}]", f"value {v} out of range [{lo}, {hi}]")
        return items

    def str_list(
        self, key: builtins.str, *, length: builtins.int | None = None
    ) -> builtins.list[builtins.str]:
        items = self.list(key, length=length)
        for i, v in enumerate(items):
            if not isinstance(v, str):
                raise self.error(f"{key}[{i}]", f"expected a string, got {type(v).__name__}")
        return items

    def permutation(self, key: builtins.str, size: builtins.int) -> builtins.list[builtins.int]:
        items = self.int_list(key, length=size, hi=size - 1)
        if len(set(items)) != size:
            raise self.error(key, f"not a permutation of 0..{size - 1}")
        return items

    def parse(self, key: builtins.str, parser: Callable[[Any], T]) -> T:
        """Run a decoder (e.g. an element or scalar parser) and name the field if it fails."""
        try:
            return parser(self.raw(key))
        except EncodingError as exc:
            raise self.error(key, str(exc)) from None
