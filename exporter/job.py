"""The exporter's main job: plan -> train (EncryIP and, optionally, the baseline) ->
export ONNX -> write the release and its report. ``encryip-export train`` calls this."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from encryip_runtime.formats.manifest import InputSpec
from encryip_runtime.formats.vault import LicenseeRecord, Vault, VaultArrays
from encryip_runtime.release.plan import ProtectionPlan
from encryip_runtime.release.writer import ReleasePaths, vault_from_plan, write_release
from exporter.data import DataSplits, channel_stats, stratified_indices
from exporter.report import write_report
from exporter.train import (
    DataArrays,
    TrainConfig,
    TrainData,
    as_splits,
    block_width,
    evaluate_protected,
    make_plan,
    resolve_device,
    train_encryip_and_original,
)
from exporter.triggers import make_trigger_inputs

__all__ = [
    "JobConfig",
    "arrays_from_splits",
    "input_spec_of",
    "resolve_normalization",
    "run_train_job",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    dataset: str = "mnist"
    baseline: bool = True  # also train the original model (same arch, seed, data order, epochs)
    probe_size: int = 500  # labelled held-out examples kept in the vault for the arbitrator
    model_name: str = "encryip"
    out: str = "release"


def arrays_from_splits(splits: DataSplits) -> DataArrays:
    """The whole set as numpy arrays (in-memory sources; streamed ones are read whole)."""
    x_train, y_train = splits.train.arrays()
    x_test, y_test = splits.test.arrays()
    return DataArrays(x_train, y_train, x_test, y_test, tuple(splits.class_names))


def resolve_normalization(cfg: TrainConfig, splits: DataSplits) -> TrainConfig:
    """``cfg`` with ``mean``/``std`` set: as given, else measured on the training data
    (streamed, at most 20k images)."""
    if cfg.mean is not None and cfg.std is not None:
        return cfg
    mean, std = channel_stats(splits.train, workers=cfg.workers, seed=cfg.seed)
    log.info("mean/std measured on the training data: mean %s, std %s", mean, std)
    return replace(cfg, mean=mean, std=std)


def input_spec_of(model: nn.Module, shape: tuple[int, int, int]) -> InputSpec:
    """The manifest's input spec: raw uint8 ``[N, C, H, W]``, and the normalisation and
    channel repeat the graph applies to it."""
    from exporter.models import Normalize

    if not isinstance(model, Normalize):
        return InputSpec("pixels", "uint8", shape)
    return InputSpec(
        "pixels",
        "uint8",
        shape,
        mean=model.mean,
        std=model.std,
        channel_repeat=getattr(model, "repeat", 1),
    )


def _plan_paths(checkpoint: str) -> tuple[Path, str]:
    """Where a training run keeps its protection plan: ``CK.plan.json`` + ``CK.plan.npz``."""
    path = Path(checkpoint + ".plan.json")
    return path, Path(checkpoint + ".plan.npz").name


def _save_plan(
    checkpoint: str, plan: ProtectionPlan, trigger_x: np.ndarray, shape: tuple[int, int, int]
) -> None:
    """The plan in the vault's own validated format (sealed at rest like any vault), the
    trigger inputs as its arrays: resume reads it back with the vault's loader, no pickle."""
    path, arrays_file = _plan_paths(checkpoint)
    records = [
        LicenseeRecord(name, sk, tuple(range(plan.output_size)))
        for name, sk in zip(plan.licensees, plan.licensee_keys(), strict=True)
    ]
    stub = plan.manifest(input_spec=InputSpec("pixels", "uint8", shape), model_sha256="0" * 64)
    vault = replace(vault_from_plan(plan, records, stub), arrays_file=arrays_file)
    empty = np.zeros((0, *shape), dtype=np.uint8)
    vault.save(path, VaultArrays(trigger_x, empty, np.zeros(0, dtype=np.int64)))


def _load_plan(checkpoint: str, cfg: TrainConfig) -> tuple[ProtectionPlan, np.ndarray]:
    path, _ = _plan_paths(checkpoint)
    vault = Vault.load(path)
    arrays = vault.load_arrays(path)
    slots = (
        (None, None)
        if vault.class_slots is None
        else (np.array(vault.class_slots), np.array(vault.trigger_slots))
    )
    plan = ProtectionPlan(
        scheme=vault.scheme,
        family=vault.family_v2() if vault.format_version == 2 else vault.family(),
        licensees=tuple(r.name for r in vault.licensees),
        class_names=vault.class_names,
        messages=vault.messages,
        class_ciphertexts=vault.class_ciphertexts,
        trigger_ciphertexts=vault.trigger_ciphertexts,
        output_size=vault.output_size,
        class_slots=slots[0],
        trigger_slots=slots[1],
        decoder=cfg.decoder if vault.profile == "paper" else None,
        triggers=vault.triggers,
    )
    return plan, arrays.trigger_inputs


def _plan_for(
    job: JobConfig, class_names: tuple[str, ...], shape: tuple[int, int, int]
) -> tuple[ProtectionPlan, np.ndarray]:
    """Rank 0 makes the plan (it holds the keys) and the trigger inputs; other ranks
    receive them. Resume reuses them (the plan's own file beside the checkpoint)."""
    cfg = job.train
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    state: tuple[ProtectionPlan, np.ndarray] | None = None
    if not dist or torch.distributed.get_rank() == 0:
        if cfg.checkpoint and _plan_paths(cfg.checkpoint)[0].exists():
            state = _load_plan(cfg.checkpoint, cfg)
            log.info("resuming with the protection plan in %s", _plan_paths(cfg.checkpoint)[0])
        else:
            plan = make_plan(cfg, class_names)
            trigger_x = make_trigger_inputs(plan.num_triggers, shape, secrets.randbits(64))
            state = (plan, trigger_x)
            if cfg.checkpoint:
                _save_plan(cfg.checkpoint, plan, trigger_x, shape)
    if dist:
        box = [state]
        torch.distributed.broadcast_object_list(box, src=0)  # in memory, between ranks
        state = box[0]
    assert state is not None
    return state


def run_train_job(
    job: JobConfig,
    data: TrainData,
    *,
    progress: bool | None = None,
    init_model: Callable[[ProtectionPlan, np.ndarray], nn.Module] | None = None,
) -> dict[str, Any]:
    """Train, export and write the release. Returns the metrics written to report/metrics.json."""
    from exporter.export_onnx import export_onnx

    splits = as_splits(data)
    cfg = resolve_normalization(job.train, splits)
    job = replace(job, train=cfg)
    device = resolve_device(cfg.device)
    c, h, w = splits.image_shape
    plan, trigger_x = _plan_for(job, splits.class_names, (c, h, w))
    block = block_width(plan)
    is_main = (
        not (torch.distributed.is_available() and torch.distributed.is_initialized())
        or torch.distributed.get_rank() == 0
    )

    enc, base = train_encryip_and_original(
        plan,
        splits,
        cfg,
        trigger_x,
        baseline=job.baseline,
        progress=progress,
        init_model=init_model,
    )
    if not is_main:
        # Wait for rank 0 to export and write the release, so no rank tears down the
        # process group while another still uses it (gloo aborts the process then).
        torch.distributed.barrier()
        return {}

    final = evaluate_protected(plan, enc.model, splits, trigger_x, device, workers=cfg.workers)
    out = Path(job.out)
    onnx_path = out.parent / f".{out.name}.model.onnx.tmp"
    out.parent.mkdir(parents=True, exist_ok=True)
    enc.model.eval()
    # Parity sample: test images and every trigger (the triggers must survive export
    # exactly); per-block argmax for the paper profile's three one-hot blocks.
    test_x, _ = splits.test.arrays(np.arange(min(64, len(splits.test))))
    sample = np.concatenate([test_x, trigger_x])
    export_onnx(enc.model.cpu(), torch.from_numpy(sample), onnx_path, argmax_block=block)
    model_bytes = onnx_path.read_bytes()
    onnx_path.unlink()
    y_test = splits.test.labels.numpy()
    probe_idx = stratified_indices(y_test, min(job.probe_size, len(y_test)), seed=cfg.seed + 7)
    probe_x, probe_y = splits.test.arrays(probe_idx)
    paths = write_release(
        out,
        plan,
        model_bytes,
        input_spec=input_spec_of(enc.model, (c, h, w)),
        trigger_inputs=trigger_x,
        probe_inputs=probe_x,
        probe_labels=probe_y,
        model_name=job.model_name,
    )
    metrics: dict[str, Any] = {
        "config": {
            **asdict(cfg),
            "dataset": job.dataset,
            "baseline": job.baseline,
            "train_size": len(splits.train),
            "test_size": len(splits.test),
        },
        "accuracy": {
            "original": None if base is None else base.history[-1].test_accuracy,
            "encryip": final["accuracy"],
            "incorrect_key": final["accuracy_incorrect_key"],
        },
        "accuracy_per_licensee": final["accuracy_per_licensee"],
        **(
            {"accuracy_by_decoder": final["accuracy_by_decoder"], "decoder": plan.decoder}
            if "accuracy_by_decoder" in final
            else {}
        ),
        "verification": {
            "trigger_accuracy": final["trigger_accuracy"],
            "num_triggers": plan.num_triggers,
        },
        "train_seconds": {
            "encryip": enc.train_seconds,
            "original": None if base is None else base.train_seconds,
            "encryip_cpu": enc.train_cpu_seconds,
            "original_cpu": None if base is None else base.train_cpu_seconds,
        },
        "history": {
            "EncryIP": [asdict(m) for m in enc.history],
            **({"original": [asdict(m) for m in base.history]} if base is not None else {}),
        },
        "release": str(paths.root),
    }
    if base is not None:
        metrics["accuracy"]["delta_pp"] = 100 * (final["accuracy"] - base.history[-1].test_accuracy)
        metrics["train_seconds"]["ratio"] = enc.train_seconds / max(base.train_seconds, 1e-9)
        metrics["train_seconds"]["cpu_ratio"] = enc.train_cpu_seconds / max(
            base.train_cpu_seconds, 1e-9
        )
    write_report(ReleasePaths(out).root / "report", metrics)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return metrics
