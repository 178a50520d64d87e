"""The exporter's main job: plan -> train (EncryIP and, optionally, the baseline) ->
export ONNX -> write the release and its report. ``encryip-export train`` calls this."""

from __future__ import annotations

import logging
import pickle
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from encryip_runtime.formats.jsonio import atomic_write_bytes
from encryip_runtime.formats.manifest import InputSpec
from encryip_runtime.release.plan import ProtectionPlan
from encryip_runtime.release.writer import ReleasePaths, write_release
from exporter.data import DataSplits, stratified_indices
from exporter.report import write_report
from exporter.train import (
    DataArrays,
    TrainConfig,
    block_width,
    evaluate_protected,
    make_plan,
    resolve_device,
    train_encryip_and_original,
)
from exporter.triggers import make_trigger_inputs

__all__ = ["JobConfig", "arrays_from_splits", "run_train_job"]

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
    """The numpy view the training loop works on."""
    return DataArrays(
        x_train=splits.train.images.numpy(),
        y_train=splits.train.labels.numpy(),
        x_test=splits.test.images.numpy(),
        y_test=splits.test.labels.numpy(),
        class_names=tuple(splits.class_names),
    )


def _plan_for(job: JobConfig, data: DataArrays) -> tuple[ProtectionPlan, int]:
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
            state = (make_plan(cfg, data.class_names), secrets.randbits(64))
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
    data: DataArrays,
    *,
    progress: bool | None = None,
    init_model: Callable[[nn.Module, ProtectionPlan], nn.Module] | None = None,
) -> dict[str, Any]:
    """Train, export and write the release. Returns the metrics written to report/metrics.json."""
    from exporter.export_onnx import export_onnx

    cfg = job.train
    device = resolve_device(cfg.device)
    c, h, w = data.input_shape
    plan, trigger_seed = _plan_for(job, data)
    trigger_x = make_trigger_inputs(plan.num_triggers, (c, h, w), trigger_seed)
    block = block_width(plan)
    is_main = (
        not (torch.distributed.is_available() and torch.distributed.is_initialized())
        or torch.distributed.get_rank() == 0
    )

    enc, base = train_encryip_and_original(
        plan, data, cfg, trigger_x, baseline=job.baseline, progress=progress, init_model=init_model
    )
    if not is_main:
        # Wait for rank 0 to export and write the release, so no rank tears down the
        # process group while another still uses it (gloo aborts the process then).
        torch.distributed.barrier()
        return {}

    final = evaluate_protected(plan, enc.model, data, trigger_x, device)
    out = Path(job.out)
    onnx_path = out.parent / f".{out.name}.model.onnx.tmp"
    out.parent.mkdir(parents=True, exist_ok=True)
    enc.model.eval()
    # Parity sample: test images and every trigger (the triggers must survive export
    # exactly); per-block argmax for the paper profile's three one-hot blocks.
    sample = np.concatenate([data.x_test[:64], trigger_x])
    export_onnx(enc.model.cpu(), torch.from_numpy(sample), onnx_path, argmax_block=block)
    model_bytes = onnx_path.read_bytes()
    onnx_path.unlink()
    probe_idx = stratified_indices(
        data.y_test, min(job.probe_size, len(data.y_test)), seed=cfg.seed + 7
    )
    paths = write_release(
        out,
        plan,
        model_bytes,
        input_spec=InputSpec("pixels", "uint8", (c, h, w)),
        trigger_inputs=trigger_x,
        probe_inputs=data.x_test[probe_idx],
        probe_labels=data.y_test[probe_idx],
        model_name=job.model_name,
    )
    metrics: dict[str, Any] = {
        "config": {
            **asdict(cfg),
            "dataset": job.dataset,
            "baseline": job.baseline,
            "train_size": len(data.x_train),
            "test_size": len(data.x_test),
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
