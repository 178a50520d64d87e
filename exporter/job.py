"""The exporter's main job: plan -> train (EncryIP and, optionally, the baseline) ->
export ONNX -> write the release and its report. ``encryip-export train`` calls this."""

from __future__ import annotations

import logging
import pickle
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from encryip_runtime.formats.jsonio import atomic_write_bytes
from encryip_runtime.formats.manifest import InputSpec
from encryip_runtime.release.plan import ProtectionPlan
from encryip_runtime.release.writer import ReleasePaths, write_release
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


def _plan_for(job: JobConfig, class_names: tuple[str, ...]) -> tuple[ProtectionPlan, int]:
    """Rank 0 makes the plan (it holds the keys); other ranks receive it. Resume reuses it."""
    cfg = job.train
    plan_path = Path(cfg.checkpoint + ".plan") if cfg.checkpoint else None
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    state: tuple[ProtectionPlan, int] | None = None
    if not dist or torch.distributed.get_rank() == 0:
        if plan_path is not None and plan_path.exists():
            state = pickle.loads(plan_path.read_bytes())  # our own 0600 file, written below
            log.info("resuming with the protection plan in %s", plan_path)
        else:
            state = (make_plan(cfg, class_names), secrets.randbits(64))
            if plan_path is not None:
                atomic_write_bytes(plan_path, pickle.dumps(state), secret=True)
    if dist:
        box = [state]
        torch.distributed.broadcast_object_list(box, src=0)
        state = box[0]
    assert state is not None
    return state


def run_train_job(
    job: JobConfig,
    data: TrainData,
    *,
    progress: bool | None = None,
    init_model: Callable[[nn.Module, ProtectionPlan], nn.Module] | None = None,
) -> dict[str, Any]:
    """Train, export and write the release. Returns the metrics written to report/metrics.json."""
    from exporter.export_onnx import export_onnx

    splits = as_splits(data)
    cfg = resolve_normalization(job.train, splits)
    job = replace(job, train=cfg)
    device = resolve_device(cfg.device)
    c, h, w = splits.image_shape
    plan, trigger_seed = _plan_for(job, splits.class_names)
    trigger_x = make_trigger_inputs(plan.num_triggers, (c, h, w), trigger_seed)
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
