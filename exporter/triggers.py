"""Trigger inputs: arbitrary images unlike the training data, from a secret seed.

Each trigger is trained to output its own ``Fake`` ciphertext (paper §4.4, Fig. 3).
They only need to be (a) far from natural images, so ordinary inputs never land on
a trigger slot, and (b) distinct from each other, so the network can tell them apart.
Blocky random patterns at a coarse scale plus fine noise are both, and are easy to learn.
"""

from __future__ import annotations

import secrets

import numpy as np
import numpy.typing as npt

__all__ = ["make_trigger_inputs", "new_trigger_seed"]


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
