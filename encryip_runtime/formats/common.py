"""JSON forms shared by every release file: public keys, scalars, ciphertexts."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from encryip_runtime.crypto.profiles import PROFILES, AnyScheme, make_scheme, profile_of
from encryip_runtime.crypto.scheme import Ciphertexts, PublicKey, SecretKey
from encryip_runtime.crypto.scheme_v2 import (
    CSLiteV2,
    LabelTable,
    PublicKeyV2,
    SecretKeyV2,
    Trigger,
    cached_table,
)
from encryip_runtime.exceptions import EncodingError
from encryip_runtime.formats.jsonio import Fields

AnyPublicKey = PublicKey | PublicKeyV2
AnySecretKey = SecretKey | SecretKeyV2

__all__ = [
    "AnyPublicKey",
    "AnySecretKey",
    "SchemeBound",
    "ciphertexts_from_json",
    "ciphertexts_to_json",
    "label_table_from_fields",
    "label_table_to_json",
    "optional_digest",
    "pk_fingerprint",
    "pk_from_fields",
    "pk_to_json",
    "scheme_from_fields",
    "scheme_v2_from_fields",
    "scheme_v2_to_json",
    "sk_from_fields",
    "sk_to_json",
    "triggers_from_fields",
    "triggers_to_json",
]


class SchemeBound:
    """Mixin for release objects that carry their scheme: the profile and K come from it."""

    scheme: AnyScheme

    @property
    def profile(self) -> str:
        return self.scheme.profile

    @property
    def num_classes(self) -> int:
        return self.scheme.num_classes

    @property
    def format_version(self) -> int:
        """1: CS_lite as in the paper; 2: secure format v2 (docs/design.md)."""
        return self.scheme.format_version


def optional_digest(f: Fields, key: str) -> str:
    """A SHA-256 hex digest field: 64 lowercase hex digits, or absent / empty (unknown)."""
    if not f.has(key):
        return ""
    v = f.str(key)
    if v and (len(v) != 64 or any(c not in "0123456789abcdef" for c in v)):
        raise f.error(key, "expected 64 lowercase hex digits (a SHA-256 digest)")
    return v


def scheme_from_fields(f: Fields) -> AnyScheme:
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


def pk_to_json(scheme: AnyScheme, pk: AnyPublicKey) -> dict[str, Any]:
    g = scheme.group
    if isinstance(pk, PublicKeyV2):
        return {"g": g.to_json(pk.gens), "h": g.to_json(pk.h)[0]}
    return {"g1": g.to_json(pk.g1)[0], "g2": g.to_json(pk.g2)[0], "h": g.to_json(pk.h)[0]}


def pk_from_fields(scheme: AnyScheme, f: Fields, key: str = "pk") -> Any:
    pf = f.obj_(key)
    g = scheme.group
    if isinstance(scheme, CSLiteV2):
        gens = pf.parse("g", g.from_json)
        if len(gens) != scheme.width + 1:
            raise pf.error("g", f"expected {scheme.width + 1} generators, got {len(gens)}")
        h = pf.parse("h", lambda v: g.from_json([v]))
        if not g.equal(gens[0:1], g.generator()):
            raise pf.error("g[0]", f"must be the generator of {g.name}")
        for i in range(len(gens)):
            if not gens[i].any():
                raise pf.error(f"g[{i}]", "the identity is not a generator")
        if len({bytes(row) for row in gens}) != len(gens):
            raise pf.error("g", "generators must be distinct")
        if not h.any():
            raise pf.error("h", "the identity is not a valid h")
        return PublicKeyV2(gens, h)
    parts = [pf.parse(name, lambda v: g.from_json([v])) for name in ("g1", "g2", "h")]
    if not g.equal(parts[0], g.generator()):
        raise pf.error("g1", f"must be the generator of {g.name}")
    one = g.identity(1)
    for name, part in (("g2", parts[1]), ("h", parts[2])):
        # h = 1 leaves SampDist's u3 unchanged (outputs become linkable); g2 = 1 drops b.
        if g.equal(part, one):
            raise pf.error(name, "must not be the identity element")
    return PublicKey(*parts)


def pk_fingerprint(scheme: AnyScheme, pk: AnyPublicKey) -> str:
    """SHA-256 over the group name and the wire bytes of the pk's elements (in order)."""
    domain = b"encryip/v2/pk\x00" if isinstance(pk, PublicKeyV2) else b"encryip/v1/pk\x00"
    h = hashlib.sha256(domain + scheme.group.name.encode() + b"\x00")
    for part in pk.parts():
        h.update(scheme.group.to_bytes(part).tobytes())
    return h.hexdigest()


def sk_to_json(scheme: AnyScheme, sk: AnySecretKey) -> dict[str, Any]:
    g = scheme.group
    if isinstance(sk, SecretKeyV2):
        return {"a": g.scalar_to_json(sk.a), "b": list(sk.b)}
    return {"a": g.scalar_to_json(sk.a), "b": g.scalar_to_json(sk.b)}


def sk_from_fields(scheme: AnyScheme, f: Fields, key: str = "sk") -> Any:
    sf = f.obj_(key)
    a = sf.parse("a", scheme.group.scalar_from_json)
    if isinstance(scheme, CSLiteV2):
        b = sf.int_list("b", length=scheme.width, hi=scheme.num_classes - 1)
        return SecretKeyV2(a, tuple(b))
    return SecretKey(a, sf.parse("b", scheme.group.scalar_from_json))


def scheme_v2_to_json(scheme: CSLiteV2) -> dict[str, Any]:
    return {
        "width": scheme.width,
        "shift_range": scheme.shift_range,
        "ciphertext_size": scheme.ciphertext_size,
    }


def scheme_v2_from_fields(f: Fields) -> CSLiteV2:
    """Format v2: profile "secure", num_classes and the ``scheme`` object."""
    profile = f.str("profile")
    if profile not in PROFILES or 2 not in profile_of(profile).formats:
        raise f.error(
            "format", f"format version 2 exists only for the secure profile, not {profile!r}"
        )
    if not f.has("scheme"):
        raise f.error("format", "format version 2 needs the 'scheme' object (a v1 document?)")
    k = f.int("num_classes", lo=2, hi=65_000)
    sf = f.obj_("scheme")
    width = sf.int("width", lo=1, hi=32)
    shift = sf.int("shift_range", lo=1, hi=1 << 20)
    scheme = CSLiteV2(k, width, shift)
    if sf.has("ciphertext_size") and sf.int("ciphertext_size") != scheme.ciphertext_size:
        raise sf.error("ciphertext_size", f"expected (width + 2) x 32 = {scheme.ciphertext_size}")
    if f.has("group") and f.str("group") != scheme.group.name:
        raise f.error("group", f"expected {scheme.group.name!r}")
    return scheme


def label_table_to_json(table: LabelTable) -> dict[str, Any]:
    return {
        "m0": table.group.to_json(table.m0)[0],
        "index_min": table.index_min,
        "index_max": table.index_max,
    }


def label_table_from_fields(
    scheme: CSLiteV2, pk: PublicKeyV2, f: Fields, key: str = "labels"
) -> LabelTable:
    lf = f.obj_(key)
    g = scheme.group
    m0 = lf.parse("m0", lambda v: g.from_json([v]))
    k = scheme.num_classes
    lo = lf.int("index_min", lo=-(1 << 24), hi=0)
    hi = lf.int("index_max", lo=k, hi=1 << 24)
    if lo % k or hi % k:
        raise lf.error("index_min", f"index_min and index_max must be multiples of K = {k}")
    if hi - lo > 1 << 24:
        raise lf.error("index_max", "table larger than 2^24 entries")
    return cached_table(g, k, m0, pk.h, lo, hi)


def triggers_to_json(triggers: tuple[Trigger, ...]) -> list[dict[str, Any]]:
    return [{"d": tr.d, "k": list(tr.k)} for tr in triggers]


def triggers_from_fields(scheme: CSLiteV2, f: Fields, key: str = "triggers") -> tuple[Trigger, ...]:
    out = []
    for i, item in enumerate(f.list(key)):
        tf = Fields(item, f.path, f"{key}[{i}]")
        out.append(
            Trigger(
                tf.int("d", lo=-(1 << 24), hi=1 << 24),
                tuple(tf.int_list("k", length=scheme.width, lo=-2, hi=2)),
            )
        )
    return tuple(out)


def ciphertexts_to_json(scheme: AnyScheme, cts: Ciphertexts) -> list[list[Any]]:
    width = cts.shape[1] if cts.ndim >= 2 else 3
    cols = [scheme.group.to_json(cts[:, k]) for k in range(width)]
    return [list(row) for row in zip(*cols, strict=True)]


def ciphertexts_from_json(scheme: AnyScheme, f: Fields, key: str) -> Ciphertexts:
    items = f.list(key)
    width = scheme.components if isinstance(scheme, CSLiteV2) else 3
    comps: list[list[Any]] = [[] for _ in range(width)]
    for i, row in enumerate(items):
        if not isinstance(row, list) or len(row) != width:
            raise f.error(f"{key}[{i}]", f"expected [u1, ..., u{width}] ({width} elements)")
        for k in range(width):
            comps[k].append(row[k])
    try:
        parsed = [scheme.group.from_json(c) for c in comps]
    except EncodingError as exc:
        raise f.error(key, str(exc)) from None
    if not items:
        return np.stack([scheme.group.identity(0)] * width, axis=1)
    return np.stack(parsed, axis=1)
