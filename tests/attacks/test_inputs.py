"""Input-side trigger detectors (encryip_runtime.attacks.inputs) on real MNIST images:
noise triggers are obvious to every detector, held-out natural images to none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encryip_runtime.attacks.inputs import (
    MaxSoftmaxDetector,
    NearestNeighbourDetector,
    PixelStatsDetector,
    auroc,
    softmax_regression,
)

MNIST = Path(__file__).resolve().parents[2] / "data" / "mnist"


def _idx(name: str, offset: int, shape: tuple[int, ...]) -> np.ndarray:
    raw = np.fromfile(MNIST / name, dtype=np.uint8)[offset:]
    return raw.reshape(shape)


@pytest.fixture(scope="module")
def mnist() -> tuple[np.ndarray, np.ndarray]:
    if not (MNIST / "t10k-images-idx3-ubyte").is_file():
        pytest.skip("MNIST not installed: run scripts/bootstrap.sh")
    x = _idx("t10k-images-idx3-ubyte", 16, (10000, 1, 28, 28))[:3000]
    y = _idx("t10k-labels-idx1-ubyte", 8, (10000,))[:3000].astype(np.int64)
    return x, y


def test_auroc_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.5, 1, 40), np.round(rng.normal(0, 1, 70), 1)
    pos[:5] = neg[:5]  # ties count half
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auroc(neg, pos) == pytest.approx(pairs)  # (natural, trigger) scores
    assert auroc([0, 1], [2, 3]) == 1.0 and auroc([2, 3], [0, 1]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5


def test_noise_triggers_are_obvious_and_held_out_images_are_not(
    mnist: tuple[np.ndarray, np.ndarray],
) -> None:
    from exporter.triggers import make_trigger_inputs

    x, y = mnist
    attacker_x, attacker_y = x[:2000], y[:2000]  # what the attacker fits on
    natural = x[2000:2800]  # ordinary queries
    held_out = x[2800:3000]  # natural images the attacker never saw: data triggers
    noise = make_trigger_inputs(200, (1, 28, 28), seed=5)
    detectors = {
        "max_softmax": MaxSoftmaxDetector(softmax_regression(attacker_x, attacker_y)),
        "pixel_stats": PixelStatsDetector(attacker_x),
        "nearest_neighbour": NearestNeighbourDetector(attacker_x),
    }
    for name, d in detectors.items():
        neg = d.score(natural)
        assert 0.4 <= auroc(neg, d.score(held_out)) <= 0.6, name
        if name != "max_softmax":  # a linear classifier can be confident on noise
            assert auroc(neg, d.score(noise)) >= 0.99, name
