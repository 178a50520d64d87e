"""The small group interface both crypto profiles implement.

Everything is batch-first: a batch of elements is a numpy array whose first axis
runs over elements (``int64 (N,)`` for Z_p^*, ``uint8 (N, 32)`` for ristretto255).
A single element is whatever ``batch[i]`` gives. Scalars are Python ints mod
``order``; a batch of scalars is a numpy array (``Scalars``) whose layout the
group chooses (``int64 (N,)`` or ``uint8 (N, 32)`` little-endian).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Elements = npt.NDArray[Any]
Scalars = npt.NDArray[Any]

__all__ = ["Elements", "Group", "Scalars"]


class Group(ABC):
    """A cyclic group with the handful of operations CS_lite needs."""

    #: Short name, e.g. ``"ristretto255"`` or ``"Zp*(p=11)"``.
    name: str
    #: Modulus of exponents: ``p - 1`` for Z_p^*, the prime ``L`` for ristretto255.
    order: int
    #: Bytes of one element on the wire.
    element_size: int
    #: What computes the group operations, for model info and metrics ("numpy",
    #: "native", "libsodium"). Chosen once, when the group is built.
    backend: str = "numpy"

    # -- elements -------------------------------------------------------------
    @abstractmethod
    def generator(self) -> Elements:
        """The fixed generator ``g1`` as a batch of one."""

    @abstractmethod
    def identity(self, count: int) -> Elements:
        """``count`` copies of the identity element."""

    @abstractmethod
    def random_elements(self, count: int) -> Elements:
        """Uniformly random elements."""

    @abstractmethod
    def mul(self, x: Elements, y: Elements) -> Elements:
        """Element-wise group operation (broadcasts a batch of one)."""

    @abstractmethod
    def div(self, x: Elements, y: Elements) -> Elements:
        """Element-wise ``x * y^-1`` (broadcasts a batch of one)."""

    @abstractmethod
    def pow(self, x: Elements, k: int) -> Elements:
        """Every element of ``x`` raised to the same scalar ``k``."""

    @abstractmethod
    def pow_fixed(self, base: Elements, ks: Scalars) -> Elements:
        """One fixed element (a batch of one) raised to each scalar of ``ks``."""

    @abstractmethod
    def equal(self, x: Elements, y: Elements) -> bool:
        """Whether two batches hold the same elements (constant time where it matters)."""

    # -- scalars --------------------------------------------------------------
    @abstractmethod
    def random_scalar(self) -> int:
        """A uniform scalar in ``[0, order)`` from a cryptographic source where it matters."""

    @abstractmethod
    def random_scalars(self, count: int) -> Scalars:
        """``count`` uniform scalars in the group's batch layout."""

    @abstractmethod
    def scalars_from_ints(self, values: list[int]) -> Scalars:
        """Python ints (reduced mod ``order``) in the batch layout."""

    # -- encodings ------------------------------------------------------------
    @abstractmethod
    def to_bytes(self, x: Elements) -> npt.NDArray[np.uint8]:
        """Wire encoding, ``uint8 (N, element_size)``."""

    @abstractmethod
    def from_bytes(self, data: npt.NDArray[np.uint8]) -> Elements:
        """Parse and validate ``uint8 (N, element_size)``; raises ``EncodingError``."""

    @abstractmethod
    def to_json(self, x: Elements) -> list[Any]:
        """JSON form of each element (hex strings or integers, docs/design.md §4)."""

    @abstractmethod
    def from_json(self, values: list[Any]) -> Elements:
        """Parse and validate JSON forms; raises ``EncodingError`` naming the bad item."""

    def scalar_to_json(self, k: int) -> Any:
        """JSON form of a scalar (docs/design.md §4)."""
        return int(k)

    def scalar_from_json(self, value: Any) -> int:
        """Parse a scalar, rejecting out-of-range values."""
        from encryip_runtime.exceptions import EncodingError

        if isinstance(value, bool) or not isinstance(value, int):
            raise EncodingError(f"scalar must be an integer, got {type(value).__name__}")
        if not 0 <= value < self.order:
            raise EncodingError(f"scalar {value} out of range [0, {self.order})")
        return value

    def stack(self, parts: list[Elements]) -> Elements:
        """Concatenate batches."""
        return np.concatenate(parts, axis=0)

    # -- batch operations of SampDist (a group overrides what it can do faster) -
    def multiples(self, bases: Sequence[Elements], ks: Scalars) -> list[Elements]:
        """``[base^r for each scalar r]`` for each fixed base (each a batch of one)."""
        return [self.pow_fixed(b, ks) for b in bases]

    def rerandomizers(self, g2: Elements, h: Elements, ks: Scalars) -> tuple[Elements, ...]:
        """``(g1^r, g2^r, h^r)`` for each scalar r, with g1 the generator."""
        return tuple(self.multiples([self.generator(), g2, h], ks))

    def sampdist_rows(
        self, bases: Sequence[Elements], cts: Elements, scalars: Scalars | None = None
    ) -> Elements:
        """SampDist of a batch with ``len(bases)`` components on axis 1: component k of
        row i becomes ``base_k^(r_i) * u_ik``, one fresh r per row unless ``scalars``."""
        ks = self.random_scalars(len(cts)) if scalars is None else scalars
        rs = self.multiples(bases, ks)
        return np.stack([self.mul(r, cts[:, k]) for k, r in enumerate(rs)], axis=1)

    def sampdist_batch(
        self,
        g1: Elements,
        g2: Elements,
        h: Elements,
        cts: Elements,
        scalars: Scalars | None = None,
    ) -> Elements:
        """SampDist of a three-component batch: ``(g1^r u1, g2^r u2, h^r u3)`` per row."""
        return self.sampdist_rows([g1, g2, h], cts, scalars)

    def dec_rows(self, cts: Elements, a: int, b: int) -> Elements:
        """Dec of a three-component batch under ``sk = (a, b)``: ``u3 / (u1^a u2^b)``."""
        mask = self.mul(self.pow(cts[:, 0], a), self.pow(cts[:, 1], b))
        return self.div(cts[:, 2], mask)

    def prepare_codebook(self, codebook: Elements) -> Any:
        """Whatever makes :meth:`sampdist_codebook` fast for this fixed ``codebook``
        (entries on axis 0, components on axis 1). Default: the codebook itself."""
        return np.ascontiguousarray(codebook)

    def sampdist_codebook(
        self,
        bases: Sequence[Elements],
        prepared: Any,
        slots: npt.NDArray[np.integer],
        scalars: Scalars | None = None,
    ) -> Elements:
        """SampDist of ``codebook[slots]``, ``prepared`` from :meth:`prepare_codebook`."""
        return self.sampdist_rows(bases, prepared[np.asarray(slots, dtype=np.int64)], scalars)
