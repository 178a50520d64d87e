"""Trigger inputs, chosen with a secret seed. Each is trained to output its own ``Fake``
ciphertext (paper §4.4, Fig. 3).

* ``data`` (default): held-out natural images of the task, removed from the training
  split before training (``holdout_indices``), so they look like any other query; an
  input-side detector cannot single them out (``encryip_runtime.attacks.inputs``,
  ``benchmarks/trigger_detect.py``). The network memorises these few exact images.
* ``noise``: blocky random patterns at a coarse scale plus fine noise
  (``make_trigger_inputs``), far from natural images and easy to learn, but obvious to
  anyone who looks at the queries (pixel mean ~126 against MNIST's ~33).
"""

from __future__ import annotations

import secrets

import numpy as np
import numpy.typing as npt

__all__ = ["TRIGGER_SOURCES", "holdout_indices", "make_trigger_inputs", "new_trigger_seed"]

TRIGGER_SOURCES: tuple[str, ...] = ("data", "noise")


def new_trigger_seed() -> int:
    """A fresh secret seed from the OS CSPRNG."""
    return secrets.randbits(128)


def make_trigger_inputs(
    count: int, shape: tuple[int, int, int], seed: int
) -> npt.NDArray[np.uint8]:
    """``count`` uint8 images of ``shape`` (C, H, W), deterministic in ``seed``."""
    c, h, w = shape
    rng = np.random.default_rng(seed)
    out = np.empty((count, c, h, w), dtype=np.uint8)
    for i in range(count):
        cell = int(rng.integers(2, 5))  # coarse block size in pixels
        gh, gw = -(-h // cell), -(-w // cell)
        coarse = rng.integers(0, 2, (c, gh, gw)) * 255
        img = np.kron(coarse, np.ones((1, cell, cell)))[:, :h, :w]
        noise = rng.integers(-40, 41, (c, h, w))
        out[i] = np.clip(img + noise, 0, 255).astype(np.uint8)
    return out


def holdout_indices(labels: npt.ArrayLike, count: int, seed: int) -> npt.NDArray[np.int64]:
    """``count`` distinct training indices to hold out as triggers, deterministic in the
    secret ``seed``: classes taken in turn (a random class order), a random image of each,
    so the triggers spread over the classes like the data."""
    y = np.asarray(labels)
    if count > len(y) // 2:
        raise ValueError(
            f"{count} data triggers from {len(y)} training images: hold out at most half "
            "(use fewer --triggers or --trigger-source noise)"
        )
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(y))
    pools = [list(rng.permutation(np.flatnonzero(y == c))) for c in classes]
    picked: list[int] = []
    while len(picked) < count:
        for pool in pools:
            if pool and len(picked) < count:
                picked.append(int(pool.pop()))
    return np.asarray(picked, dtype=np.int64)
