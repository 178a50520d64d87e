"""Algorithm 1 end to end on a tiny synthetic set: train once, release, decrypt per licensee;
fixed seeds, checkpoint + resume, and DDP with two CPU processes (torchrun, gloo)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from exporter.data import make_synthetic
from exporter.job import JobConfig, arrays_from_splits, run_train_job
from exporter.models import build_model
from exporter.train import DataArrays, TrainConfig, plain_targets, train_model

REPO = Path(__file__).resolve().parents[2]
LICENSEES = ("acme", "globex", "initech")


def _data(n: int = 1000, test: int = 200) -> DataArrays:
    return arrays_from_splits(make_synthetic(n, test, seed=0))


def _cfg(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        epochs=3, batch_size=32, lr=3e-3, num_triggers=8, num_threads=1, licensees=LICENSEES
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module", params=["secure", "paper"])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp(f"train-{request.param}") / "release"
    # Noise triggers: the synthetic classes are near-duplicates of one prototype, so a
    # memorised natural trigger also captures a few look-alike test images, and these
    # tests compare every decryption exactly (data triggers: test_data_triggers_...).
    job = JobConfig(
        train=_cfg(profile=request.param),
        dataset="synthetic",
        probe_size=50,
        out=str(out),
        trigger_source="noise",
    )
    data = _data()
    metrics = run_train_job(job, data, progress=False)
    return request.param, out, metrics, data


def test_metrics_and_targets(trained) -> None:  # type: ignore[no-untyped-def]
    _, out, metrics, _ = trained
    on_disk = json.loads((out / "report" / "metrics.json").read_text())
    for section, key in [
        ("accuracy", "original"),
        ("accuracy", "encryip"),
        ("accuracy", "incorrect_key"),
        ("verification", "trigger_accuracy"),
        ("train_seconds", "original"),
        ("train_seconds", "encryip"),
    ]:
        assert isinstance(on_disk[section][key], float), (section, key)
    acc = metrics["accuracy"]
    assert acc["encryip"] >= 0.95
    assert abs(acc["encryip"] - acc["original"]) <= 0.05
    assert acc["incorrect_key"] < 0.4  # about chance (0.1) for 10 classes
    assert metrics["verification"]["trigger_accuracy"] == 1.0
    hist = on_disk["history"]
    assert len(hist["EncryIP"]) == len(hist["original"]) == 3
    assert (out / "report" / "curves.png").stat().st_size > 1000
    assert "EncryIP" in (out / "report" / "table1.md").read_text()


def test_release_layout_and_secret_modes(trained) -> None:  # type: ignore[no-untyped-def]
    _, out, _, _ = trained
    for name in ("model.onnx", "manifest.json", "vault.json"):
        assert (out / name).is_file(), name
    for who in LICENSEES:
        assert (out / "licensees" / who / "model.onnx").is_file()
        assert stat.S_IMODE((out / "keys" / f"{who}.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "vault.json").stat().st_mode) == 0o600


def test_every_licensee_decrypts_the_same_prediction(trained) -> None:  # type: ignore[no-untyped-def]
    from encryip_runtime.client import decrypt_batch, load_key
    from encryip_runtime.pipeline import ProtectedModel

    _, out, _, data = trained
    x, y = data.x_test[:100], data.y_test[:100]
    public = out.parent / "public"  # the runtime refuses a directory holding secrets
    public.mkdir(exist_ok=True)
    for name in ("model.onnx", "manifest.json"):
        shutil.copy(out / name, public / name)
    decrypted = []
    for model_dir in [public] + [out / "licensees" / w for w in LICENSEES]:
        pm = ProtectedModel.load(model_dir)
        wire = pm.predict(x)
        wire2 = pm.predict(x)
        assert not np.array_equal(wire, wire2)  # fresh SampDist per call
        for who in LICENSEES:
            key = load_key(out / "keys" / f"{who}.key")
            labels = decrypt_batch([r.tobytes() for r in wire], key)
            assert np.array_equal(labels, decrypt_batch([r.tobytes() for r in wire2], key))
            decrypted.append(labels)
    for labels in decrypted[1:]:
        assert np.array_equal(labels, decrypted[0])
    assert (decrypted[0] == y).mean() >= 0.95


def test_variants_differ_but_serve_the_same_function(trained) -> None:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    _, out, _, data = trained
    x = data.x_test[:16]
    logits = {
        w: ort.InferenceSession(str(out / "licensees" / w / "model.onnx")).run(None, {"pixels": x})[
            0
        ]
        for w in LICENSEES
    }
    base = ort.InferenceSession(str(out / "model.onnx")).run(None, {"pixels": x})[0]
    for w in LICENSEES:
        # the same multiset of logits per row, in another order, up to the licensee's
        # weight fingerprint (inner weights moved by 1% of their spread: fingerprint.py)
        np.testing.assert_allclose(np.sort(logits[w], 1), np.sort(base, 1), atol=0.25)
    assert not np.array_equal(logits["acme"], logits["globex"])


def test_data_triggers_are_held_out_training_images(tmp_path: Path) -> None:
    """--trigger-source data (the default): the triggers are training-split images that
    are removed before training, they are recovered exactly, accuracy is unaffected."""
    from encryip_runtime.formats.vault import Vault

    data = _data()
    out = tmp_path / "rel"
    # A fixed trigger seed: on synthetic data some draws put near-duplicate images on
    # different Fake targets, which then need more consolidation (the self-check's job).
    job = JobConfig(train=_cfg(), dataset="synthetic", probe_size=50, out=str(out), trigger_seed=1)
    assert JobConfig().trigger_source == "data" and JobConfig().trigger_seed is None
    m = run_train_job(job, data, progress=False)
    assert m["config"]["trigger_source"] == "data"
    assert m["config"]["train_size"] == len(data.x_train) - 8
    assert m["verification"]["trigger_accuracy"] == 1.0 and m["self_check"]["passed"]
    # Synthetic classes are one prototype plus noise: a memorised trigger also pulls a few
    # near-duplicate test images onto its output (MNIST: benchmarks/trigger_detect.py).
    assert m["accuracy"]["encryip"] >= 0.9
    vault = Vault.load(out / "vault.json")
    trig = vault.load_arrays(out / "vault.json").trigger_inputs
    rows = {r.tobytes(): i for i, r in enumerate(data.x_train)}
    idx = [rows[t.tobytes()] for t in trig]  # every trigger is a training-split image ...
    assert len(set(idx)) == 8
    # ... with natural pixel statistics (noise triggers: mean ~126, std ~118)
    assert abs(float(trig.mean()) - float(data.x_train.mean())) < 20


def test_holdout_indices_spread_over_classes_and_depend_on_the_seed() -> None:
    from exporter.triggers import holdout_indices

    y = np.repeat(np.arange(10), 50)
    a = holdout_indices(y, 32, seed=1)
    assert len(set(a.tolist())) == 32
    assert np.bincount(y[a], minlength=10).min() == 3  # 32 over 10 classes: 3 or 4 each
    assert not np.array_equal(a, holdout_indices(y, 32, seed=2))
    assert np.array_equal(a, holdout_indices(y, 32, seed=1))
    with pytest.raises(ValueError, match="at most half"):
        holdout_indices(y[:40], 32, seed=1)


def _train_plain(cfg: TrainConfig, data: DataArrays, **kw: Any) -> torch.nn.Module:
    torch.manual_seed(cfg.seed)
    model = build_model("cnn", 1, 10, 16)
    return train_model(model, data, plain_targets(10), cfg, progress=False, **kw).model


def test_fixed_seed_is_deterministic() -> None:
    data = _data(300, 50)
    cfg = _cfg(epochs=1)
    a, b = _train_plain(cfg, data), _train_plain(cfg, data)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    c = _train_plain(_cfg(epochs=1, seed=1), data)
    assert not torch.equal(next(iter(a.parameters())), next(iter(c.parameters())))


def test_checkpoint_resume_matches_uninterrupted(tmp_path: Path) -> None:
    data = _data(300, 50)
    full = _train_plain(_cfg(epochs=2), data)

    class Crash(Exception):
        pass

    def crash_in_epoch_2(model: torch.nn.Module, calls: list[int] = []) -> tuple[float, float]:  # noqa: B006
        calls.append(1)
        if len(calls) == 2:
            raise Crash
        return 0.0, 0.0

    cfg = _cfg(epochs=2, checkpoint=str(tmp_path / "ck"))
    with pytest.raises(Crash):
        _train_plain(cfg, data, evaluate=crash_in_epoch_2)
    ck = torch.load(tmp_path / "ck.encryip", weights_only=False)
    assert ck["epoch"] == 1 and ck["config"] == asdict(cfg)
    assert stat.S_IMODE((tmp_path / "ck.encryip").stat().st_mode) == 0o600
    resumed = _train_plain(cfg, data)
    for (name, pa), pb in zip(
        full.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6, msg=name)


def _torchrun_train(tmp_path: Path, n: int, epochs: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "exporter.cli", "train", "--dataset", "synthetic", "--train-subset", str(n),
        "--test-subset", "200", "--epochs", str(epochs), "--batch-size", "32", "--lr", "3e-3",
        "--triggers", "8", "--probe-size", "50", "--threads", "1", "--device", "cpu",
        "--no-progress", "--trigger-source", "noise", "--out", str(tmp_path / "release"),
    ]  # fmt: skip
    return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    """torchrun --nproc_per_node 2 (gloo): one release written, by rank 0, and it works."""
    out = tmp_path / "release"
    r = _torchrun_train(tmp_path, 1024, 3)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["accuracy"]["encryip"] >= 0.9
    assert metrics["verification"]["trigger_accuracy"] == 1.0
    assert r.stdout.count("EncryIP") >= 1  # the summary table, printed once (rank 0)


@pytest.mark.slow
def test_ddp_uneven_split(tmp_path: Path) -> None:
    r = _torchrun_train(tmp_path, 1025, 1)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.parametrize("early", [True, False])
def test_flush_denormal_reaches_the_intra_op_threads_only_when_set_first(early: bool) -> None:
    """The FTZ flag is per thread and inherited at thread start: enable_flush_denormal()
    before the first parallel op (what encryip-export does) makes every worker flush;
    afterwards, the workers already started do not (train_model then warns)."""
    code = (
        "import torch; torch.set_num_threads(2)\n"
        "from exporter.train import enable_flush_denormal, workers_flush_denormals\n"
        + ("enable_flush_denormal()\n" if early else "")
        + "torch.full((1 << 20,), 1e-39) * 1.0  # starts the OpenMP pool\n"
        + ("" if early else "enable_flush_denormal()\n")
        + "print(workers_flush_denormals())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120, cwd=REPO)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == str(early)


def test_cuda_precision_path_runs_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a GPU run takes (bf16 autocast + channels_last), forced on the CPU, where
    torch supports both: CI has no GPU, and a mistake in that path (a dtype or a memory
    format leaking into the loss, the evaluation or the export) shows up here."""
    from exporter import train as tr

    def forced(cls: type[Any], cfg: TrainConfig, device: torch.device) -> Any:
        return cls(True, True, device.type)

    monkeypatch.setattr(tr._Precision, "for_device", classmethod(forced))
    data = _data(400, 100)
    cfg = _cfg(epochs=3)
    seen: list[torch.dtype] = []
    model = build_model("cnn", 1, 10, 16)
    model.register_forward_hook(lambda m, i, o: seen.append(o.dtype) if m.training else None)
    torch.manual_seed(cfg.seed)
    result = train_model(model, data, plain_targets(10), cfg, progress=False)
    assert torch.bfloat16 in seen  # the forward pass did run under bf16 autocast
    losses = [m.train_loss for m in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    # Back to fp32 weights in the default layout: evaluation and the ONNX export see
    # exactly what a CPU run produces.
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    convs = [m for m in result.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous() for c in convs)
    with torch.no_grad():
        x = torch.from_numpy(data.x_test[:8])
        out = result.model.eval()(x)
    assert out.dtype == torch.float32 and out.shape == (8, 10)
