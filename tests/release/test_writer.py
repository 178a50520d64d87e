"""write_release: layout, modes, cross-references, refusal to overwrite."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encryip_runtime.exceptions import SecretMaterialError
from encryip_runtime.formats import LicenseeKey, Manifest, Vault
from encryip_runtime.formats.manifest import InputSpec
from encryip_runtime.pipeline import ProtectedModel
from encryip_runtime.release import plan_protection, write_release


def _files(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_and_modes(tiny_release: Any) -> None:
    want = {
        "model.onnx": 0o644,
        "manifest.json": 0o644,
        "vault.json": 0o600,
        "vault.npz": 0o600,
    }
    for n in tiny_release.licensees:
        want[f"keys/{n}.key"] = 0o600
        want[f"licensees/{n}/model.onnx"] = 0o644
        want[f"licensees/{n}/manifest.json"] = 0o644
    assert _files(tiny_release.root) == want  # nothing else: no temp files, no strays


def test_cross_references(tiny_release: Any) -> None:
    root = tiny_release.root
    base = Manifest.load(root / "manifest.json")
    vault = Vault.load(root / "vault.json")
    assert base.model_sha256 == hashlib.sha256((root / "model.onnx").read_bytes()).hexdigest()
    assert vault.manifest_digest == base.digest
    assert vault.model_sha256 == base.model_sha256
    assert base.licensee is None
    for rec in vault.licensees:
        d = tiny_release.licensee_dir(rec.name)
        m = Manifest.load(d / "manifest.json")
        assert m.licensee == rec.name
        assert m.model_sha256 == hashlib.sha256((d / "model.onnx").read_bytes()).hexdigest()
        assert m.pk == base.pk
        key = LicenseeKey.load(tiny_release.key(rec.name))
        assert key.sk == rec.sk and key.manifest_digest == m.digest
        order = np.asarray(rec.permutation)
        assert sorted(order.tolist()) == list(range(base.output_size))
        assert not np.array_equal(order, np.arange(base.output_size))
        if base.profile == "secure":
            assert base.codebook is not None and m.codebook is not None
            np.testing.assert_array_equal(m.codebook, base.codebook[order])
        else:
            assert m.output_order == tuple(order.tolist())
            # the paper layout keeps each of the three p-blocks in place
            p = base.output_size // 3
            assert (order // p == np.arange(base.output_size) // p).all()
        assert (d / "model.onnx").read_bytes() != (root / "model.onnx").read_bytes()


def test_the_runtime_refuses_the_release_root(tiny_release: Any) -> None:
    with pytest.raises(SecretMaterialError, match=r"vault\.json"):
        ProtectedModel.load(tiny_release.root)
    ProtectedModel.load(tiny_release.licensee_dir("acme")).close()


def test_refuses_to_overwrite(tiny_release: Any) -> None:
    from tiny_release import SHAPE, tiny_mlp_onnx

    plan = plan_protection(tiny_release.profile, [f"c{i}" for i in range(10)], ["x"], 2)
    before = _files(tiny_release.root)
    with pytest.raises(FileExistsError):
        write_release(
            tiny_release.root,
            plan,
            tiny_mlp_onnx(plan.output_size),
            input_spec=InputSpec("pixels", "uint8", SHAPE),
            trigger_inputs=np.zeros((2, *SHAPE), np.uint8),
            probe_inputs=np.zeros((1, *SHAPE), np.uint8),
            probe_labels=np.zeros(1, np.int64),
        )
    assert _files(tiny_release.root) == before


def test_trigger_count_must_match(tmp_path: Path) -> None:
    from tiny_release import SHAPE, tiny_mlp_onnx

    plan = plan_protection("secure", [f"c{i}" for i in range(4)], ["x"], 3)
    with pytest.raises(ValueError, match="trigger inputs"):
        write_release(
            tmp_path / "r",
            plan,
            tiny_mlp_onnx(plan.output_size),
            input_spec=InputSpec("pixels", "uint8", SHAPE),
            trigger_inputs=np.zeros((2, *SHAPE), np.uint8),
            probe_inputs=np.zeros((1, *SHAPE), np.uint8),
            probe_labels=np.zeros(1, np.int64),
        )
    assert not (tmp_path / "r" / "vault.json").exists()
