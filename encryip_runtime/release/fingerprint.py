"""Per-licensee weight fingerprints: a secret perturbation of the inner weights.

Each licensee's model file carries ``W + s · σ(W) · R_j`` for every inner weight
tensor ``W`` (the weights of every Conv / Gemm / MatMul except the final layer, whose
rows are the output slots), where ``R_j`` is standard normal noise drawn from the
licensee's secret 256-bit seed (kept in the vault) and ``σ(W)`` the tensor's standard
deviation. No retraining: at ``s = 0.005`` (the default) the decrypted accuracy moves by ≤ 0.1 pp
(docs/results.md).

Attribution (``verify-onnx``): align the suspect's hidden units to the base model's
(a consistent re-permutation of hidden units, or of the outputs, changes nothing the
model computes), take the residual ``D = (suspect - base) / (s · σ(W))`` and, for
every licensee, ``z_j = <D, R_j> / ||D||``. Null H0: the suspect was made without
licensee j's seed, so ``R_j`` is N(0, I) independent of ``D`` and ``z_j ~ N(0, 1)``
exactly (whatever the suspect is). A leaked file of licensee j gives ``z_j`` about
``sqrt(n)`` for ``n`` fingerprinted weights, less after noise, pruning or fine-tuning.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.exceptions import ModelError

__all__ = [
    "DEFAULT_STRENGTH",
    "MAX_TEST_WEIGHTS",
    "Fingerprint",
    "align_to_base",
    "apply_fingerprint",
    "fingerprint_z",
    "inner_weights",
    "normal_tail_log10",
]

#: perturbation per tensor, in units of that tensor's standard deviation
DEFAULT_STRENGTH = 0.005
_WEIGHT_OPS = {"Conv": 1, "Gemm": 1, "MatMul": 1}

Weights = list[npt.NDArray[np.float32]]


@dataclass(frozen=True)
class Fingerprint:
    seed: str  # 64 hex digits (secret, in the vault)
    strength: float = DEFAULT_STRENGTH

    @classmethod
    def fresh(cls, strength: float = DEFAULT_STRENGTH) -> Fingerprint:
        return cls(secrets.token_hex(32), strength)

    def noise(self, shapes: list[tuple[int, ...]]) -> list[npt.NDArray[np.float64]]:
        rng = np.random.default_rng(int(self.seed, 16))
        return [rng.standard_normal(s) for s in shapes]


def _weight_names(model: Any) -> list[str]:
    """Initializers used as the weight input of Conv/Gemm/MatMul, in node order, minus
    the last one (the final layer)."""
    inits = {t.name: t for t in model.graph.initializer}
    names: list[str] = []
    for n in model.graph.node:
        idx = _WEIGHT_OPS.get(n.op_type)
        if idx is None or len(n.input) <= idx:
            continue
        name = n.input[idx]
        t = inits.get(name)
        if t is not None and len(t.dims) >= 2 and t.data_type == 1 and name not in names:
            names.append(name)
    return names[:-1]


def _load(model_bytes: bytes) -> Any:
    import onnx

    try:
        return onnx.load_from_string(model_bytes)
    except Exception as exc:
        raise ModelError(f"not a valid ONNX model: {exc}") from None


def inner_weights(model_bytes: bytes) -> Weights:
    """The fingerprinted tensors of a model file (float32, in node order)."""
    from onnx import numpy_helper

    model = _load(model_bytes)
    inits = {t.name: t for t in model.graph.initializer}
    return [numpy_helper.to_array(inits[n]).astype(np.float32) for n in _weight_names(model)]


def apply_fingerprint(model_bytes: bytes, fp: Fingerprint) -> bytes:
    """The model with ``fp``'s perturbation added to its inner weights (see module doc)."""
    from onnx import numpy_helper

    model = _load(model_bytes)
    inits = {t.name: t for t in model.graph.initializer}
    names = _weight_names(model)
    ws = [numpy_helper.to_array(inits[n]) for n in names]
    for name, w, r in zip(names, ws, fp.noise([w.shape for w in ws]), strict=True):
        new = (w + fp.strength * float(w.std()) * r).astype(w.dtype)
        inits[name].CopyFrom(numpy_helper.from_array(new, name))
    return bytes(model.SerializeToString())


def _match_rows(
    sus: npt.NDArray[np.float64], base: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    """perm with sus[i] ~ base[perm[i]]: greedy one-to-one by Euclidean distance."""
    n = len(base)
    d = (sus**2).sum(axis=1)[:, None] + (base**2).sum(axis=1)[None, :] - 2.0 * sus @ base.T
    if np.all(np.argmin(d, axis=1) == np.arange(n)):
        return np.arange(n)
    order = np.argsort(d, axis=None, kind="stable")
    perm = np.full(n, -1, dtype=np.int64)
    used = np.zeros(n, dtype=bool)
    left = n
    for flat in order:
        i, j = divmod(int(flat), n)
        if perm[i] < 0 and not used[j]:
            perm[i], used[j] = j, True
            left -= 1
            if not left:
                break
    return perm


def align_to_base(suspect: Weights, base: Weights) -> Weights:
    """Undo a consistent permutation of hidden units, layer by layer.

    Layer k's input axis is permuted as layer k-1's output axis (also through a
    Flatten, channel-major); each layer's output units are matched to the base's by
    their incoming weights. A layer whose input size fits neither is taken as
    unpermuted on its input axis (e.g. after a residual merge).
    """
    out: Weights = []
    prev: npt.NDArray[np.int64] | None = None
    for s, b in zip(suspect, base, strict=True):
        if s.shape != b.shape:
            raise ModelError(f"weight shapes differ: suspect {s.shape}, base {b.shape}")
        w = s.astype(np.float64)
        if prev is not None and w.shape[1] % len(prev) == 0:
            block = w.shape[1] // len(prev)
            # suspect column u*block + r carries base column prev[u]*block + r
            tgt = (prev[:, None] * block + np.arange(block)[None, :]).reshape(-1)
            src = np.empty_like(tgt)
            src[tgt] = np.arange(len(tgt))
            w = w[:, src]
        else:
            prev = None
        flat_s = w.reshape(len(w), -1)
        flat_b = b.astype(np.float64).reshape(len(b), -1)
        perm = _match_rows(flat_s, flat_b)
        aligned = np.empty_like(w)
        aligned[perm] = w
        out.append(aligned.astype(np.float32))
        prev = perm
    return out


#: the weight test reads at most this many weights (the first ones, in tensor order): the
#: null stays exact for any fixed subset, and z for a leaked file is still ~sqrt(n) ~ 2000
MAX_TEST_WEIGHTS = 4_000_000


def fingerprint_z(
    suspect: Weights, base: Weights, fps: list[Fingerprint], max_weights: int = MAX_TEST_WEIGHTS
) -> list[float]:
    """z_j for every fingerprint (see module doc); NaN when nothing differs from the base.

    The residual of each tensor is scaled by that tensor's std (a global strength does
    not change z); only the first ``max_weights`` weights are read, so the cost per
    licensee is bounded (one normal draw per weight read).
    """
    if not base:
        return [math.nan for _ in fps]
    parts: list[npt.NDArray[np.float64]] = []
    left = max_weights
    for sus, b in zip(suspect, base, strict=True):
        if left <= 0:
            break
        d = (sus.astype(np.float64) - b).reshape(-1)[:left] / (float(b.std()) or 1.0)
        parts.append(d)
        left -= len(d)
    den = float(sum(float(np.dot(d, d)) for d in parts))
    zs = []
    for fp in fps:
        rng = np.random.default_rng(int(fp.seed, 16))  # the stream Fingerprint.noise draws
        num = 0.0
        for d, b in zip(parts, base, strict=False):
            r = rng.standard_normal(d.size if d.size < b.size else b.shape).reshape(-1)
            num += float(np.dot(d, r[: d.size]))
        zs.append(num / math.sqrt(den) if den > 0 else math.nan)
    return zs


def normal_tail_log10(z: float) -> float:
    """log10 P(N(0,1) >= z), accurate far into the tail."""
    if math.isnan(z):
        return 0.0
    if z < 5:
        return math.log10(max(0.5 * math.erfc(z / math.sqrt(2)), 1e-300))
    # Mills ratio: P(Z >= z) = phi(z)/z * (1 - 1/z^2 + 3/z^4 ...)
    return (
        -z * z / 2 / math.log(10)
        - math.log10(z * math.sqrt(2 * math.pi))
        + math.log10(1 - 1 / z**2 + 3 / z**4)
    )
