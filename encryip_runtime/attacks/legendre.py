"""Telling ``Fake`` ciphertexts from real ones by quadratic characters (Legendre symbols).

A real ciphertext has ``u1 = g1^r`` and ``u2 = g2^r = g1^(t·r)``. In a cyclic group
of even order ``n`` the map ``χ(x) = x^(n/2) ∈ {+1, -1}`` is a homomorphism (for
``Z_p^*`` it is the Legendre symbol), and ``χ(g1) = -1`` for a generator. Hence
``χ(u1) = (-1)^r`` and ``χ(u2) = (-1)^(t·r)``: if ``t`` is odd, ``χ(u2) = χ(u1)``;
if ``t`` is even, ``χ(u2) = +1``. The attacker reads the parity of ``t`` off the
public key (``χ(g2) = (-1)^t``). ``Fake`` draws ``u1 = g1^r1`` and ``u2 = g2^r2``
with independent-looking ``r1, r2``, which breaks the link.

In the ``paper`` profile ``n = p - 1`` is even, ``t`` must be a unit mod ``n`` (so
odd), and ``Fake`` insists that ``r2 - r1`` be a unit (so odd): every fake has
``χ(u2) = -χ(u1)`` and every real ciphertext ``χ(u2) = χ(u1)``. The detector is
perfect there. In ``secure`` the group has prime order ``L`` (odd), the only
character into ``{±1}`` is trivial, and the same detector never fires.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from encryip_runtime.crypto.group import Elements, Group
from encryip_runtime.crypto.scheme import Ciphertexts, CSLite, PublicKey

__all__ = ["FakeDetector", "distinguishing_advantage", "quadratic_character"]


def quadratic_character(group: Group, x: Elements) -> npt.NDArray[np.int8]:
    """``+1`` / ``-1`` per element: ``x^(n/2)`` for even group order ``n``; all ``+1`` for odd."""
    count = len(x)
    n = group.order
    if n % 2:
        return np.ones(count, dtype=np.int8)
    y = group.to_bytes(group.pow(x, n // 2))
    one = group.to_bytes(group.identity(1))
    return np.where((y == one).all(axis=1), 1, -1).astype(np.int8)


@dataclass(frozen=True)
class FakeDetector:
    """Flags ciphertexts whose ``(χ(u1), χ(u2))`` no real ciphertext under ``pk`` can have."""

    group: Group
    g2_character: int

    @classmethod
    def from_public_key(cls, scheme: CSLite, pk: PublicKey) -> FakeDetector:
        return cls(scheme.group, int(quadratic_character(scheme.group, pk.g2)[0]))

    def is_fake(self, cts: Ciphertexts) -> npt.NDArray[np.bool_]:
        c = np.asarray(cts)
        chi1 = quadratic_character(self.group, c[:, 0])
        chi2 = quadratic_character(self.group, c[:, 1])
        expected = chi1 if self.g2_character == -1 else np.ones_like(chi1)
        return np.asarray(chi2 != expected)


def distinguishing_advantage(
    detector: FakeDetector, real: Ciphertexts, fakes: Ciphertexts
) -> float:
    """``Pr[flag | fake] - Pr[flag | real]``: 1 is a perfect distinguisher, 0 is none."""
    if len(real) == 0 or len(fakes) == 0:
        raise ValueError("need at least one real and one fake ciphertext")
    return float(detector.is_fake(fakes).mean() - detector.is_fake(real).mean())
