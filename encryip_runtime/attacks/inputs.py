"""Input-side trigger detectors: can someone who sees the queries spot the trigger images?

A leaker (or a proxy in front of the owner's server) that recognises the arbitrator's
trigger queries can answer them with a plausible label and dodge attribution. Noise
triggers are obvious (pixel mean 126 and std 118 against MNIST's 33); triggers drawn
from the data's own distribution (``encryip-export --trigger-source data``, the default)
should not be. Each detector here scores images (higher = "looks like a trigger") and
is fitted only on what such an attacker has: natural images of the task, and for the
max-softmax baseline a plain classifier it trains itself.

* :class:`MaxSoftmaxDetector`: the classic out-of-distribution baseline (Hendrycks &
  Gimpel, 2017): 1 − the attacker's classifier's highest softmax probability.
* :class:`PixelStatsDetector`: Mahalanobis distance of per-image pixel statistics
  (mean, std, fraction of dark / bright pixels, mean gradient) from the reference set.
* :class:`NearestNeighbourDetector`: distance to the nearest reference image (a
  feature-distance detector on raw pixels).

``auroc(natural_scores, trigger_scores)`` (``attacks.detectors``, re-exported here)
summarises a detector: 0.5 is chance, 1.0 a perfect detector. numpy (and onnxruntime
for an ONNX classifier) only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.attacks.detectors import auroc

__all__ = [
    "MaxSoftmaxDetector",
    "NearestNeighbourDetector",
    "PixelStatsDetector",
    "auroc",
    "onnx_logits",
    "softmax_regression",
]

Images = npt.NDArray[np.uint8]  # (N, C, H, W) raw pixels
Logits = Callable[[Images], npt.NDArray[np.float32]]


def _flat(x: Images) -> npt.NDArray[np.float32]:
    return np.asarray(x, dtype=np.float32).reshape(len(x), -1) / 255.0


def _softmax(z: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return out


def softmax_regression(
    x: Images, y: npt.ArrayLike, *, epochs: int = 30, lr: float = 0.5, l2: float = 1e-4
) -> Logits:
    """A plain classifier an attacker trains on its own natural images (numpy only):
    multinomial logistic regression on [0, 1] pixels, full-batch gradient descent."""
    xf = _flat(x)
    labels = np.asarray(y, dtype=np.int64)
    k = int(labels.max()) + 1
    w = np.zeros((xf.shape[1], k), dtype=np.float64)
    b = np.zeros(k, dtype=np.float64)
    onehot = np.eye(k)[labels]
    for _ in range(epochs):
        p = _softmax(xf @ w + b)
        g = (p - onehot) / len(xf)
        w -= lr * (xf.T @ g + l2 * w)
        b -= lr * g.sum(axis=0)
    w32, b32 = w.astype(np.float32), b.astype(np.float32)

    def logits(images: Images) -> npt.NDArray[np.float32]:
        out: npt.NDArray[np.float32] = _flat(images) @ w32 + b32
        return out

    return logits


def onnx_logits(path: str | Path) -> Logits:
    """An attacker's own ONNX classifier (uint8 ``[N, C, H, W]`` in, logits out)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def logits(images: Images) -> npt.NDArray[np.float32]:
        outs = [sess.run(None, {name: images[i : i + 512]})[0] for i in range(0, len(images), 512)]
        return np.concatenate(outs).astype(np.float32)

    return logits


@dataclass(frozen=True)
class MaxSoftmaxDetector:
    """Score = 1 − max softmax of the attacker's own classifier (low confidence = suspect)."""

    logits: Logits

    def score(self, x: Images) -> npt.NDArray[np.float64]:
        return 1.0 - _softmax(self.logits(x)).max(axis=1)


def _pixel_stats(x: Images) -> npt.NDArray[np.float64]:
    f = np.asarray(x, dtype=np.float64).reshape(len(x), -1) / 255.0
    img = np.asarray(x, dtype=np.float64) / 255.0
    grad = np.abs(np.diff(img, axis=-1)).mean(axis=(1, 2, 3)) + np.abs(np.diff(img, axis=-2)).mean(
        axis=(1, 2, 3)
    )
    return np.stack([f.mean(1), f.std(1), (f < 0.1).mean(1), (f > 0.9).mean(1), grad], axis=1)


class PixelStatsDetector:
    """Mahalanobis distance of per-image pixel statistics from the reference images'."""

    def __init__(self, reference: Images):
        s = _pixel_stats(reference)
        self.mean = s.mean(axis=0)
        cov = np.cov(s, rowvar=False) + 1e-9 * np.eye(s.shape[1])
        self.prec = np.linalg.inv(cov)

    def score(self, x: Images) -> npt.NDArray[np.float64]:
        d = _pixel_stats(x) - self.mean
        return np.sqrt(np.einsum("ni,ij,nj->n", d, self.prec, d))


class NearestNeighbourDetector:
    """Euclidean distance (pixels in [0, 1]) to the nearest of the reference images.

    Score the reference images themselves only through a held-out split (each would
    be its own nearest neighbour at distance 0).
    """

    def __init__(self, reference: Images, max_reference: int = 10000):
        self.ref = _flat(reference[:max_reference])
        self.ref_sq = (self.ref.astype(np.float64) ** 2).sum(axis=1)

    def score(self, x: Images) -> npt.NDArray[np.float64]:
        q = _flat(x)
        out = np.empty(len(q))
        for i in range(0, len(q), 512):
            qb = q[i : i + 512]
            d2 = (qb.astype(np.float64) ** 2).sum(1)[:, None] + self.ref_sq[None, :]
            d2 -= 2.0 * (qb @ self.ref.T)
            out[i : i + 512] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
        return out
