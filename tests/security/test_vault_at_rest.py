"""The vault is encrypted at rest (formats/vault_crypt.py): sealed by default, opened
only with the passphrase, never written in plaintext, and no command waits for input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from encryip_runtime.exceptions import FormatError
from encryip_runtime.formats import vault_crypt
from encryip_runtime.formats.keyfile import LicenseeKey
from encryip_runtime.formats.vault import Vault
from encryip_runtime.formats.vault_crypt import (
    ARRAYS_ROLE,
    PASSPHRASE_ENV,
    VAULT_KEY_FILE_ENV,
    VAULT_ROLE,
    VaultSecretError,
    is_sealed,
    read_vault_bytes,
)

PASS = os.environ[PASSPHRASE_ENV]  # set for the whole suite by tests/conftest.py


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    vault_crypt.reset_for_tests()
    yield
    vault_crypt.reset_for_tests()


def _env_without_secret() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (PASSPHRASE_ENV, VAULT_KEY_FILE_ENV)}
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    return env


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "encryip_runtime.cli.main", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,  # no terminal: nothing may wait for a passphrase
        env=env,
    )


def test_release_vault_is_sealed_and_keys_are_not(secure_release: Any) -> None:
    root = secure_release.root
    for name in ("vault.json", "vault.npz"):
        raw = (root / name).read_bytes()
        assert is_sealed(raw), name
        assert b'"licensees"' not in raw and b"trigger_inputs" not in raw
    vault = Vault.load(root / "vault.json")
    t_hex = vault.scheme.group.scalar_to_json(vault.t)
    assert str(t_hex).encode() not in (root / "vault.json").read_bytes()
    assert len(vault.load_arrays(root / "vault.json").trigger_inputs) == vault.num_triggers
    key = secure_release.key("acme").read_bytes()  # licensee keys go to people: plaintext
    assert not is_sealed(key) and b'"sk"' in key
    LicenseeKey.load(secure_release.key("acme"))


def test_no_passphrase_no_terminal_fails_at_once(fresh_release: Any) -> None:
    """keys add would rewrite the vault: without a passphrase (and no TTY) it stops before
    any work, with a clear message, instead of hanging or writing plaintext."""
    root = fresh_release.root
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    t0 = time.monotonic()
    proc = _cli("keys", "add", str(root), "hooli", env=_env_without_secret())
    assert time.monotonic() - t0 < 60
    assert proc.returncode != 0
    assert PASSPHRASE_ENV in proc.stderr and "--passphrase-file" in proc.stderr
    assert "Traceback" not in proc.stderr
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before  # nothing written
    proc = _cli("keys", "list", str(root), env=_env_without_secret())
    assert proc.returncode != 0 and PASSPHRASE_ENV in proc.stderr


def test_wrong_passphrase_is_a_clear_error(secure_release: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "not-the-passphrase")
    with pytest.raises(VaultSecretError, match="wrong vault passphrase"):
        Vault.load(secure_release.root / "vault.json")
    monkeypatch.setenv(PASSPHRASE_ENV, "short")
    with pytest.raises(VaultSecretError, match="too short"):
        Vault.load(secure_release.root / "vault.json")


def test_tampered_or_swapped_files_do_not_open(secure_release: Any, tmp_path: Path) -> None:
    raw = bytearray((secure_release.root / "vault.json").read_bytes())
    raw[-5] ^= 1
    (tmp_path / "vault.json").write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="cannot decrypt"):
        Vault.load(tmp_path / "vault.json")
    # The role is bound: the sealed npz is not accepted as the vault document.
    shutil.copy(secure_release.root / "vault.npz", tmp_path / "vault.json")
    with pytest.raises(FormatError, match="sealed as 'vault-arrays'"):
        Vault.load(tmp_path / "vault.json")


def test_passphrase_file_and_envelope_key(
    secure_release: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    secret_file = tmp_path / "pass"
    secret_file.write_text(PASS + "\n")
    env = _env_without_secret()
    proc = subprocess.run(
        [sys.executable, "-m", "encryip_runtime.arbitrator.cli", "verify-key",
         str(secure_release.key("acme")), "--vault", str(secure_release.root),
         "--passphrase-file", str(secret_file)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "acme" in proc.stdout
    # Automation: a raw 32-byte envelope key from a file, no KDF.
    key_file = tmp_path / "vault.key32"
    key_file.write_text(os.urandom(32).hex())
    out = tmp_path / "rel"
    out.mkdir()
    v = Vault.load(secure_release.root / "vault.json")
    arrays = v.load_arrays(secure_release.root / "vault.json")
    monkeypatch.delenv(PASSPHRASE_ENV)
    monkeypatch.setenv(VAULT_KEY_FILE_ENV, str(key_file))
    v.save(out / "vault.json", arrays)
    header = (out / "vault.json").read_bytes().split(b"\n", 2)[1]
    assert b'"kdf": "raw-key"' in header
    assert Vault.load(out / "vault.json").licensees == v.licensees
    monkeypatch.delenv(VAULT_KEY_FILE_ENV)
    monkeypatch.setenv(PASSPHRASE_ENV, PASS)
    with pytest.raises(VaultSecretError, match="sealed with the envelope key"):
        Vault.load(out / "vault.json")


def test_plaintext_vault_reads_with_a_warning_and_converts(
    secure_release: Any, tmp_path: Path, capfd: Any
) -> None:
    """Migration: a vault from before encryption at rest still reads (warning), and
    `encryip vault encrypt` seals it in place."""
    rel = tmp_path / "old"
    shutil.copytree(secure_release.root, rel)
    for name, role in (("vault.json", VAULT_ROLE), ("vault.npz", ARRAYS_ROLE)):
        plain = read_vault_bytes(rel / name, role)
        (rel / name).write_bytes(plain)
    capfd.readouterr()
    v = Vault.load(rel / "vault.json")
    v.load_arrays(rel / "vault.json")
    err = capfd.readouterr().err
    assert "plaintext vault" in err and "encryip vault encrypt" in err
    proc = _cli("vault", "status", str(rel))
    assert proc.returncode == 0 and "PLAINTEXT" in proc.stdout
    proc = _cli("vault", "encrypt", str(rel), env=_env_without_secret())
    assert proc.returncode != 0 and PASSPHRASE_ENV in proc.stderr  # no secret: refused
    assert not is_sealed((rel / "vault.json").read_bytes())
    proc = _cli("vault", "encrypt", str(rel))
    assert proc.returncode == 0, proc.stderr
    for name in ("vault.json", "vault.npz"):
        assert is_sealed((rel / name).read_bytes())
        assert (rel / name).stat().st_mode & 0o777 == 0o600
    assert Vault.load(rel / "vault.json").licensees == v.licensees
    proc = _cli("vault", "encrypt", str(rel))
    assert proc.returncode == 0 and "nothing to do" in proc.stdout


def test_licensee_keys_plaintext_by_default_sealing_optional(
    secure_release: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    """Key files go to people: plaintext unless their holder seals them (keys seal)."""
    key = tmp_path / "acme.key"
    shutil.copy(secure_release.key("acme"), key)
    plain = LicenseeKey.load(key)
    env = {**os.environ, "ENCRYIP_KEY_PASSPHRASE": "acme-key-passphrase"}
    proc = subprocess.run(
        [sys.executable, "-m", "encryip_runtime.cli.main", "keys", "seal", str(key)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    raw = key.read_bytes()
    assert is_sealed(raw) and b'"sk"' not in raw
    assert key.stat().st_mode & 0o777 == 0o600
    monkeypatch.delenv("ENCRYIP_KEY_PASSPHRASE", raising=False)
    with pytest.raises(VaultSecretError, match="ENCRYIP_KEY_PASSPHRASE"):
        LicenseeKey.load(key)  # no TTY, no passphrase: clear error at once
    monkeypatch.setenv("ENCRYIP_KEY_PASSPHRASE", "acme-key-passphrase")
    assert LicenseeKey.load(key).pk == plain.pk
    passfile = tmp_path / "kp"
    passfile.write_text("acme-key-passphrase\n")
    proc = subprocess.run(
        [sys.executable, "-m", "encryip_runtime.cli.main", "decrypt", "--key", str(key),
         "--key-passphrase-file", str(passfile), "--ciphertext", "00" * 96],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "ENCRYIP_KEY_PASSPHRASE"},
    )  # fmt: skip
    assert "passphrase" not in proc.stderr, proc.stderr  # the key opened (the ct is junk)
