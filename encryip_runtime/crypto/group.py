"""The small group interface both crypto profiles implement.

Everything is batch-first: a batch of elements is a numpy array whose first axis
runs over elements (``int64 (N,)`` for Z_p^*, ``uint8 (N, 32)`` for ristretto255).
A single element is whatever ``batch[i]`` gives. Scalars are Python ints mod
``order``; a batch of scalars is a numpy array (``Scalars``) whose layout the
group chooses (``int64 (N,)`` or ``uint8 (N, 32)`` little-endian).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
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
