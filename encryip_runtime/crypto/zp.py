"""Profile ``paper``: the multiplicative group Z_p^* with tiny p, as in the paper.

NOT SECURE. With p = 11 for 10 classes, discrete logs are a table look-up; this
group exists to reproduce the paper's numbers, and the threat-model tests break it.
All batch operations are numpy gathers over log/exp tables.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.crypto.group import Elements, Group, Scalars
from encryip_runtime.exceptions import EncodingError

__all__ = ["ZpGroup", "is_prime", "paper_prime", "smallest_primitive_root"]

_MAX_P = 65_521  # elements travel as big-endian uint16


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def paper_prime(num_classes: int) -> int:
    """The smallest prime p with p - 1 >= K (11, 101, 1009 for K = 10, 100, 1000)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    p = num_classes + 1
    while not is_prime(p):
        p += 1
    if p > _MAX_P:
        raise ValueError(
            f"num_classes {num_classes} too large for the paper profile (p > {_MAX_P})"
        )
    return p


def _prime_factors(n: int) -> list[int]:
    out, d = [], 2
    while d * d <= n:
        if n % d == 0:
            out.append(d)
            while n % d == 0:
                n //= d
        d += 1
    if n > 1:
        out.append(n)
    return out


def smallest_primitive_root(p: int) -> int:
    n = p - 1
    factors = _prime_factors(n)
    for g in range(2, p):
        if all(pow(g, n // f, p) != 1 for f in factors):
            return g
    if p == 2:
        return 1
    raise ValueError(f"no primitive root mod {p}")


class ZpGroup(Group):
    """Z_p^* with generator the smallest primitive root; exponents mod n = p - 1."""

    element_size = 2

    def __init__(self, p: int):
        if not is_prime(p) or p < 3 or p > _MAX_P:
            raise ValueError(f"p must be a prime in [3, {_MAX_P}], got {p}")
        self.p = p
        self.order = p - 1
        self.name = f"Zp*(p={p})"
        self.g = smallest_primitive_root(p)
        n = self.order
        exp = np.empty(n, dtype=np.int64)
        v = 1
        for i in range(n):
            exp[i] = v
            v = v * self.g % p
        log = np.full(p, -1, dtype=np.int64)
        log[exp] = np.arange(n, dtype=np.int64)
        self.exp_table = exp
        self.log_table = log
        # Seeded from the OS; numpy's generator is acceptable only because this
        # profile is insecure by construction (docs/design.md §3.1).
        self._rng = np.random.default_rng(secrets.randbits(128))

    # -- elements -------------------------------------------------------------
    def generator(self) -> Elements:
        return np.array([self.g], dtype=np.int64)

    def identity(self, count: int) -> Elements:
        return np.ones(count, dtype=np.int64)

    def random_elements(self, count: int) -> Elements:
        return self._rng.integers(1, self.p, size=count, dtype=np.int64)

    def mul(self, x: Elements, y: Elements) -> Elements:
        return (np.asarray(x, dtype=np.int64) * np.asarray(y, dtype=np.int64)) % self.p

    def div(self, x: Elements, y: Elements) -> Elements:
        inv = self.exp_table[(-self.log_table[np.asarray(y, dtype=np.int64)]) % self.order]
        return self.mul(x, inv)

    def pow(self, x: Elements, k: int) -> Elements:
        return self.exp_table[
            (self.log_table[np.asarray(x, dtype=np.int64)] * (k % self.order)) % self.order
        ]

    def pow_fixed(self, base: Elements, ks: Scalars) -> Elements:
        lb = int(self.log_table[int(np.asarray(base).reshape(-1)[0])])
        return self.exp_table[(np.asarray(ks, dtype=np.int64) * lb) % self.order]

    def equal(self, x: Elements, y: Elements) -> bool:
        return bool(np.array_equal(np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64)))

    def sampdist_rows(
        self, bases: Sequence[Elements], cts: Elements, scalars: Scalars | None = None
    ) -> Elements:
        """SampDist for a whole (N, nb) batch in the log domain: one gather per component.

        g^r * u = g1^(r * log g + log u); the same r for every component.
        """
        n = self.order
        lg = self.log_table[np.array([int(np.asarray(e).reshape(-1)[0]) for e in bases])]
        if scalars is None:
            r = self._rng.integers(0, n, size=len(cts), dtype=np.int64)
        else:
            r = np.asarray(scalars, dtype=np.int64) % n
        logs = self.log_table[np.asarray(cts, dtype=np.int64)]
        for k in range(len(bases)):
            logs[:, k] += r if lg[k] == 1 else (r * lg[k]) % n
        logs %= n
        out: Elements = self.exp_table[logs]
        return out

    def log(self, x: Elements) -> npt.NDArray[np.int64]:
        """Discrete logarithm to base g1: trivial here, which is the point."""
        return self.log_table[np.asarray(x, dtype=np.int64)]

    # -- scalars --------------------------------------------------------------
    def random_scalar(self) -> int:
        return secrets.randbelow(self.order)

    def random_scalars(self, count: int) -> Scalars:
        return self._rng.integers(0, self.order, size=count, dtype=np.int64)

    def scalars_from_ints(self, values: list[int]) -> Scalars:
        return np.array([v % self.order for v in values], dtype=np.int64)

    # -- encodings ------------------------------------------------------------
    def _check(self, x: npt.NDArray[Any], what: str) -> None:
        bad = np.flatnonzero((x < 1) | (x >= self.p))
        if bad.size:
            i = int(bad[0])
            raise EncodingError(
                f"{what} {i}: {int(x[i])} is not an element of Z_{self.p}^* (1..{self.p - 1})"
            )

    def to_bytes(self, x: Elements) -> npt.NDArray[np.uint8]:
        return np.asarray(x, dtype=">u2").view(np.uint8).reshape(-1, 2)

    def from_bytes(self, data: npt.NDArray[np.uint8]) -> Elements:
        data = np.asarray(data)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 2:
            raise EncodingError(
                f"expected uint8 (N, 2) element encodings, got {data.dtype} {data.shape}"
            )
        x = np.ascontiguousarray(data).view(">u2").reshape(-1).astype(np.int64)
        self._check(x, "element")
        return x

    def to_json(self, x: Elements) -> list[Any]:
        return [int(v) for v in np.asarray(x).reshape(-1)]

    def from_json(self, values: list[Any]) -> Elements:
        if not isinstance(values, list):
            raise EncodingError("expected a list of integers")
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, int):
                raise EncodingError(f"element {i}: expected an integer, got {v!r}")
            if not 1 <= v < self.p:  # before numpy: a huge int would overflow int64
                raise EncodingError(
                    f"element {i}: {v} is not an element of Z_{self.p}^* (1..{self.p - 1})"
                )
        x = np.array(values, dtype=np.int64)
        self._check(x, "element")
        return x
