"""Φ⁻¹ of the paper profile: the joint decoder never returns a non-codeword."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_release import make_tiny_release

from encryip_runtime.exceptions import EncryIPError
from encryip_runtime.formats.manifest import Manifest
from encryip_runtime.pipeline import ProtectedModel
from encryip_runtime.transfer import OneHotTransfer

P = 11  # MNIST's paper prime: blocks of 11 positions, elements 1..10


def _codewords(rng: np.random.Generator, s: int) -> np.ndarray:
    return rng.integers(1, P, (s, 3)).astype(np.int64)


def _log_softmax(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=-1, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("seed", range(5))
def test_joint_decoder_returns_only_codewords_and_the_most_likely_one(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cw = _codewords(rng, 42)
    logits = rng.normal(0, 3, (2000, 3 * P)).astype(np.float32)
    got = OneHotTransfer(P, codewords=cw).phi_inv(logits)
    words = {tuple(r) for r in cw.tolist()}
    assert all(tuple(r) in words for r in got.tolist())
    # Brute force: the codeword with the highest Σ_b log softmax(block b)[c_b].
    lp = _log_softmax(logits.astype(np.float64).reshape(-1, 3, P))
    score = sum(lp[:, b, cw[:, b]] for b in range(3))  # (N, S)
    best = cw[np.argmax(score, axis=1)]
    assert np.array_equal(got, best)
    # The paper's per-block rule on the same outputs does produce non-codewords.
    free = OneHotTransfer(P).phi_inv(logits)
    assert sum(tuple(r) not in words for r in free.tolist()) > 0


def test_joint_equals_argmax_when_the_argmax_is_a_codeword() -> None:
    rng = np.random.default_rng(7)
    cw = _codewords(rng, 12)
    logits = rng.normal(0, 0.1, (len(cw), 3 * P)).astype(np.float32)
    for b in range(3):
        logits[np.arange(len(cw)), b * P + cw[:, b]] += 5.0
    assert np.array_equal(OneHotTransfer(P).phi_inv(logits), cw)
    assert np.array_equal(OneHotTransfer(P, codewords=cw).phi_inv(logits), cw)


def test_joint_decoder_undoes_the_licensee_output_order() -> None:
    rng = np.random.default_rng(3)
    cw = _codewords(rng, 20)
    order = np.concatenate([b * P + rng.permutation(P) for b in range(3)])
    base = rng.normal(0, 2, (500, 3 * P)).astype(np.float32)
    variant = base[:, order]  # output k of the variant is base output order[k]
    a = OneHotTransfer(P, codewords=cw).phi_inv(base)
    b = OneHotTransfer(P, order, codewords=cw).phi_inv(variant)
    assert np.array_equal(a, b)


def test_codewords_are_checked() -> None:
    with pytest.raises(ValueError, match="codewords"):
        OneHotTransfer(P, codewords=np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"\(S, 3\)"):
        OneHotTransfer(P, codewords=np.ones((3, 2), dtype=np.int64))


def test_release_manifest_records_the_decoder_and_the_runtime_uses_it(tmp_path: Path) -> None:
    rel = make_tiny_release(tmp_path / "rel", profile="paper", num_triggers=8)
    m = Manifest.load(rel.paths.manifest)
    assert m.decoder == "joint" and m.codewords is not None and len(m.codewords) == 10 + 8
    for name in rel.licensees:
        lm = Manifest.load(rel.licensee_dir(name) / "manifest.json")
        assert lm.decoder == "joint" and np.array_equal(lm.codewords, m.codewords)
        pm = ProtectedModel.load(rel.licensee_dir(name))
        x = np.random.default_rng(1).integers(0, 256, (300, 1, 8, 8), dtype=np.uint8)
        cts = pm.transfer.phi_inv(pm.logits(x))
        words = {tuple(r) for r in m.codewords.tolist()}
        assert all(tuple(r) in words for r in cts.tolist())


def test_manifest_without_decoder_means_argmax_and_joint_needs_codewords(tmp_path: Path) -> None:
    rel = make_tiny_release(tmp_path / "rel", profile="paper", num_triggers=4)
    doc = json.loads(rel.paths.manifest.read_text())
    old = {k: v for k, v in doc.items() if k not in ("decoder", "codewords")}
    p = tmp_path / "old.json"
    p.write_text(json.dumps(old))
    m = Manifest.load(p)
    assert m.decoder is None and m.transfer().decoder == "argmax"  # type: ignore[attr-defined]
    p.write_text(json.dumps({**old, "decoder": "joint"}))
    with pytest.raises(EncryIPError, match="codewords"):
        Manifest.load(p)
    p.write_text(json.dumps({**doc, "decoder": "nearest"}))
    with pytest.raises(EncryIPError, match="decoder"):
        Manifest.load(p)
