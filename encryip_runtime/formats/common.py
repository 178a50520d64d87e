"""JSON forms shared by every release file: public keys, scalars, ciphertexts."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from encryip_runtime.crypto.profiles import PROFILES, make_scheme
from encryip_runtime.crypto.scheme import Ciphertexts, CSLite, PublicKey, SecretKey
from encryip_runtime.exceptions import EncodingError
from encryip_runtime.formats.jsonio import Fields

__all__ = [
    "SchemeBound",
    "ciphertexts_from_json",
    "ciphertexts_to_json",
    "optional_digest",
    "pk_fingerprint",
    "pk_from_fields",
    "pk_to_json",
    "scheme_from_fields",
    "sk_from_fields",
    "sk_to_json",
]


class SchemeBound:
    """Mixin for release objects that carry their scheme: the profile and K come from it."""

    scheme: CSLite

    @property
    def profile(self) -> str:
        return self.scheme.profile

    @property
    def num_classes(self) -> int:
        return self.scheme.num_classes


def optional_digest(f: Fields, key: str) -> str:
    """A SHA-256 hex digest field: 64 lowercase hex digits, or absent / empty (unknown)."""
    if not f.has(key):
        return ""
    v = f.str(key)
    if v and (len(v) != 64 or any(c not in "0123456789abcdef" for c in v)):
        raise f.error(key, "expected 64 lowercase hex digits (a SHA-256 digest)")
    return v


def scheme_from_fields(f: Fields) -> CSLite:
    """Profile + num_classes (+ group cross-check) -> the scheme."""
    profile = f.str("profile")
    if profile not in PROFILES:
        raise f.error("profile", f"unknown profile {profile!r} (expected {' or '.join(PROFILES)})")
    k = f.int("num_classes", lo=2, hi=65_000)
    scheme = make_scheme(profile, k)
    if f.has("group") and f.str("group") != scheme.group.name:
        raise f.error(
            "group",
            f"{f.str('group')!r} does not match profile {profile} with "
            f"{k} classes (expected {scheme.group.name!r})",
        )
    return scheme


def pk_to_json(scheme: CSLite, pk: PublicKey) -> dict[str, Any]:
    g = scheme.group
    return {"g1": g.to_json(pk.g1)[0], "g2": g.to_json(pk.g2)[0], "h": g.to_json(pk.h)[0]}


def pk_from_fields(scheme: CSLite, f: Fields, key: str = "pk") -> PublicKey:
    pf = f.obj_(key)
    parts = [pf.parse(name, lambda v: scheme.group.from_json([v])) for name in ("g1", "g2", "h")]
    if not scheme.group.equal(parts[0], scheme.group.generator()):
        raise pf.error("g1", f"must be the generator of {scheme.group.name}")
    one = scheme.group.identity(1)
    for name, part in (("g2", parts[1]), ("h", parts[2])):
        # h = 1 leaves SampDist's u3 unchanged (outputs become linkable); g2 = 1 drops b.
        if scheme.group.equal(part, one):
            raise pf.error(name, "must not be the identity element")
    return PublicKey(*parts)


def pk_fingerprint(scheme: CSLite, pk: PublicKey) -> str:
    """SHA-256 over the group name and the wire bytes of (g1, g2, h)."""
    h = hashlib.sha256(b"encryip/v1/pk\x00" + scheme.group.name.encode() + b"\x00")
    for part in pk.parts():
        h.update(scheme.group.to_bytes(part).tobytes())
    return h.hexdigest()


def sk_to_json(scheme: CSLite, sk: SecretKey) -> dict[str, Any]:
    g = scheme.group
    return {"a": g.scalar_to_json(sk.a), "b": g.scalar_to_json(sk.b)}


def sk_from_fields(scheme: CSLite, f: Fields, key: str = "sk") -> SecretKey:
    sf = f.obj_(key)
    return SecretKey(
        sf.parse("a", scheme.group.scalar_from_json), sf.parse("b", scheme.group.scalar_from_json)
    )


def ciphertexts_to_json(scheme: CSLite, cts: Ciphertexts) -> list[list[Any]]:
    cols = [scheme.group.to_json(cts[:, k]) for k in range(3)]
    return [list(row) for row in zip(*cols, strict=True)]


def ciphertexts_from_json(scheme: CSLite, f: Fields, key: str) -> Ciphertexts:
    items = f.list(key)
    comps: list[list[Any]] = [[], [], []]
    for i, row in enumerate(items):
        if not isinstance(row, list) or len(row) != 3:
            raise f.error(f"{key}[{i}]", "expected [u1, u2, u3]")
        for k in range(3):
            comps[k].append(row[k])
    try:
        parsed = [scheme.group.from_json(c) for c in comps]
    except EncodingError as exc:
        raise f.error(key, str(exc)) from None
    if not items:
        return np.stack([scheme.group.identity(0)] * 3, axis=1)
    return np.stack(parsed, axis=1)
