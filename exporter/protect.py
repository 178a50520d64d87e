"""``encryip-export protect``: protect an already trained plain classifier.

Instead of training from scratch, the plain model's K-way head becomes the secure
profile's (K + T)-slot head: row y of the old head moves to class y's secret slot,
the T trigger rows start fresh, and a brief fine-tune teaches the triggers. The
classifier's accuracy carries over (the class rows are copied, not relearned).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from exporter.job import JobConfig, run_train_job
from exporter.models import build_model, head_of, replace_head
from exporter.train import DataArrays, predict_logits, resolve_device

__all__ = ["load_plain_model", "run_protect_job", "slot_head_from_plain"]

log = logging.getLogger(__name__)


def load_plain_model(path: Path, arch: str, data: DataArrays) -> nn.Module:
    """A ``torch.save``'d module, or a state_dict of ``build_model(arch, ..., K)``."""
    obj: Any = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict):
        state = obj.get("model", obj)
        c, h, _ = data.input_shape
        model = build_model(arch, c, len(data.class_names), h)
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches raise even with strict=False
            first = str(exc).strip().splitlines()[-1].strip()
            raise ValueError(
                f"{path}: state_dict does not fit --arch {arch} with "
                f"{len(data.class_names)} classes ({first})"
            ) from None
        if missing or unexpected:
            raise ValueError(
                f"{path}: state_dict does not fit --arch {arch} with "
                f"{len(data.class_names)} classes "
                f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
            )
        return model
    raise ValueError(
        f"{path}: expected a torch nn.Module or a state_dict, got {type(obj).__name__}"
    )


def slot_head_from_plain(model: nn.Module, class_slots: np.ndarray, num_slots: int) -> None:
    """Replace the K-way head with a ``num_slots`` head; class y's row moves to its slot."""
    old = head_of(model)
    k = old.out_features
    if len(class_slots) != k:
        raise ValueError(
            f"the model has {k} outputs but the dataset has {len(class_slots)} classes"
        )
    w, b = old.weight.detach().clone(), old.bias.detach().clone() if old.bias is not None else None
    new = replace_head(model, num_slots)
    with torch.no_grad():
        new.weight.mul_(0.1)  # trigger rows: small, so they start below the class logits
        new.bias.fill_(float(b.min()) - 1.0 if b is not None else -1.0)
        idx = torch.as_tensor(class_slots, dtype=torch.long)
        new.weight[idx] = w
        if b is not None:
            new.bias[idx] = b


def run_protect_job(
    job: JobConfig, data: DataArrays, model_path: Path, *, progress: bool | None = None
) -> dict[str, Any]:
    device = resolve_device(job.train.device)
    model = load_plain_model(model_path, job.train.arch, data)
    before = float(
        (
            np.argmax(predict_logits(model.to(device), data.x_test, device), axis=1) == data.y_test
        ).mean()
    )
    log.info("plain model accuracy before protection: %.4f", before)

    def init(plan_model: nn.Module, plan: Any) -> nn.Module:
        slot_head_from_plain(model, np.asarray(plan.class_slots), plan.output_size)
        return model

    metrics = run_train_job(
        replace(job, baseline=False), data, progress=progress, init_model=init, command="protect"
    )
    if metrics:
        metrics["accuracy"]["original"] = before
        metrics["accuracy"]["before_protection"] = before
        metrics["accuracy"]["delta_pp"] = 100 * (metrics["accuracy"]["encryip"] - before)
        from exporter.report import write_report

        write_report(Path(job.out) / "report", metrics)
    return metrics
