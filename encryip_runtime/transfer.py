"""Transfer functions Φ (ciphertext -> training target) and Φ⁻¹ (network output -> ciphertext).

* paper: Φ(c) = one-hot(u1) ‖ one-hot(u2) ‖ one-hot(u3), each over p positions
  (position = element value), so the network has 3p logits; Φ⁻¹ = argmax per block.
* secure: a codebook of S = K + T fixed ciphertexts; Φ(c) = one-hot of c's slot,
  Φ⁻¹(logits) = codebook[argmax] (docs/design.md §3.2).

Per-licensee variants permute the network's outputs: output k of the variant is
output ``order[k]`` of the base network. The paper profile stores ``order`` in the
manifest; the secure profile folds it into the codebook instead.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from encryip_runtime.crypto.scheme import Ciphertexts
from encryip_runtime.exceptions import InputError

__all__ = ["CodebookTransfer", "OneHotTransfer", "Transfer", "invert_permutation"]


def invert_permutation(order: npt.ArrayLike) -> npt.NDArray[np.int64]:
    order = np.asarray(order, dtype=np.int64)
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order), dtype=np.int64)
    return inv


class Transfer(Protocol):
    dim: int

    def phi_inv(self, logits: npt.NDArray[Any]) -> Ciphertexts: ...


def _check_logits(logits: npt.NDArray[Any], dim: int) -> npt.NDArray[Any]:
    a = np.asarray(logits)
    if a.ndim != 2 or a.shape[1] != dim:
        raise InputError(f"model output: expected shape (N, {dim}), got {a.shape}")
    return a


class OneHotTransfer:
    """Paper profile: three one-hot blocks of width p."""

    def __init__(self, p: int, output_order: npt.ArrayLike | None = None):
        self.p = p
        self.dim = 3 * p
        if output_order is None:
            self._undo: npt.NDArray[np.int64] | None = None
        else:
            order = np.asarray(output_order, dtype=np.int64)
            if sorted(order.tolist()) != list(range(self.dim)):
                raise ValueError(f"output_order must be a permutation of 0..{self.dim - 1}")
            self._undo = invert_permutation(order)

    def phi(self, cts: Ciphertexts) -> npt.NDArray[np.float32]:
        """Training target / the paper's output form: float32 (N, 3p)."""
        c = np.asarray(cts, dtype=np.int64)
        out = np.zeros((len(c), self.dim), dtype=np.float32)
        rows = np.arange(len(c))
        for k in range(3):
            out[rows, k * self.p + c[:, k]] = 1.0
        return out

    def to_base_order(self, logits: npt.NDArray[Any]) -> npt.NDArray[Any]:
        a = _check_logits(logits, self.dim)
        return a if self._undo is None else a[:, self._undo]

    def phi_inv(self, logits: npt.NDArray[Any]) -> Ciphertexts:
        """argmax of each block over positions 1..p-1 (position 0 is not an element)."""
        a = self.to_base_order(logits).reshape(len(logits), 3, self.p)
        return np.argmax(a[:, :, 1:], axis=2).astype(np.int64) + 1


class CodebookTransfer:
    """Secure profile: Φ⁻¹(logits) = codebook[argmax(logits)]."""

    def __init__(self, codebook: Ciphertexts):
        self.codebook = np.ascontiguousarray(codebook)
        self.dim = len(self.codebook)

    def phi_slots(self, slots: npt.ArrayLike) -> npt.NDArray[np.float32]:
        s = np.asarray(slots, dtype=np.int64)
        out = np.zeros((len(s), self.dim), dtype=np.float32)
        out[np.arange(len(s)), s] = 1.0
        return out

    def slots(self, logits: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
        return np.argmax(_check_logits(logits, self.dim), axis=1).astype(np.int64)

    def phi_inv(self, logits: npt.NDArray[Any]) -> Ciphertexts:
        out: Ciphertexts = self.codebook[self.slots(logits)]
        return out
