"""Release files: manifest (public), licensee keys and the vault (secret)."""

from __future__ import annotations

from encryip_runtime.formats.keyfile import KEY_FORMAT, LicenseeKey
from encryip_runtime.formats.manifest import MANIFEST_FORMAT, InputSpec, Manifest
from encryip_runtime.formats.vault import VAULT_FORMAT, LicenseeRecord, Vault, VaultArrays

__all__ = [
    "KEY_FORMAT",
    "MANIFEST_FORMAT",
    "VAULT_FORMAT",
    "InputSpec",
    "LicenseeKey",
    "LicenseeRecord",
    "Manifest",
    "Vault",
    "VaultArrays",
]
