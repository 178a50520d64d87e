"""Trained protected releases for the arbitrator (random weights learn no triggers).

One release per profile, trained with the exporter's Algorithm-1 loop on a small
synthetic set (seconds on a CPU), plus two models trained independently on the same
data with the same architecture and output size: one plain, one protected under a
release of its own. Session-scoped: treat everything as read-only.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from encryip_runtime.formats.manifest import InputSpec, Manifest
from encryip_runtime.release import permute_onnx_outputs, plan_protection, write_release
from encryip_runtime.release.plan import ProtectionPlan, random_permutation
from encryip_runtime.release.writer import ReleasePaths, licensee_permutation, variant_manifest
from exporter.data import make_synthetic
from exporter.export_onnx import export_onnx
from exporter.job import arrays_from_splits
from exporter.models import build_model
from exporter.train import DataArrays, TrainConfig, block_width, train_model
from exporter.triggers import make_trigger_inputs

LICENSEES = ("acme", "globex", "initech")
NUM_TRIGGERS = 24


@dataclass(frozen=True)
class Trained:
    profile: str
    root: Path  # the release
    plan: ProtectionPlan
    data: DataArrays
    independent_plain: Path  # ONNX: same data/arch/output size, plain labels
    independent_protected: Path  # ONNX: same, protected under a release of its own
    repermuted: Path  # a licensee directory re-permuted consistently (model + manifest)
    repermuted_from: str

    @property
    def paths(self) -> ReleasePaths:
        return ReleasePaths(self.root)

    @property
    def vault(self) -> Path:
        return self.root / "vault.json"

    def model(self, who: str | None = None) -> Path:
        return self.paths.model if who is None else self.paths.licensee_dir(who) / "model.onnx"


@pytest.fixture(scope="session")
def data() -> DataArrays:
    return arrays_from_splits(make_synthetic(1000, 200, seed=0))


def _cfg(profile: str, seed: int, epochs: int = 3) -> TrainConfig:
    return TrainConfig(
        profile=profile, epochs=epochs, batch_size=32, lr=3e-3, num_triggers=NUM_TRIGGERS,
        num_threads=1, seed=seed, licensees=LICENSEES, device="cpu",
    )  # fmt: skip


def _train(
    data: DataArrays, out_size: int, targets: np.ndarray, cfg: TrainConfig, block: int | None,
    trig_x: np.ndarray | None, trig_t: np.ndarray | None, path: Path,
) -> bytes:  # fmt: skip
    c, h, _ = data.input_shape
    torch.manual_seed(cfg.seed)
    model = build_model("cnn", c, out_size, h)
    res = train_model(
        model, data, targets, cfg, block=block, trigger_x=trig_x, trigger_targets=trig_t,
        progress=False,
    )  # fmt: skip
    res.model.eval()
    export_onnx(
        res.model.cpu(), torch.from_numpy(data.x_test[:8]), path, exporters=("legacy",),
        argmax_block=block,
    )  # fmt: skip
    return path.read_bytes()


def _protected(data: DataArrays, profile: str, seed: int, work: Path, epochs: int = 3) -> tuple[
    ProtectionPlan, np.ndarray, bytes
]:  # fmt: skip
    cfg = _cfg(profile, seed, epochs)
    plan = plan_protection(profile, list(data.class_names), list(LICENSEES), NUM_TRIGGERS)
    trig_x = make_trigger_inputs(NUM_TRIGGERS, data.input_shape, seed=1000 + seed)
    model = _train(
        data, plan.output_size, plan.class_targets(), cfg, block_width(plan), trig_x,
        plan.trigger_targets(), work / f"protected-{seed}.onnx",
    )  # fmt: skip
    return plan, trig_x, model


def _plain_targets(k: int, out_size: int, profile: str) -> tuple[np.ndarray, int | None]:
    """Plain labels in an EncryIP-shaped head (as exporter.demo's independent model)."""
    t = np.zeros((k, out_size), dtype=np.float32)
    if profile == "paper":
        p = out_size // 3
        for b in range(3):
            t[np.arange(k), b * p + np.arange(k) + 1] = 1.0
        return t, p
    t[np.arange(k), np.arange(k)] = 1.0
    return t, None


def _repermute(root: Path, who: str, out: Path, profile: str) -> Path:
    """What a licensee who understands the format can do: reorder the final layer and
    its manifest consistently (the served function is unchanged)."""
    src = ReleasePaths(root).licensee_dir(who)
    m = Manifest.load(src / "manifest.json")
    if profile == "paper":
        rho = licensee_permutation(m.scheme, m.output_size)  # within each block
    else:
        rho = random_permutation(m.output_size)
    model = permute_onnx_outputs((src / "model.onnx").read_bytes(), rho)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(model)
    import hashlib

    variant_manifest(m, who, rho, hashlib.sha256(model).hexdigest()).save(out / "manifest.json")
    return out


@pytest.fixture(scope="session", params=["secure", "paper"])
def trained(
    request: pytest.FixtureRequest, data: DataArrays, tmp_path_factory: pytest.TempPathFactory
) -> Trained:
    profile: str = request.param
    work = tmp_path_factory.mktemp(f"arb-{profile}")
    plan, trig_x, model = _protected(data, profile, 0, work)
    root = work / "release"
    rng = np.random.default_rng(7)
    idx = rng.choice(len(data.x_test), 100, replace=False)
    write_release(
        root, plan, model, input_spec=InputSpec("pixels", "uint8", data.input_shape),
        trigger_inputs=trig_x, probe_inputs=data.x_test[idx], probe_labels=data.y_test[idx],
    )  # fmt: skip
    # Independent models: same data, architecture and output size, other seeds.
    targets, block = _plain_targets(len(data.class_names), plan.output_size, profile)
    plain = work / "independent-plain.onnx"
    _train(data, plan.output_size, targets, _cfg(profile, 1, 1), block, None, None, plain)
    _, _, other = _protected(data, profile, 2, work, epochs=2)
    protected = work / "independent-protected.onnx"
    protected.write_bytes(other)
    reperm = _repermute(root, "globex", work / "repermuted", profile)
    return Trained(profile, root, plan, data, plain, protected, reperm, "globex")


@pytest.fixture()
def release_copy(trained: Trained, tmp_path: Path) -> Path:
    """A writable copy of the trained release (for corruption tests)."""
    dst = tmp_path / "release"
    shutil.copytree(trained.root, dst)
    return dst
