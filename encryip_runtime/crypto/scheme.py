"""CS_lite = (Gen, Enc, Dec, Fake) and SampDist, exactly as Figure 1 of the paper,
written once over the ``Group`` interface.

Ciphertext batches are numpy arrays with the three components on axis 1:
``int64 (N, 3)`` for Z_p^*, ``uint8 (N, 3, 32)`` for ristretto255.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.crypto.group import Elements, Group, Scalars
from encryip_runtime.crypto.labels import LabelCodec
from encryip_runtime.exceptions import EncodingError, InvalidKeyError, LicenseeLimitError

__all__ = ["CSLite", "Ciphertexts", "KeyFamily", "PublicKey", "SecretKey", "wire_rows"]

Ciphertexts = npt.NDArray[Any]


@dataclass(frozen=True)
class PublicKey:
    """``pk = (g1, g2, h)``, each a batch of one element."""

    g1: Elements
    g2: Elements
    h: Elements

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return all(np.array_equal(x, y) for x, y in zip(self.parts(), other.parts(), strict=True))

    def __hash__(self) -> int:
        return hash(b"".join(np.ascontiguousarray(p).tobytes() for p in self.parts()))

    def parts(self) -> tuple[Elements, Elements, Elements]:
        return self.g1, self.g2, self.h


@dataclass(frozen=True)
class SecretKey:
    """``sk = (a, b)`` with ``g1^a * g2^b = h``. ``repr`` hides the scalars."""

    a: int = field(repr=False)
    b: int = field(repr=False)


@dataclass(frozen=True)
class KeyFamily:
    """Everything Gen(P) produces. ``t`` and ``(a1, b1)`` are the owner's secrets."""

    pk: PublicKey
    t: int = field(repr=False)
    keys: tuple[SecretKey, ...] = field(repr=False)

    @property
    def root(self) -> SecretKey:
        return self.keys[0]


class CSLite:
    """The scheme over one group, with the label codec of its profile."""

    #: The secure profile's release format version this scheme writes (v2: scheme_v2.py).
    format_version = 1

    def __init__(self, group: Group, codec: LabelCodec, profile: str):
        self.group = group
        self.codec = codec
        self.profile = profile

    @property
    def num_classes(self) -> int:
        return self.codec.num_classes

    @property
    def ciphertext_size(self) -> int:
        """Bytes of one ciphertext on the wire."""
        return 3 * self.group.element_size

    @property
    def max_licensees(self) -> int:
        return self.group.order

    # -- Gen ------------------------------------------------------------------
    def _random_unit(self) -> int:
        n = self.group.order
        while True:
            k = self.group.random_scalar()
            if k != 0 and math.gcd(k, n) == 1:
                return k

    def gen(self, num_licensees: int) -> KeyFamily:
        """Gen(P): one public key and P secret keys, all decrypting Enc correctly."""
        if num_licensees < 1:
            raise ValueError(f"need at least one licensee, got {num_licensees}")
        self._check_limit(num_licensees)
        g, n = self.group, self.group.order
        t = self._random_unit()
        g1 = g.generator()
        g2 = g.pow(g1, t)
        # h = 1 would make SampDist leave u3 unchanged (outputs linkable), and every
        # loader refuses it; in the paper profile's small groups it is a likely draw.
        while True:
            a1, b1 = g.random_scalar(), g.random_scalar()
            h = g.mul(g.pow(g1, a1), g.pow(g2, b1))
            if not g.equal(h, g.identity(1)):
                break
        family = KeyFamily(PublicKey(g1, g2, h), t, (SecretKey(a1 % n, b1 % n),))
        for _ in range(num_licensees - 1):
            family = self.add_licensee(family)
        return family

    def _check_limit(self, count: int) -> None:
        if count > self.max_licensees:
            raise LicenseeLimitError(
                f"{count} licensees requested but the {self.profile} profile's group "
                f"{self.group.name} allows at most {self.max_licensees} (distinct b_j mod "
                f"{self.group.order}); use the secure profile for more"
            )

    def add_licensee(self, family: KeyFamily) -> KeyFamily:
        """Paper §4.5(2): a new b not used before, a = a1 + (b1 - b) t. Others untouched."""
        self._check_limit(len(family.keys) + 1)
        n = self.group.order
        used = {k.b for k in family.keys}
        while True:
            b = self.group.random_scalar() % n
            if b not in used:
                break
        root = family.root
        a = (root.a + (root.b - b) * family.t) % n
        return KeyFamily(family.pk, family.t, (*family.keys, SecretKey(a, b)))

    def check_key(self, pk: PublicKey, sk: SecretKey) -> None:
        """Raise ``InvalidKeyError`` unless ``g1^a * g2^b == h``."""
        g = self.group
        if not (0 <= sk.a < g.order and 0 <= sk.b < g.order):
            raise InvalidKeyError("secret key scalars out of range")
        lhs = g.mul(g.pow(pk.g1, sk.a), g.pow(pk.g2, sk.b))
        if not g.equal(lhs, pk.h):
            raise InvalidKeyError("secret key does not match the public key (g1^a * g2^b != h)")

    # -- Enc / Fake / SampDist -----------------------------------------------
    @staticmethod
    def _stack(u1: Elements, u2: Elements, u3: Elements) -> Ciphertexts:
        return np.stack([u1, u2, u3], axis=1)

    def enc(self, pk: PublicKey, messages: Elements) -> Ciphertexts:
        """Enc(pk, m) for each message: (g1^r, g2^r, h^r m) with fresh r per row."""
        g = self.group
        r1, r2, r3 = self.rerandomizers(pk, len(messages))
        return self._stack(r1, r2, g.mul(r3, messages))

    def fake(self, pk: PublicKey, count: int) -> Ciphertexts:
        """Fake(pk): (g1^r1, g2^r2, random u3) with r2 - r1 invertible mod the exponent order."""
        g, n = self.group, self.group.order
        r1s: list[int] = []
        r2s: list[int] = []
        while len(r1s) < count:
            r1, r2 = g.random_scalar(), g.random_scalar()
            if math.gcd((r2 - r1) % n, n) == 1:
                r1s.append(r1)
                r2s.append(r2)
        u1 = g.pow_fixed(pk.g1, g.scalars_from_ints(r1s))
        u2 = g.pow_fixed(pk.g2, g.scalars_from_ints(r2s))
        u3 = g.random_elements(count)
        return self._stack(u1, u2, u3)

    def rerandomizers(
        self, pk: PublicKey, count: int, scalars: Scalars | None = None
    ) -> tuple[Elements, Elements, Elements]:
        """``(g1^r, g2^r, h^r)`` for ``count`` fresh scalars r. Each must be used once."""
        g = self.group
        ks = g.random_scalars(count) if scalars is None else scalars
        r1, r2, r3 = g.multiples(pk.parts(), ks)
        return r1, r2, r3

    def sampdist(
        self,
        pk: PublicKey,
        cts: Ciphertexts,
        rerandomizers: tuple[Elements, Elements, Elements] | None = None,
    ) -> Ciphertexts:
        """SampDist: (g1^r u1, g2^r u2, h^r u3), a fresh sample of the same distribution."""
        g = self.group
        if rerandomizers is None:
            out: Ciphertexts = g.sampdist_rows(pk.parts(), cts)
            return out
        r1, r2, r3 = rerandomizers
        if len(r1) != len(cts):
            raise ValueError(f"{len(r1)} re-randomisers for {len(cts)} ciphertexts")
        return self._stack(g.mul(r1, cts[:, 0]), g.mul(r2, cts[:, 1]), g.mul(r3, cts[:, 2]))

    def prepare_codebook(self, codebook: Ciphertexts) -> Any:
        """The codebook in the form :meth:`sampdist_codebook` wants (built once per model)."""
        return self.group.prepare_codebook(codebook)

    def sampdist_codebook(
        self, pk: PublicKey, prepared: Any, slots: npt.NDArray[np.integer]
    ) -> Ciphertexts:
        """SampDist of ``codebook[slots]``: the same distribution as ``sampdist(pk,
        codebook[slots])``, faster where the group precomputes per entry (ristretto255:
        no decode and no square root per row)."""
        out: Ciphertexts = self.group.sampdist_codebook(pk.parts(), prepared, slots)
        return out

    # -- Dec ------------------------------------------------------------------
    def dec(self, sk: SecretKey, cts: Ciphertexts) -> Elements:
        """Dec(sk, c) = u3 / (u1^a u2^b) for each row."""
        return self.group.dec_rows(cts, sk.a, sk.b)

    def decrypt_labels(self, sk: SecretKey, cts: Ciphertexts) -> npt.NDArray[np.int64]:
        """Dec, then the profile's label rule: the class index of each row."""
        return self.codec.labels_of(self.dec(sk, cts))

    # -- wire -----------------------------------------------------------------
    def to_wire(self, cts: Ciphertexts) -> npt.NDArray[np.uint8]:
        """``uint8 (N, 3 * element_size)``: u1 || u2 || u3 per row (docs/design.md §3)."""
        n = len(cts)
        parts = [self.group.to_bytes(cts[:, k]) for k in range(3)]
        return np.concatenate(parts, axis=1).reshape(n, self.ciphertext_size)

    def from_wire(self, data: npt.NDArray[np.uint8] | bytes | list[bytes]) -> Ciphertexts:
        """Parse and validate wire ciphertexts; ``EncodingError`` names the row."""
        arr = wire_rows(data, self.ciphertext_size)
        es = self.group.element_size
        comps = []
        for k in range(3):
            try:
                comps.append(
                    self.group.from_bytes(np.ascontiguousarray(arr[:, k * es : (k + 1) * es]))
                )
            except EncodingError as exc:
                raise EncodingError(f"ciphertext component u{k + 1}: {exc}") from None
        return self._stack(*comps)


def wire_rows(
    data: npt.NDArray[np.uint8] | bytes | list[bytes], width: int
) -> npt.NDArray[np.uint8]:
    """Wire ciphertexts (one bytes string, a list of them, or an array) as ``uint8 (N, width)``;
    ``EncodingError`` names the row of a wrong length. Elements are not checked here."""
    if isinstance(data, (bytes, bytearray)):
        if len(data) % width:
            raise EncodingError(
                f"ciphertext bytes: length {len(data)} is not a multiple of {width}"
            )
        return np.frombuffer(bytes(data), dtype=np.uint8).reshape(-1, width)
    if isinstance(data, list):
        for i, item in enumerate(data):
            if not isinstance(item, (bytes, bytearray)) or len(item) != width:
                size = len(item) if isinstance(item, (bytes, bytearray)) else type(item).__name__
                raise EncodingError(f"ciphertext {i}: expected {width} bytes, got {size}")
        return np.frombuffer(b"".join(data), dtype=np.uint8).reshape(-1, width)
    arr = np.asarray(data)
    if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != width:
        raise EncodingError(f"expected uint8 (N, {width}) ciphertexts, got {arr.dtype} {arr.shape}")
    return arr
