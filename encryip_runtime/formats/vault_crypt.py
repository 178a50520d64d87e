"""The vault encrypted at rest: a sealed envelope around the bytes of vault.json / vault.npz.

The vault holds every licensee key and the trapdoor t; its theft means forged keys and
visible triggers. So every vault file is written sealed (``encryip-sealed/1``):

    ENCRYIP-SEALED/1\\n  <header: one line of JSON>\\n  <XChaCha20-Poly1305 ciphertext>

The header names the KDF and its parameters (Argon2id over a passphrase, libsodium's
``crypto_pwhash`` with a fresh 16-byte salt; or ``raw-key``, a 32-byte envelope key read
from a file, for automation), the nonce, and the file's role (``vault`` or
``vault-arrays``). The magic line and the header are the AEAD's associated data, so the
parameters and the role cannot be swapped unnoticed. Both primitives come from libsodium
(via pysodium), which the secure profile already depends on.

This is a layer around the file bytes only: :func:`read_vault_bytes` and
:func:`write_vault_bytes` hand plaintext to and from formats/vault.py, whose content
format does not depend on it. Plaintext vaults (written before this layer) still read,
with a warning; ``encryip vault encrypt`` converts them.

Where the passphrase (or key) comes from, first match wins: the file given to
:func:`use_passphrase_file` (the commands' ``--passphrase-file``), the environment
``ENCRYIP_VAULT_PASSPHRASE``, an envelope key file ``ENCRYIP_VAULT_KEY_FILE`` (64 hex
digits), else a prompt on the terminal. With no terminal it fails at once
(:class:`VaultSecretError`): it never waits for input and never writes plaintext.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import secrets
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from encryip_runtime.exceptions import FormatError
from encryip_runtime.formats.jsonio import atomic_write_bytes
from encryip_runtime.formats.secrets import SEALED_MAGIC

__all__ = [
    "ARRAYS_ROLE",
    "KEY_PASSPHRASE_ENV",
    "KEY_ROLE",
    "PASSPHRASE_ENV",
    "VAULT_KEY_FILE_ENV",
    "VAULT_ROLE",
    "VaultSecretError",
    "check_vault_passphrase",
    "is_sealed",
    "read_vault_bytes",
    "seal",
    "unseal",
    "use_key_passphrase_file",
    "use_passphrase_file",
    "write_vault_bytes",
]

SEALED_FORMAT = "encryip-sealed/1"
MAGIC_LINE = SEALED_MAGIC + b"1\n"
PASSPHRASE_ENV = "ENCRYIP_VAULT_PASSPHRASE"
VAULT_KEY_FILE_ENV = "ENCRYIP_VAULT_KEY_FILE"
VAULT_ROLE = "vault"
ARRAYS_ROLE = "vault-arrays"
KEY_ROLE = "licensee-key"  # optional: a licensee key file sealed by its holder
KEY_PASSPHRASE_ENV = "ENCRYIP_KEY_PASSPHRASE"
# libsodium's "interactive" Argon2id limits (64 MiB, 2 passes): about 0.1-0.3 s per
# derivation. The header records them, so files written with stronger ones still read.
_OPSLIMIT = 2
_MEMLIMIT = 64 * 1024 * 1024
_MAX_OPSLIMIT = 10
_MAX_MEMLIMIT = 1024 * 1024 * 1024
_MIN_PASSPHRASE = 8
_KDF_ALG = "argon2id13"  # libsodium's crypto_pwhash_ALG_ARGON2ID13


class VaultSecretError(FormatError):
    """No passphrase (or key) for the vault, or the wrong one (or an altered file: the
    two cannot be told apart). A FormatError: the commands report it as bad input."""


@dataclass(frozen=True)
class _Unlock:
    kind: str  # "passphrase" or "raw-key"
    value: bytes
    source: str


@dataclass
class _Source:
    """Where one kind of passphrase comes from (the vault's, or a licensee key's)."""

    what: str
    env: str
    file_flag: str
    key_file_env: str | None
    file: Path | None = None
    typed: _Unlock | None = None


_lock = threading.Lock()
_SOURCES = {
    "vault": _Source("vault", PASSPHRASE_ENV, "--passphrase-file", VAULT_KEY_FILE_ENV),
    "key": _Source("licensee key", KEY_PASSPHRASE_ENV, "--key-passphrase-file", None),
}
_ROLE_SOURCE = {VAULT_ROLE: "vault", ARRAYS_ROLE: "vault", KEY_ROLE: "key"}
_derived: dict[tuple[bytes, bytes, int, int], bytes] = {}


def use_passphrase_file(path: Path | None) -> None:
    """Take the vault passphrase from ``path`` (first line) from now on in this process."""
    _use_file("vault", path)


def use_key_passphrase_file(path: Path | None) -> None:
    """Take the passphrase of sealed licensee key files from ``path`` (first line)."""
    _use_file("key", path)


def _use_file(source: str, path: Path | None) -> None:
    with _lock:
        _SOURCES[source].file = None if path is None else Path(path)
        _SOURCES[source].typed = None


def _read_first_line(path: Path, what: str) -> bytes:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise VaultSecretError(f"{what} '{path}': cannot read ({exc.strerror})") from None
    line = text.splitlines()[0].strip() if text.strip() else b""
    if not line:
        raise VaultSecretError(f"{what} '{path}' is empty")
    return line


def _secret(*, confirm: bool, source: str = "vault") -> _Unlock:
    """The passphrase or key: read from its source each time, except a typed passphrase,
    which is asked for once per process and kept in memory."""
    src = _SOURCES[source]
    with _lock:
        if src.typed is not None:
            return src.typed
        unlock = _resolve(src, confirm=confirm)
        if unlock.kind == "passphrase" and len(unlock.value) < _MIN_PASSPHRASE:
            raise VaultSecretError(
                f"{src.what} passphrase from {unlock.source} is too short "
                f"(at least {_MIN_PASSPHRASE} characters)"
            )
        if unlock.source == "the terminal":
            src.typed = unlock
        return unlock


def _resolve(src: _Source, *, confirm: bool) -> _Unlock:
    if src.file is not None:
        value = _read_first_line(src.file, src.file_flag)
        return _Unlock("passphrase", value, f"{src.file_flag} {src.file}")
    env = os.environ.get(src.env, "")
    if env:
        return _Unlock("passphrase", env.encode(), src.env)
    key_file = os.environ.get(src.key_file_env, "") if src.key_file_env else ""
    if key_file and src.key_file_env:
        line = _read_first_line(Path(key_file), src.key_file_env)
        try:
            key = bytes.fromhex(line.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            key = b""
        if len(key) != 32:
            raise VaultSecretError(
                f"{src.key_file_env} '{key_file}': expected 64 hex digits (a 32-byte key)"
            )
        return _Unlock("raw-key", key, src.key_file_env)
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass(f"{src.what} passphrase: ")
        if confirm:
            again = getpass.getpass(f"{src.what} passphrase (again): ")
            if again != first:
                raise VaultSecretError("the two passphrases differ")
        return _Unlock("passphrase", first.encode(), "the terminal")
    also = f", set {src.key_file_env}" if src.key_file_env else ""
    raise VaultSecretError(
        f"the {src.what} is encrypted at rest and no passphrase was given: set "
        f"{src.env}, pass {src.file_flag} FILE{also}, or run on a terminal to be asked"
    )


def check_vault_passphrase(*, new: bool = False) -> None:
    """Fail now (VaultSecretError) unless a vault passphrase or key is at hand; commands
    that will write or read the vault call this first, before any other work. ``new``:
    a prompt asks twice (a vault is about to be sealed with it)."""
    _secret(confirm=new)


def _derive(unlock: _Unlock, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    import pysodium

    if unlock.kind == "raw-key":
        return unlock.value
    cache_key = (hashlib.sha256(unlock.value).digest(), salt, opslimit, memlimit)
    key = _derived.get(cache_key)
    if key is None:
        key = pysodium.crypto_pwhash(
            32, unlock.value, salt, opslimit, memlimit, pysodium.crypto_pwhash_ALG_ARGON2ID13
        )
        _derived[cache_key] = key
    return bytes(key)


def is_sealed(data: bytes) -> bool:
    return data.startswith(SEALED_MAGIC)


def seal(data: bytes, role: str, *, _salt: bytes | None = None) -> bytes:
    """``data`` sealed with this process's vault passphrase or key (asked for if needed)."""
    import pysodium

    unlock = _secret(confirm=True, source=_ROLE_SOURCE.get(role, "vault"))
    nonce = secrets.token_bytes(pysodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
    header: dict[str, object] = {"format": SEALED_FORMAT, "role": role, "kdf": unlock.kind}
    salt = b""
    if unlock.kind == "passphrase":
        salt = _salt if _salt is not None else _session_salt()
        header.update(alg=_KDF_ALG, salt=salt.hex(), opslimit=_OPSLIMIT, memlimit=_MEMLIMIT)
    header["nonce"] = nonce.hex()
    key = _derive(unlock, salt, _OPSLIMIT, _MEMLIMIT)
    head = MAGIC_LINE + json.dumps(header, sort_keys=True).encode() + b"\n"
    return head + pysodium.crypto_aead_xchacha20poly1305_ietf_encrypt(data, head, nonce, key)


_salt_for_session: bytes | None = None


def _session_salt() -> bytes:
    """One random salt per process run: the files one command writes share one Argon2id
    derivation (each file still has its own random nonce)."""
    global _salt_for_session
    if _salt_for_session is None:
        _salt_for_session = secrets.token_bytes(16)
    return _salt_for_session


def unseal(blob: bytes, role: str, path: str) -> bytes:
    """The plaintext of a sealed file; FormatError / VaultSecretError name ``path``."""
    import pysodium

    if not blob.startswith(MAGIC_LINE):
        version = blob[len(SEALED_MAGIC) :].split(b"\n", 1)[0][:16]
        raise FormatError(f"unsupported sealed format version {version!r}", path=path)
    end = blob.find(b"\n", len(MAGIC_LINE))
    if end < 0:
        raise FormatError("sealed file without a header line", path=path)
    head, body = blob[: end + 1], blob[end + 1 :]
    try:
        header = json.loads(head[len(MAGIC_LINE) :])
        if not isinstance(header, dict):
            raise ValueError("not an object")
        kdf = header["kdf"]
        nonce = bytes.fromhex(header["nonce"])
        got_role = header["role"]
        salt = bytes.fromhex(header.get("salt", ""))
        opslimit = int(header.get("opslimit", 0))
        memlimit = int(header.get("memlimit", 0))
    except (ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"bad sealed header ({exc})", path=path) from None
    if got_role != role:
        raise FormatError(f"sealed as {got_role!r}, expected {role!r}", path=path)
    if kdf == "passphrase" and header.get("alg") != _KDF_ALG:
        raise FormatError(f"unsupported KDF {header.get('alg')!r} (expected {_KDF_ALG})", path=path)
    if kdf == "passphrase" and not (
        0 < opslimit <= _MAX_OPSLIMIT and 0 < memlimit <= _MAX_MEMLIMIT and len(salt) == 16
    ):
        raise FormatError("Argon2id parameters out of range in the sealed header", path=path)
    if kdf not in ("passphrase", "raw-key"):
        raise FormatError(f"unknown kdf {kdf!r}", path=path)
    unlock = _secret(confirm=False, source=_ROLE_SOURCE.get(role, "vault"))
    if unlock.kind != kdf:
        want = "a passphrase" if kdf == "passphrase" else f"the envelope key ({VAULT_KEY_FILE_ENV})"
        raise VaultSecretError(f"{path}: sealed with {want}, but {unlock.source} gives another")
    key = _derive(unlock, salt, opslimit, memlimit)
    try:
        return bytes(pysodium.crypto_aead_xchacha20poly1305_ietf_decrypt(body, head, nonce, key))
    except ValueError:
        raise VaultSecretError(
            f"{path}: cannot decrypt: wrong vault passphrase ({unlock.source}) "
            "or the file was altered"
        ) from None


def read_vault_bytes(path: Path, role: str) -> bytes:
    """The plaintext bytes of a vault file (sealed, or plaintext with a warning)."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise FormatError("file not found", path=str(path)) from None
    except OSError as exc:
        raise FormatError(f"cannot read: {exc.strerror}", path=str(path)) from None
    if is_sealed(blob):
        return unseal(blob, role, str(path))
    _warn_plaintext(path)
    return blob


_warned: set[str] = set()


def _warn_plaintext(path: Path) -> None:
    name = str(path)
    if name in _warned:
        return
    _warned.add(name)
    message = (
        f"warning: {path} is a plaintext vault (not encrypted at rest); "
        "convert it with: encryip vault encrypt " + str(path.parent)
    )
    print(message, file=sys.stderr)


def write_vault_bytes(path: Path, data: bytes, role: str) -> None:
    """Seal ``data`` and write it 0600, atomically (fails before writing without a passphrase)."""
    atomic_write_bytes(Path(path), seal(data, role), secret=True)


def reset_for_tests() -> None:
    """Forget the typed passphrase and derived keys (tests switch passphrases)."""
    global _salt_for_session
    with _lock:
        for src in _SOURCES.values():
            src.file = src.typed = None
        _salt_for_session = None
        _derived.clear()
        _warned.clear()
