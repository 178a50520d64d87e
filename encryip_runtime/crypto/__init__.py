"""CS_lite over two groups. Start with ``make_scheme(profile, num_classes)``."""

from __future__ import annotations

from encryip_runtime.crypto.profiles import PROFILES, make_scheme
from encryip_runtime.crypto.scheme import Ciphertexts, CSLite, KeyFamily, PublicKey, SecretKey

__all__ = [
    "PROFILES",
    "CSLite",
    "Ciphertexts",
    "KeyFamily",
    "PublicKey",
    "SecretKey",
    "make_scheme",
]
