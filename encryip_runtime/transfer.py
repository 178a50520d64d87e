"""Transfer functions Φ (ciphertext -> training target) and Φ⁻¹ (network output -> ciphertext).

* paper: Φ(c) = one-hot(u1) ‖ one-hot(u2) ‖ one-hot(u3), each over p positions
  (position = element value), so the network has 3p logits. Φ⁻¹ is either the paper's
  rule (``argmax``: an independent argmax per block, which can assemble a triple that is
  no ciphertext the network was trained on) or the ``joint`` decoder: the codeword (one
  of the release's K + T ciphertexts) with the highest summed per-block log-probability.
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

__all__ = [
    "DECODERS",
    "CodebookTransfer",
    "OneHotTransfer",
    "Transfer",
    "invert_permutation",
]

#: Φ⁻¹ rules of the paper profile: ``joint`` (default for new releases) and ``argmax``
#: (the paper's per-block rule, kept for reproduction; also what a manifest without a
#: ``decoder`` field means).
DECODERS: tuple[str, ...] = ("joint", "argmax")


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
    """Paper profile: three one-hot blocks of width p.

    ``codewords`` (the release's K + T ciphertexts, int64 ``(S, 3)``) switch Φ⁻¹ to the
    joint decoder; without them Φ⁻¹ is the paper's per-block argmax.
    """

    def __init__(
        self,
        p: int,
        output_order: npt.ArrayLike | None = None,
        codewords: npt.ArrayLike | None = None,
    ):
        self.p = p
        self.dim = 3 * p
        if output_order is None:
            self._undo: npt.NDArray[np.int64] | None = None
        else:
            order = np.asarray(output_order, dtype=np.int64)
            if sorted(order.tolist()) != list(range(self.dim)):
                raise ValueError(f"output_order must be a permutation of 0..{self.dim - 1}")
            self._undo = invert_permutation(order)
        self.codewords: npt.NDArray[np.int64] | None = None
        if codewords is not None:
            cw = np.asarray(codewords, dtype=np.int64)
            if cw.ndim != 2 or cw.shape[1] != 3 or len(cw) == 0:
                raise ValueError(f"codewords: expected int64 (S, 3) with S >= 1, got {cw.shape}")
            if cw.min() < 1 or cw.max() > p - 1:
                raise ValueError(f"codewords: elements must lie in [1, {p - 1}]")
            self.codewords = cw
            # Column of each codeword's component in the flat (3p) base-order output.
            self._cols = cw + np.arange(3, dtype=np.int64) * p

    @property
    def decoder(self) -> str:
        return "argmax" if self.codewords is None else "joint"

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
        if self.codewords is None:
            return self.phi_inv_argmax(logits)
        return self.codewords[self.codeword_index(logits)]

    def phi_inv_argmax(self, logits: npt.NDArray[Any]) -> Ciphertexts:
        """The paper's rule: argmax of each block over positions 1..p-1 (0 is no element)."""
        a = self.to_base_order(logits).reshape(len(logits), 3, self.p)
        return np.argmax(a[:, :, 1:], axis=2).astype(np.int64) + 1

    def codeword_index(self, logits: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
        """Joint decoder: per row, the codeword maximising Σ_b log softmax(block b)[c_b].

        Each block's log-softmax is its logits minus that block's log-sum-exp, a constant
        per row and block, so the argmax over codewords is the argmax of the summed raw
        logits: one gather of S x 3 columns and a sum, no exponentials.
        """
        assert self.codewords is not None
        a = np.asarray(self.to_base_order(logits), dtype=np.float64)
        scores = a[:, self._cols].sum(axis=2)  # (N, S)
        return np.argmax(scores, axis=1).astype(np.int64)


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
