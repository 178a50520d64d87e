"""Per-licensee ONNX variants: same decrypted labels as the base model, permuted outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from encryip_runtime.formats import Vault
from encryip_runtime.pipeline import ProtectedModel

from .helpers import base_slots, class_and_trigger_inputs, decrypt, inputs


def test_variant_logits_are_a_permutation_of_the_base(tiny_release: Any, tmp_path: Path) -> None:
    base = ProtectedModel.load(tiny_release.public_dir(tmp_path / "public"))
    vault = Vault.load(tiny_release.paths.vault)
    x = inputs(base, 64, seed=1)
    base_logits = base.logits(x)
    perms = {r.name: np.asarray(r.permutation) for r in vault.licensees}
    for name, perm in perms.items():
        variant = ProtectedModel.load(tiny_release.licensee_dir(name))
        got = variant.logits(x)
        np.testing.assert_allclose(got, base_logits[:, perm], rtol=1e-6, atol=1e-6)
        for other, operm in perms.items():
            if other != name:  # the file carries its own licensee's order, no other
                assert not np.allclose(got, base_logits[:, operm])


def test_variant_decrypts_like_the_base(tiny_release: Any, tmp_path: Path) -> None:
    base = ProtectedModel.load(tiny_release.public_dir(tmp_path / "public"))
    x = inputs(base, 300, seed=2)
    for name in tiny_release.licensees:
        variant = ProtectedModel.load(tiny_release.licensee_dir(name))
        key = tiny_release.key(name)
        # SampDist preserves Dec for any triple, so the same key agrees on every row,
        # trigger slots and (paper) malformed triples included
        np.testing.assert_array_equal(decrypt(variant, key, x), decrypt(base, key, x))


def test_variant_gives_the_true_class_and_the_trigger_labels(
    selector_release: Any, tmp_path: Path
) -> None:
    rel = selector_release
    vault = Vault.load(rel.paths.vault)
    base = ProtectedModel.load(rel.public_dir(tmp_path / "public"))
    if rel.profile == "paper":
        x = inputs(base, 200, seed=3)
        for name in rel.licensees:
            variant = ProtectedModel.load(rel.licensee_dir(name))
            key = rel.key(name)
            np.testing.assert_array_equal(decrypt(variant, key, x), decrypt(base, key, x))
        return
    x, truth, trigger = class_and_trigger_inputs(vault, 300, seed=3)
    np.testing.assert_array_equal(
        base_slots(base, x),
        [
            vault.class_slots[y] if y >= 0 else vault.trigger_slots[t]
            for y, t in zip(truth, trigger, strict=True)
        ],
    )
    on_class, on_trigger = truth >= 0, trigger >= 0
    assert on_class.sum() > 50 and on_trigger.sum() > 50
    expected = vault.expected_trigger_labels()
    for name in rel.licensees:
        variant = ProtectedModel.load(rel.licensee_dir(name))
        got = decrypt(variant, rel.key(name), x)
        np.testing.assert_array_equal(got[on_class], truth[on_class])
        np.testing.assert_array_equal(got[on_trigger], expected[name][trigger[on_trigger]])
