"""The exporter's main job: plan -> train (EncryIP and, optionally, the baseline) ->
export ONNX -> write the release and its report. ``encryip-export train`` calls this."""

from __future__ import annotations

import hashlib
import logging
import os
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

from encryip_runtime.crypto.profiles import profile_of
from encryip_runtime.formats.manifest import InputSpec
from encryip_runtime.formats.vault import LicenseeRecord, Vault, VaultArrays
from encryip_runtime.release.plan import ProtectionPlan
from encryip_runtime.release.writer import ReleasePaths, vault_from_plan, write_release
from exporter.data import DataSplits, channel_stats, stratified_indices
from exporter.report import write_report
from exporter.selfcheck import SelfCheck, SelfCheckError, check_release, failure_message
from exporter.train import (
    DataArrays,
    TrainConfig,
    TrainData,
    TrainResult,
    as_splits,
    block_width,
    evaluate_protected,
    make_plan,
    resolve_device,
    train_encryip_and_original,
    train_protected,
)
from exporter.triggers import TRIGGER_SOURCES, holdout_indices, make_trigger_inputs

__all__ = [
    "JobConfig",
    "arrays_from_splits",
    "consolidate_triggers",
    "input_spec_of",
    "resolve_normalization",
    "run_train_job",
    "select_triggers",
]

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
    # Seed choosing the trigger images: None = a secret one (always, for releases).
    # Set only by tests and benchmarks that must be reproducible.
    trigger_seed: int | None = None
    # False only for cost benchmarks at toy budgets (benchmarks/paper_fig5_cost.py --tiny),
    # where nothing can be learned; the CLI always checks.
    self_check: bool = True


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
        decoder=None if profile_of(vault.scheme).uses_codebook else cfg.decoder,
        triggers=vault.triggers,
    )
    return plan, arrays.trigger_inputs


def _trigger_seed(job: JobConfig, plan: ProtectionPlan) -> int:
    """The seed choosing the trigger images: derived from the plan's secret Fake
    ciphertexts (so a resumed run holds out the same images), unless a test sets one."""
    if job.trigger_seed is not None:
        return job.trigger_seed
    h = hashlib.sha256(b"encryip/trigger-images/v1\0")
    h.update(np.ascontiguousarray(plan.trigger_ciphertexts).tobytes())
    return int.from_bytes(h.digest()[:8], "big")


def select_triggers(
    source: str, splits: DataSplits, count: int, seed: int
) -> tuple[DataSplits, npt.NDArray[np.uint8]]:
    """The trigger images and the splits without them (see ``exporter.triggers``).

    ``data``: ``count`` images of the *training* split are held out (never trained on as
    natural data, by the EncryIP or the baseline model); the test split, hence the
    reported accuracy, is untouched. ``noise``: synthetic patterns, splits unchanged.
    """
    if source == "noise":
        return splits, make_trigger_inputs(count, splits.image_shape, seed)
    if source != "data":
        raise ValueError(f"unknown trigger source {source!r}: expected one of {TRIGGER_SOURCES}")
    idx = holdout_indices(splits.train.labels.numpy(), count, seed)
    keep = np.ones(len(splits.train), dtype=bool)
    keep[idx] = False
    trigger_x, _ = splits.train.arrays(idx)
    train = splits.train.subset(np.flatnonzero(keep))
    return DataSplits(splits.name, train, splits.test), np.ascontiguousarray(trigger_x)


def _plan_for(job: JobConfig, splits: DataSplits) -> tuple[ProtectionPlan, np.ndarray]:
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
            plan = make_plan(cfg, splits.class_names)
            _, trigger_x = select_triggers(
                job.trigger_source, splits, plan.num_triggers, _trigger_seed(job, plan)
            )
            state = (plan, trigger_x)
            if cfg.checkpoint:
                _save_plan(cfg.checkpoint, plan, trigger_x, splits.image_shape)
    if dist:
        box = [state]
        torch.distributed.broadcast_object_list(box, src=0)  # in memory, between ranks
        state = box[0]
    assert state is not None
    return state


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
    data: TrainData,
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
    train_protected(
        model, data, plan, ccfg, trigger_x, progress=progress, tag=f"consolidate {round_no}"
    )


def run_train_job(
    job: JobConfig,
    data: TrainData,
    *,
    progress: bool | None = None,
    init_model: Callable[[ProtectionPlan, np.ndarray], nn.Module] | None = None,
    command: str = "train",
) -> dict[str, Any]:
    """Train, export, write the release and self-check it. Returns the metrics written to
    report/metrics.json. Raises ``SelfCheckError`` (and writes no release) when a licensee
    file cannot prove ownership after ``job.max_trigger_epochs`` consolidation epochs."""
    out = Path(job.out)
    if (out / "manifest.json").exists() or (out / "vault.json").exists():
        raise FileExistsError(f"{out} already holds a release; choose an empty directory")
    splits = as_splits(data)
    cfg = resolve_normalization(job.train, splits)
    job = replace(job, train=cfg)
    device = resolve_device(cfg.device)
    plan, trigger_x = _plan_for(job, splits)
    # Every rank: the training split without the held-out trigger images (the same
    # indices on resume: the seed derives from the plan).
    splits, _ = select_triggers(
        job.trigger_source, splits, plan.num_triggers, _trigger_seed(job, plan)
    )
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
                final = evaluate_protected(
                    plan, enc.model, splits, trigger_x, device, workers=cfg.workers
                )
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
                if not job.self_check:
                    check.skipped = True
                    staging = _fresh_staging(out)
                    _write_files(staging, job, plan, enc.model, splits, trigger_x)
                elif final["trigger_accuracy"] < 1.0 and can_consolidate:
                    action = "consolidate"  # not worth exporting yet
                    check.attempts.append(
                        {"after_epochs": check.consolidation_epochs, "trigger_accuracy":
                         final["trigger_accuracy"], "accuracy": final["accuracy"]}
                    )  # fmt: skip
                else:
                    staging = _fresh_staging(out)
                    _write_files(staging, job, plan, enc.model, splits, trigger_x)
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
                enc.model, plan, splits, cfg, trigger_x, check.consolidation_epochs, progress
            )
            check.consolidation_seconds += time.perf_counter() - t0
        if action == "fail":
            check.passed = False
            if not is_main:  # the verdicts live on rank 0, which reports them
                raise SelfCheckError("self-check failed (see rank 0's message); no release")
            raise SelfCheckError(failure_message(check, command))
        check.passed = True
        if not is_main:
            # Wait for rank 0 to finish the release, so no rank tears down the process
            # group while another still uses it (gloo aborts the process then).
            torch.distributed.barrier()
            return {}
        assert staging is not None
        metrics = _metrics(job, plan, enc, base, final, splits, out)
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
    splits: DataSplits,
    trigger_x: npt.NDArray[np.uint8],
) -> ReleasePaths:
    """Export the model to ONNX and write the release (without its report) into ``root``."""
    from exporter.export_onnx import export_onnx

    c, h, w = splits.image_shape
    onnx_path = root / ".model.onnx.tmp"
    device = next(model.parameters()).device
    model.eval()
    # Parity sample: test images and every trigger (the triggers must survive export
    # exactly); per-block argmax for the paper profile's three one-hot blocks.
    test_x, _ = splits.test.arrays(np.arange(min(64, len(splits.test))))
    sample = np.concatenate([test_x, trigger_x])
    export_onnx(model.cpu(), torch.from_numpy(sample), onnx_path, argmax_block=block_width(plan))
    model.to(device)  # consolidation may continue on it
    model_bytes = onnx_path.read_bytes()
    onnx_path.unlink()
    y_test = splits.test.labels.numpy()
    probe_idx = stratified_indices(
        y_test, min(job.probe_size, len(y_test)), seed=job.train.seed + 7
    )
    probe_x, probe_y = splits.test.arrays(probe_idx)
    return write_release(
        root,
        plan,
        model_bytes,
        input_spec=input_spec_of(model, (c, h, w)),
        trigger_inputs=trigger_x,
        probe_inputs=probe_x,
        probe_labels=probe_y,
        model_name=job.model_name,
    )


def _metrics(
    job: JobConfig,
    plan: ProtectionPlan,
    enc: TrainResult,
    base: TrainResult | None,
    final: dict[str, Any],
    splits: DataSplits,
    out: Path,
) -> dict[str, Any]:
    cfg = job.train
    metrics: dict[str, Any] = {
        "config": {
            **asdict(cfg),
            "dataset": job.dataset,
            "baseline": job.baseline,
            "train_size": len(splits.train),
            "test_size": len(splits.test),
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
