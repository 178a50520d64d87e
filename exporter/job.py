"""The exporter's main job: plan -> train (EncryIP and, optionally, the baseline) ->
export ONNX -> write the release and its report. ``encryip-export train`` calls this."""

from __future__ import annotations

import logging
import os
import pickle
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from encryip_runtime.formats.jsonio import atomic_write_bytes
from encryip_runtime.formats.manifest import InputSpec
from encryip_runtime.release.plan import ProtectionPlan
from encryip_runtime.release.writer import ReleasePaths, write_release
from exporter.data import DataSplits, stratified_indices
from exporter.report import write_report
from exporter.selfcheck import SelfCheck, SelfCheckError, check_release, failure_message
from exporter.train import (
    DataArrays,
    TrainConfig,
    TrainResult,
    block_width,
    evaluate_protected,
    make_plan,
    resolve_device,
    train_encryip_and_original,
    train_model,
)
from exporter.triggers import TRIGGER_SOURCES, holdout_indices, make_trigger_inputs

__all__ = ["JobConfig", "arrays_from_splits", "consolidate_triggers", "run_train_job"]

log = logging.getLogger(__name__)

#: Learning rate of a trigger-consolidation epoch, as a fraction of --lr.
CONSOLIDATION_LR_FACTOR = 0.3


@dataclass(frozen=True)
class JobConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    dataset: str = "mnist"
    baseline: bool = True  # also train the original model (same arch, seed, data order, epochs)
    probe_size: int = 500  # labelled held-out examples kept in the vault for the arbitrator
    model_name: str = "encryip"
    out: str = "release"
    # Trigger-consolidation epochs the self-check may add when a licensee file does not
    # prove ownership (exporter.selfcheck); 0 = check only.
    max_trigger_epochs: int = 3
    # "data": triggers are held-out training images (removed from the training split for
    # the EncryIP and the baseline model alike); "noise": synthetic patterns.
    trigger_source: str = "data"
    # Seed choosing the trigger images: None = a fresh secret one (always, for releases).
    # Set only by tests and benchmarks that must be reproducible.
    trigger_seed: int | None = None


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
            seed = secrets.randbits(64) if job.trigger_seed is None else job.trigger_seed
            state = (make_plan(cfg, data.class_names), seed)
            if plan_path is not None:
                atomic_write_bytes(plan_path, pickle.dumps(state), secret=True)
    if dist:
        box = [state]
        torch.distributed.broadcast_object_list(box, src=0)
        state = box[0]
    assert state is not None
    return state


def select_triggers(
    source: str, data: DataArrays, count: int, seed: int
) -> tuple[DataArrays, npt.NDArray[np.uint8]]:
    """The trigger images and the training data without them (see ``exporter.triggers``).

    ``data``: ``count`` images of the *training* split are held out (never trained on as
    natural data; the test split, hence the reported accuracy, is untouched).
    """
    if source == "noise":
        return data, make_trigger_inputs(count, data.input_shape, seed)
    if source != "data":
        raise ValueError(f"unknown trigger source {source!r}: expected one of {TRIGGER_SOURCES}")
    idx = holdout_indices(data.y_train, count, seed)
    keep = np.ones(len(data.y_train), dtype=bool)
    keep[idx] = False
    trigger_x = np.ascontiguousarray(data.x_train[idx])
    return replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep]), trigger_x


def _broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (identity without torch.distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def consolidate_triggers(
    model: nn.Module,
    plan: ProtectionPlan,
    data: DataArrays,
    cfg: TrainConfig,
    trigger_x: npt.NDArray[np.uint8],
    round_no: int,
    progress: bool | None = None,
) -> None:
    """One trigger-consolidation epoch: the same loop over the same data, with the
    trigger rows at their cap (a quarter of every batch) and a gentler learning rate,
    so the triggers are memorised without moving the classifier (test accuracy is
    recorded before and after in ``self_check``)."""
    ccfg = replace(
        cfg,
        epochs=1,
        lr=cfg.lr * CONSOLIDATION_LR_FACTOR,
        trigger_exposures=1 << 20,  # capped at batch_size // 4 rows per batch
        checkpoint=None,
        seed=cfg.seed + 7919 * round_no,  # a fresh data order each round
    )
    train_model(
        model,
        data,
        plan.class_targets(),
        ccfg,
        block=block_width(plan),
        trigger_x=trigger_x,
        trigger_targets=plan.trigger_targets(),
        progress=progress,
        tag=f"consolidate {round_no}",
    )


def run_train_job(
    job: JobConfig,
    data: DataArrays,
    *,
    progress: bool | None = None,
    init_model: Callable[[nn.Module, ProtectionPlan], nn.Module] | None = None,
    command: str = "train",
) -> dict[str, Any]:
    """Train, export, write the release and self-check it. Returns the metrics written to
    report/metrics.json. Raises ``SelfCheckError`` (and writes no release) when a licensee
    file cannot prove ownership after ``job.max_trigger_epochs`` consolidation epochs."""
    cfg = job.train
    device = resolve_device(cfg.device)
    out = Path(job.out)
    if (out / "manifest.json").exists() or (out / "vault.json").exists():
        raise FileExistsError(f"{out} already holds a release; choose an empty directory")
    plan, trigger_seed = _plan_for(job, data)
    data, trigger_x = select_triggers(job.trigger_source, data, plan.num_triggers, trigger_seed)
    is_main = (
        not (torch.distributed.is_available() and torch.distributed.is_initialized())
        or torch.distributed.get_rank() == 0
    )

    enc, base = train_encryip_and_original(
        plan, data, cfg, trigger_x, baseline=job.baseline, progress=progress, init_model=init_model
    )
    # Self-check (see exporter.selfcheck): write into a hidden staging directory, run
    # verify-onnx on every licensee file; consolidate the triggers and retry while it
    # fails; rename onto --out only when every file proves ownership.
    check = SelfCheck(max_consolidation_epochs=job.max_trigger_epochs)
    staging: Path | None = None
    final: dict[str, Any] = {}
    try:
        while True:
            action = "done"
            if is_main:
                final = evaluate_protected(plan, enc.model, data, trigger_x, device)
                if check.accuracy_before_consolidation is None:
                    check.accuracy_before_consolidation = final["accuracy"]
                    check.trigger_accuracy_before_consolidation = final["trigger_accuracy"]
                check.accuracy_after_consolidation = final["accuracy"]
                log.info(
                    "self-check after %d consolidation epoch(s): test accuracy %.4f, "
                    "trigger recovery %.3f",
                    check.consolidation_epochs,
                    final["accuracy"],
                    final["trigger_accuracy"],
                )
                can_consolidate = check.consolidation_epochs < job.max_trigger_epochs
                if final["trigger_accuracy"] < 1.0 and can_consolidate:
                    action = "consolidate"  # not worth exporting yet
                    check.attempts.append(
                        {"after_epochs": check.consolidation_epochs, "trigger_accuracy":
                         final["trigger_accuracy"], "accuracy": final["accuracy"]}
                    )  # fmt: skip
                else:
                    staging = _fresh_staging(out)
                    _write_files(staging, job, plan, enc.model, data, trigger_x)
                    check.variants = check_release(staging, list(plan.licensees))
                    check.attempts.append(
                        {"after_epochs": check.consolidation_epochs, "trigger_accuracy":
                         final["trigger_accuracy"], "accuracy": final["accuracy"],
                         "variants_passed": sum(v.passed for v in check.variants)}
                    )  # fmt: skip
                    if not check.failures:
                        action = "done"
                    elif can_consolidate:
                        action = "consolidate"
                        shutil.rmtree(staging)
                        staging = None
                    else:
                        action = "fail"
            action = _broadcast(action)
            if action != "consolidate":
                break
            check.consolidation_epochs += 1
            log.info(
                "self-check: trigger recovery below 1.0 or a licensee file unproven; "
                "trigger-consolidation epoch %d/%d",
                check.consolidation_epochs,
                job.max_trigger_epochs,
            )
            t0 = time.perf_counter()
            consolidate_triggers(
                enc.model, plan, data, cfg, trigger_x, check.consolidation_epochs, progress
            )
            check.consolidation_seconds += time.perf_counter() - t0
        if action == "fail":
            check.passed = False
            raise SelfCheckError(failure_message(check, command))
        check.passed = True
        if not is_main:
            # Wait for rank 0 to finish the release, so no rank tears down the process
            # group while another still uses it (gloo aborts the process then).
            torch.distributed.barrier()
            return {}
        assert staging is not None
        metrics = _metrics(job, plan, enc, base, final, data, out)
        metrics["self_check"] = check.to_json()
        write_report(ReleasePaths(staging).root / "report", metrics)
        _publish(staging, out)
        staging = None
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging)  # holds keys and the vault of a release never published
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return metrics


def _fresh_staging(out: Path) -> Path:
    """A new private directory beside ``out`` (same file system, so rename is atomic)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.staging-{secrets.token_hex(4)}"
    staging.mkdir(mode=0o700)
    return staging


def _publish(staging: Path, out: Path) -> None:
    """Rename the checked release onto ``out`` (an empty directory there is replaced)."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    try:
        os.rename(staging, out)
    except OSError as exc:
        raise FileExistsError(f"{out}: cannot publish the release there ({exc})") from None
    os.chmod(out, 0o755)


def _write_files(
    root: Path,
    job: JobConfig,
    plan: ProtectionPlan,
    model: nn.Module,
    data: DataArrays,
    trigger_x: npt.NDArray[np.uint8],
) -> ReleasePaths:
    """Export the model to ONNX and write the release (without its report) into ``root``."""
    from exporter.export_onnx import export_onnx

    c, h, w = data.input_shape
    onnx_path = root / ".model.onnx.tmp"
    model.eval()
    # Parity sample: test images and every trigger (the triggers must survive export
    # exactly); per-block argmax for the paper profile's three one-hot blocks.
    sample = np.concatenate([data.x_test[:64], trigger_x])
    device = next(model.parameters()).device
    export_onnx(model.cpu(), torch.from_numpy(sample), onnx_path, argmax_block=block_width(plan))
    model.to(device)
    model_bytes = onnx_path.read_bytes()
    onnx_path.unlink()
    probe_idx = stratified_indices(
        data.y_test, min(job.probe_size, len(data.y_test)), seed=job.train.seed + 7
    )
    return write_release(
        root,
        plan,
        model_bytes,
        input_spec=InputSpec("pixels", "uint8", (c, h, w)),
        trigger_inputs=trigger_x,
        probe_inputs=data.x_test[probe_idx],
        probe_labels=data.y_test[probe_idx],
        model_name=job.model_name,
    )


def _metrics(
    job: JobConfig,
    plan: ProtectionPlan,
    enc: TrainResult,
    base: TrainResult | None,
    final: dict[str, Any],
    data: DataArrays,
    out: Path,
) -> dict[str, Any]:
    cfg = job.train
    metrics: dict[str, Any] = {
        "config": {
            **asdict(cfg),
            "dataset": job.dataset,
            "baseline": job.baseline,
            "train_size": len(data.x_train),
            "test_size": len(data.x_test),
            "max_trigger_epochs": job.max_trigger_epochs,
            "trigger_source": job.trigger_source,
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
        "release": str(out),
    }
    if base is not None:
        metrics["accuracy"]["delta_pp"] = 100 * (final["accuracy"] - base.history[-1].test_accuracy)
        metrics["train_seconds"]["ratio"] = enc.train_seconds / max(base.train_seconds, 1e-9)
        metrics["train_seconds"]["cpu_ratio"] = enc.train_cpu_seconds / max(
            base.train_cpu_seconds, 1e-9
        )
    return metrics
