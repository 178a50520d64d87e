"""Corrupt one JSON field of a release file and check the loader names file and field."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from encryip_runtime.exceptions import FormatError

DELETE = object()
Path_ = tuple[Any, ...]


@dataclass(frozen=True)
class Corruption:
    """Set (or delete) ``where`` in the document; expect ``field`` to be named."""

    id: str
    where: Path_
    value: Any  # DELETE, a literal, or a callable old -> new (may read the whole doc)
    field: str
    profiles: tuple[str, ...] = ("paper", "secure")


def apply(doc: Any, where: Path_, value: Any) -> Any:
    doc = json.loads(json.dumps(doc))
    target = doc
    for k in where[:-1]:
        target = target[k]
    last = where[-1]
    if value is DELETE:
        del target[last]
    elif callable(value):
        target[last] = value(target[last], doc) if _arity(value) == 2 else value(target[last])
    else:
        target[last] = value
    return doc


def _arity(fn: Callable[..., Any]) -> int:
    import inspect

    return len(inspect.signature(fn).parameters)


def plain_text(src: Path) -> str:
    """The JSON text of ``src``; a sealed vault is opened (the test passphrase is set)."""
    from encryip_runtime.formats.vault_crypt import VAULT_ROLE, is_sealed, unseal

    raw = src.read_bytes()
    if is_sealed(raw):
        raw = unseal(raw, VAULT_ROLE, str(src))
    return raw.decode()


def write_corrupted(src: Path, out_dir: Path, c: Corruption) -> Path:
    doc = json.loads(plain_text(src))
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / src.name
    dst.write_text(json.dumps(apply(doc, c.where, c.value)))
    return dst


def expect_format_error(load: Callable[[Path], Any], path: Path, field: str) -> FormatError:
    with pytest.raises(FormatError) as info:
        load(path)
    err = info.value
    assert err.path == str(path), str(err)
    assert err.field == field, f"expected field {field!r}, got {err.field!r}: {err}"
    assert str(path) in str(err) and f"field '{field}'" in str(err)
    return err
