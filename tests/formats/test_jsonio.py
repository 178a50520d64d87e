"""Atomic, private writes of secret files; strict JSON reading."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from encryip_runtime.formats import LicenseeKey, Vault
from encryip_runtime.formats.jsonio import atomic_write_bytes, canonical_json, write_json


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize(("secret", "mode"), [(True, 0o600), (False, 0o644)])
def test_modes(tmp_path: Path, secret: bool, mode: int) -> None:
    p = tmp_path / "sub" / "f.json"
    old = os.umask(0)
    try:
        write_json(p, {"x": 1}, secret=secret)
    finally:
        os.umask(old)
    assert _mode(p) == mode
    assert p.read_text().strip().startswith("{")


def test_overwrite_keeps_secret_mode(tmp_path: Path) -> None:
    p = tmp_path / "k.key"
    p.write_text("old")
    p.chmod(0o644)
    atomic_write_bytes(p, b"new", secret=True)
    assert p.read_bytes() == b"new" and _mode(p) == 0o600


def test_temp_file_is_private_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        seen.append(_mode(Path(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write_bytes(tmp_path / "s.key", b"secret", secret=True)
    assert seen == [0o600]


def _crash(*_: Any) -> None:
    raise OSError(28, "No space left on device")


def _leftovers(d: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name not in keep)


@pytest.mark.parametrize("where", ["replace", "fsync", "open"])
def test_crash_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    p = tmp_path / "vault.json"
    p.write_bytes(b"OLD CONTENT")
    p.chmod(0o600)
    if where == "replace":
        monkeypatch.setattr(os, "replace", _crash)
    elif where == "fsync":
        monkeypatch.setattr(os, "fsync", _crash)
    else:

        def fdopen_then_crash(fd: int, *_: Any, **__: Any) -> Any:
            os.close(fd)
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fdopen", fdopen_then_crash)
    with pytest.raises(OSError):
        atomic_write_bytes(p, b"NEW CONTENT" * 1000, secret=True)
    assert p.read_bytes() == b"OLD CONTENT"
    assert _leftovers(tmp_path, {"vault.json"}) == []


def test_crash_during_key_save(
    secure_release: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = LicenseeKey.load(secure_release.key("acme"))
    dst = tmp_path / "keys" / "acme.key"
    key.save(dst)
    before = dst.read_bytes()
    other = LicenseeKey.load(secure_release.key("globex"))
    monkeypatch.setattr(os, "replace", _crash)
    with pytest.raises(OSError):
        other.save(dst)
    monkeypatch.undo()
    assert dst.read_bytes() == before
    assert LicenseeKey.load(dst).licensee == "acme"
    assert _leftovers(dst.parent, {"acme.key"}) == []


def test_crash_during_vault_save(
    secure_release: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v = Vault.load(secure_release.paths.vault)
    arrays = v.load_arrays(secure_release.paths.vault)
    v.save(tmp_path / "vault.json", arrays)
    before = {n: (tmp_path / n).read_bytes() for n in ("vault.json", "vault.npz")}
    monkeypatch.setattr(os, "replace", _crash)
    with pytest.raises(OSError):
        v.save(tmp_path / "vault.json", arrays)
    monkeypatch.undo()
    assert {n: (tmp_path / n).read_bytes() for n in before} == before
    assert _leftovers(tmp_path, set(before)) == []
    Vault.load(tmp_path / "vault.json").load_arrays(tmp_path / "vault.json")


def test_canonical_json_is_stable() -> None:
    a = canonical_json({"b": [1, 2], "a": {"y": "é", "x": None}})
    b = canonical_json({"a": {"x": None, "y": "é"}, "b": [1, 2]})
    assert a == b == b'{"a":{"x":null,"y":"\\u00e9"},"b":[1,2]}'
