"""Algorithm 1: train the protected model once.

Read top to bottom: config -> Gen + targets (the protection plan) -> one training
loop (used for the EncryIP model and, with ``--baseline``, for the plain model
with the same architecture, seed, data order and epochs) -> per-epoch metrics.
Export and the release live in ``exporter.export_onnx`` / ``exporter.job``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler

from encryip_runtime.crypto.profiles import profile_of
from encryip_runtime.crypto.scheme import SecretKey
from encryip_runtime.crypto.scheme_v2 import CSLiteV2
from encryip_runtime.formats.common import AnySecretKey
from encryip_runtime.release.plan import ProtectionPlan, plan_protection
from exporter.data import DataSplits, ImageDataset, ImageSource, collate, make_loader

__all__ = [
    "DataArrays",
    "EpochMetrics",
    "TrainConfig",
    "TrainData",
    "TrainResult",
    "as_splits",
    "enable_flush_denormal",
    "evaluate_protected",
    "plain_targets",
    "train_encryip_and_original",
    "train_model",
    "train_protected",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    profile: str = (
        "secure"  # "secure" (ristretto255, codebook) or "paper" (Z_p^*, 3 one-hot blocks)
    )
    arch: str = "cnn"  # cnn | resnet18 | googlenet | alexnet | torchvision:NAME
    model_factory: str | None = None  # "package.module:callable", callable(num_outputs)
    weights: str | None = None  # local .pth state_dict loaded into the new model
    head: str | None = None  # the classifier head's attribute path (None: found)
    # Normalisation as the model was trained, on the [0, 1] scale (folded into the
    # graph after /255); None: computed from the training data.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    decoder: str = "joint"  # paper profile's Φ⁻¹: "joint" (nearest codeword) or "argmax" (paper)
    epochs: int = 2
    batch_size: int = 128
    lr: float = 1e-3  # AdamW
    weight_decay: float = 1e-4
    num_triggers: int = 32  # T Fake ciphertexts, one trigger image each
    # Trigger rows appended to every batch: enough that each trigger is seen about
    # this many times per epoch (at least 2 rows, at most a quarter of the batch).
    trigger_exposures: int = 32
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    num_threads: int = 0  # torch intra-op threads on CPU (0 = torch default)
    licensees: tuple[str, ...] = ("acme", "globex", "initech")
    checkpoint: str | None = None  # path to save after every epoch (and resume from)
    workers: int = 0  # DataLoader worker processes (0: decode in the training process)
    augment: bool = False  # random-resized-crop + flip on the training images
    amp: bool = True  # bf16 autocast on CUDA where supported (never on CPU)
    channels_last: bool = True  # channels_last memory format on CUDA
    compile: bool = False  # torch.compile the training model
    freeze_backbone: bool = False  # train the head only (`protect`); the rest in eval mode


@dataclass(frozen=True)
class DataArrays:
    """A dataset as raw uint8 pixels ``[N, C, H, W]`` and int64 labels."""

    x_train: npt.NDArray[np.uint8]
    y_train: npt.NDArray[np.int64]
    x_test: npt.NDArray[np.uint8]
    y_test: npt.NDArray[np.int64]
    class_names: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)


TrainData = DataSplits | DataArrays


def as_splits(data: TrainData) -> DataSplits:
    """The training loop's view: train and test :class:`ImageSource` (arrays wrapped,
    not copied)."""
    if isinstance(data, DataSplits):
        return data

    def wrap(x: npt.NDArray[np.uint8], y: npt.NDArray[np.int64]) -> ImageDataset:
        return ImageDataset(
            torch.from_numpy(np.ascontiguousarray(x)),
            torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
            data.class_names,
        )

    return DataSplits("arrays", wrap(data.x_train, data.y_train), wrap(data.x_test, data.y_test))


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    test_accuracy: float  # decrypted with a licensee key (EncryIP) or plain argmax (baseline)
    trigger_accuracy: float  # triggers whose output is exactly their Fake ciphertext
    seconds: float


@dataclass
class TrainResult:
    model: nn.Module
    history: list[EpochMetrics] = field(default_factory=list)
    train_seconds: float = 0.0
    #: CPU time of this process in the loop: steadier than wall time on a shared machine.
    train_cpu_seconds: float = 0.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but no CUDA device is available")
    return torch.device(name)


def make_plan(cfg: TrainConfig, class_names: tuple[str, ...]) -> ProtectionPlan:
    """Algorithm 1, lines 1-5: Gen(P), c_y = Enc(pk, y) once per label, Φ; plus Fake triggers."""
    return plan_protection(
        cfg.profile, list(class_names), list(cfg.licensees), cfg.num_triggers, cfg.decoder
    )


def plain_targets(num_classes: int) -> npt.NDArray[np.float32]:
    """The baseline's targets: ordinary one-hot labels."""
    return np.eye(num_classes, dtype=np.float32)


def block_width(plan: ProtectionPlan | None) -> int | None:
    """paper profile: the loss is a softmax cross-entropy per one-hot block of width p."""
    if plan is None:
        return None
    return profile_of(plan.scheme).block_width(plan.output_size)


def soft_label_loss(logits: torch.Tensor, targets: torch.Tensor, block: int | None) -> torch.Tensor:
    """Cross-entropy against probability targets (the paper's 'soft-label loss').

    With three one-hot blocks (paper profile) each block is its own softmax: the
    network predicts u1, u2 and u3 independently.
    """
    if block is None:
        return F.cross_entropy(logits, targets)
    n = logits.shape[0]
    lg = logits.reshape(n * 3, block)
    tg = targets.reshape(n * 3, block)
    return F.cross_entropy(lg, tg) * 3


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    x: npt.NDArray[np.uint8] | ImageSource,
    device: torch.device,
    batch_size: int = 512,
    *,
    workers: int = 0,
) -> npt.NDArray[np.float32]:
    """Logits (float32, eval mode, no autocast) for an array of images or a streamed set."""
    model.eval()
    outs = []
    if isinstance(x, np.ndarray):
        batches: Any = (
            torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size]))
            for i in range(0, len(x), batch_size)
        )
    else:
        pin = device.type == "cuda"
        batches = (xb for xb, _ in make_loader(x, batch_size, workers=workers, pin_memory=pin))
    for xb in batches:
        outs.append(model(xb.to(device, non_blocking=True)).float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0), dtype=np.float32)


def decrypted_labels(
    plan: ProtectionPlan,
    logits: npt.NDArray[np.float32],
    sk: AnySecretKey,
    decoder: str | None = None,
) -> npt.NDArray[np.int64]:
    """Φ⁻¹ then Dec with ``sk``: what a licensee reads (SampDist does not change it).

    paper profile: ``decoder`` overrides the plan's Φ⁻¹ rule (to measure both).
    """
    if profile_of(plan.scheme).uses_codebook:
        # Decrypt each codebook slot once, then index by argmax: same result as
        # decrypting every re-randomised row, far cheaper.
        slot_labels = plan.scheme.decrypt_labels(sk, plan.codebook())
        return slot_labels[np.argmax(logits, axis=1)]
    tr = plan.transfer() if decoder is None else replace(plan, decoder=decoder).transfer()
    return plan.scheme.decrypt_labels(sk, tr.phi_inv(logits))


def trigger_hits(plan: ProtectionPlan, logits: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """Per trigger: did the network output exactly its Fake ciphertext?

    paper profile: counted with the per-block argmax whatever the release's decoder,
    as the arbitrator's ``verify-onnx`` counts them (its exact bound needs the free
    decoder); the joint decoder recovers every trigger this counts, and possibly more.
    """
    prof = profile_of(plan.scheme)
    if prof.uses_codebook:
        assert plan.trigger_slots is not None
        return np.argmax(logits, axis=1) == plan.trigger_slots
    cts = prof.transfer(plan.scheme).phi_inv(logits)  # no codewords: per-block argmax
    return np.all(cts == plan.trigger_ciphertexts, axis=1)


def random_wrong_key(plan: ProtectionPlan) -> AnySecretKey:
    """A key outside the family (g1^a g2^b != h): the paper's EncryIP_Incorrect."""
    g = plan.scheme.group
    while True:
        sk: AnySecretKey = (
            plan.scheme.random_key()
            if isinstance(plan.scheme, CSLiteV2)
            else SecretKey(g.random_scalar(), g.random_scalar())
        )
        try:
            plan.scheme.check_key(plan.family.pk, sk)
        except Exception:
            return sk


def evaluate_protected(
    plan: ProtectionPlan,
    model: nn.Module,
    data: TrainData,
    trigger_x: npt.NDArray[np.uint8],
    device: torch.device,
    *,
    workers: int = 0,
) -> dict[str, Any]:
    """Accuracy with every licensee key and with a wrong key; trigger recovery."""
    test = as_splits(data).test
    y_test = test.labels.numpy()
    logits = predict_logits(model, test, device, workers=workers)
    per_key = {
        name: float((decrypted_labels(plan, logits, sk) == y_test).mean())
        for name, sk in zip(plan.licensees, plan.licensee_keys(), strict=True)
    }
    # One wrong key maps each class to one fixed random label, so its accuracy is a
    # multiple of 1/K; the mean over many wrong keys estimates the expected value.
    wrong = float(
        np.mean(
            [
                (decrypted_labels(plan, logits, random_wrong_key(plan)) == y_test).mean()
                for _ in range(16)
            ]
        )
    )
    trig = trigger_hits(plan, predict_logits(model, trigger_x, device))
    out: dict[str, Any] = {
        "accuracy_per_licensee": per_key,
        "accuracy": float(np.mean(list(per_key.values()))),
        "accuracy_incorrect_key": wrong,
        "trigger_accuracy": float(trig.mean()) if len(trig) else 1.0,
    }
    if not profile_of(plan.scheme).uses_codebook:
        # both Φ⁻¹ rules on the same outputs (the release uses one)
        sk = plan.licensee_keys()[0]
        out["accuracy_by_decoder"] = {
            d: float((decrypted_labels(plan, logits, sk, d) == y_test).mean())
            for d in ("argmax", "joint")
        }
    return out


def _is_dist() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


_flush_process_wide = False  # enable_flush_denormal() ran: train_model leaves it on


def enable_flush_denormal() -> None:
    """Flush subnormal floats to zero in this thread and in every torch intra-op thread
    started afterwards, for the rest of the process.

    The x86 flag (MXCSR FTZ/DAZ) is per thread: ``torch.set_flush_denormal`` sets only
    the calling thread's, and an OpenMP worker inherits the flag of the thread that
    spawns it. Called before the first parallel torch op (``encryip-export`` and the
    benchmarks do it first thing), every worker flushes; called later, the workers
    already started keep computing subnormals, slowly (``train_model`` warns then).
    """
    global _flush_process_wide
    torch.set_flush_denormal(True)
    _flush_process_wide = True


def workers_flush_denormals() -> bool:
    """Do all intra-op threads flush subnormals? (A parallel multiply of subnormals.)"""
    # Subnormals made from bit patterns (a float constant would be flushed on this
    # thread before any worker saw it), counted as bit patterns (a float comparison
    # would itself read subnormals as zero).
    x = torch.ones(1 << 20, dtype=torch.int32).view(torch.float32)
    return bool(torch.count_nonzero((x * 1.0).view(torch.int32)) == 0)


def train_model(
    model: nn.Module,
    data: TrainData,
    targets: npt.NDArray[np.float32],
    cfg: TrainConfig,
    **kwargs: Any,
) -> TrainResult:
    """The one training loop (see ``_train_loop``), with subnormals flushed to zero.

    Outputs the targets never favour (the EncryIP head's extra slots, most of each
    one-hot block) are pushed to tiny probabilities whose gradients go subnormal, and
    x86 CPUs handle subnormals tens of times slower (measured: EncryIP epochs 1.47x
    the original's). Flushing them changes nothing measurable in accuracy. The flag is
    per thread (see ``enable_flush_denormal``): set here for this thread, and checked
    for the intra-op threads, which only have it when it was set before they started.
    """
    torch.set_flush_denormal(True)
    if resolve_device(cfg.device).type == "cpu" and not workers_flush_denormals():
        log.warning(
            "torch's intra-op threads started before subnormals were set to flush "
            "(call exporter.train.enable_flush_denormal() first): training on %d threads "
            "computes subnormals, which slows EncryIP's rarely-targeted outputs",
            torch.get_num_threads(),
        )
    try:
        return _train_loop(model, as_splits(data), targets, cfg, **kwargs)
    finally:
        if not _flush_process_wide:
            torch.set_flush_denormal(False)


def train_protected(
    model: nn.Module,
    data: TrainData,
    plan: ProtectionPlan,
    cfg: TrainConfig,
    trigger_x: npt.NDArray[np.uint8],
    **kwargs: Any,
) -> TrainResult:
    """``train_model`` towards ``plan``'s targets: Φ of each class's ciphertext, and the
    trigger rows (Φ of their Fakes) mixed into every batch."""
    return train_model(
        model,
        data,
        plan.class_targets(),
        cfg,
        block=block_width(plan),
        trigger_x=trigger_x,
        trigger_targets=plan.trigger_targets(),
        **kwargs,
    )


@dataclass(frozen=True)
class _Precision:
    """What the device supports, chosen once: bf16 autocast and channels_last on CUDA."""

    autocast: bool
    channels_last: bool
    device_type: str = "cuda"

    @classmethod
    def for_device(cls, cfg: TrainConfig, device: torch.device) -> _Precision:
        cuda = device.type == "cuda"
        bf16 = cuda and cfg.amp and torch.cuda.is_bf16_supported()
        return cls(bf16, cuda and cfg.channels_last, device.type)

    def context(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast:
            return torch.autocast(self.device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def inputs(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def _train_loop(
    model: nn.Module,
    data: DataSplits,
    targets: npt.NDArray[np.float32],
    cfg: TrainConfig,
    *,
    block: int | None = None,
    trigger_x: npt.NDArray[np.uint8] | None = None,
    trigger_targets: npt.NDArray[np.float32] | None = None,
    evaluate: Callable[[nn.Module], tuple[float, float]] | None = None,
    progress: bool | None = None,
    tag: str = "encryip",
) -> TrainResult:
    """The one training loop. ``targets[y]`` is the soft target of class y.

    Batches come from a ``DataLoader`` over the training set (streamed from disk for
    ImageFolder trees). Under torchrun a ``DistributedSampler`` gives each rank a
    disjoint slice of every epoch's permutation and DistributedDataParallel averages
    gradients.
    """
    device = resolve_device(cfg.device)
    if cfg.num_threads > 0 and device.type == "cpu":
        torch.set_num_threads(cfg.num_threads)
    rank = torch.distributed.get_rank() if _is_dist() else 0
    world = torch.distributed.get_world_size() if _is_dist() else 1
    prec = _Precision.for_device(cfg, device)
    model, net = _place(model, cfg, device, prec, world)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    train_set = data.train.augmented() if cfg.augment else data.train
    # Same data order for EncryIP and the baseline: the sampler's permutation depends
    # only on (seed, epoch), never on the model.
    loader = make_loader(
        train_set,
        cfg.batch_size,
        shuffle=True,
        seed=cfg.seed * 1000,
        workers=cfg.workers,
        pin_memory=device.type == "cuda",
        rank=rank,
        world=world,
        persistent=True,
    )
    sampler = cast(DistributedSampler[Any], loader.sampler)
    steps_per_epoch = len(loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=max(1, cfg.epochs * steps_per_epoch)
    )
    t_all = torch.from_numpy(targets)
    triggers = _TriggerMix.make(trigger_x, trigger_targets, cfg, steps_per_epoch)
    result = TrainResult(model)
    start_epoch = _resume(cfg, tag, device, model, opt, sched, result)
    show = (sys.stderr.isatty() if progress is None else progress) and rank == 0

    def set_mode() -> None:
        # A frozen backbone (protect's head-only phase) stays in eval mode: batch-norm
        # statistics and dropout as the owner trained them; the head is a plain Linear.
        net.train(not cfg.freeze_backbone)

    if start_epoch < cfg.epochs:  # one-time costs outside the timer (_warm_up)
        set_mode()
        n0 = min(cfg.batch_size, len(train_set))
        _warm_up(net, opt, data.train, n0, t_all, block, prec, device)
    for epoch in range(start_epoch, cfg.epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        set_mode()
        sampler.set_epoch(epoch)
        tg = torch.Generator().manual_seed(cfg.seed * 1000 + epoch + 1)
        total, count = 0.0, 0
        bar = _EpochBar(show, steps_per_epoch, f"{tag} epoch {epoch + 1}/{cfg.epochs}")
        for xb, yb in loader:
            tb = t_all[yb]
            nb = len(yb)
            if triggers is not None:  # a few trigger rows in every batch (_TriggerMix: why)
                xb, tb = triggers.mix(xb, tb, tg)
            xb, tb = prec.inputs(xb, device), tb.to(device, non_blocking=True)
            with prec.context():
                logits = net(xb)
            loss = soft_label_loss(logits.float(), tb, block)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * nb  # .detach() + float: one sync per step
            count += nb
            bar.step(total / max(count, 1))
        bar.close()
        seconds = time.perf_counter() - t0
        result.train_seconds += seconds
        result.train_cpu_seconds += time.process_time() - c0
        # Only rank 0 evaluates, logs and checkpoints; every rank keeps the history.
        nan = float("nan")
        acc, trig = evaluate(model) if evaluate is not None and rank == 0 else (nan, nan)
        result.history.append(EpochMetrics(epoch + 1, total / max(count, 1), acc, trig, seconds))
        if rank == 0:
            _log_epoch(tag, cfg.epochs, result.history[-1])
            if cfg.checkpoint:
                _save_checkpoint(cfg, tag, model, opt, sched, epoch + 1, result)
    if prec.channels_last:
        model.to(memory_format=torch.contiguous_format)
    return result


def _place(
    model: nn.Module, cfg: TrainConfig, device: torch.device, prec: _Precision, world: int
) -> tuple[nn.Module, nn.Module]:
    """``model`` on ``device``, and the module that trains it (DDP and compile wrappers)."""
    model = model.to(device)
    if prec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        net = cast(nn.Module, torch.compile(net))
    return model, net


@dataclass(frozen=True)
class _TriggerMix:
    """The trigger rows appended to every training batch.

    Triggers are T images among tens of thousands: appended to every batch (a few at a
    time, cycling) they are seen ~(steps x k / T) times per epoch, enough to be memorised
    exactly without hurting accuracy.
    """

    x: torch.Tensor
    targets: torch.Tensor
    per_batch: int  # k

    @classmethod
    def make(
        cls,
        x: npt.NDArray[np.uint8] | None,
        targets: npt.NDArray[np.float32] | None,
        cfg: TrainConfig,
        steps_per_epoch: int,
    ) -> _TriggerMix | None:
        if x is None or targets is None or len(x) == 0:
            return None
        want = math.ceil(cfg.trigger_exposures * len(x) / max(steps_per_epoch, 1))
        per_batch = min(max(2, want), max(2, cfg.batch_size // 4))
        return cls(torch.from_numpy(x), torch.from_numpy(targets), per_batch)

    def mix(
        self, xb: torch.Tensor, tb: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        j = torch.randint(0, len(self.x), (self.per_batch,), generator=gen)
        return torch.cat([xb, self.x[j]]), torch.cat([tb, self.targets[j]])


def _warm_up(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    train: ImageSource,
    n: int,
    targets: torch.Tensor,
    block: int | None,
    prec: _Precision,
    device: torch.device,
) -> None:
    """One forward/backward on ``n`` training rows, outside the timer and without an
    optimizer step, so whichever model trains first in a process does not pay one-time
    costs (allocator growth, kernel selection) that the second one skips."""
    x, y = collate(
        train.__getitems__(list(range(n)))
        if isinstance(train, ImageDataset)
        else [train[i] for i in range(n)]
    )
    with prec.context():
        out = net(prec.inputs(x, device))
    soft_label_loss(out.float(), targets[y].to(device), block).backward()
    opt.zero_grad(set_to_none=True)


class _EpochBar:
    """One epoch's tqdm bar on stderr with the running loss, or nothing (``show`` off:
    not a terminal, ``--no-progress``, or not rank 0)."""

    def __init__(self, show: bool, steps: int, desc: str) -> None:
        self._bar: Any = None
        if show:
            from tqdm import tqdm

            self._bar = tqdm(total=steps, desc=desc, file=sys.stderr, leave=False)

    def step(self, loss: float) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{loss:.4f}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _log_epoch(tag: str, epochs: int, m: EpochMetrics) -> None:
    log.info(
        "%s epoch %d/%d: loss %.4f, test acc %.4f, trigger acc %.3f, %.1fs",
        tag,
        m.epoch,
        epochs,
        m.train_loss,
        m.test_accuracy,
        m.trigger_accuracy,
        m.seconds,
    )


def _checkpoint_path(cfg: TrainConfig, tag: str) -> str:
    assert cfg.checkpoint is not None
    return cfg.checkpoint + f".{tag}"


def _resume(
    cfg: TrainConfig,
    tag: str,
    device: torch.device,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    result: TrainResult,
) -> int:
    """Load ``tag``'s checkpoint into model, optimizer, scheduler and ``result`` where
    there is one; the epoch to start from (0 without one)."""
    if not cfg.checkpoint or not Path(_checkpoint_path(cfg, tag)).exists():
        return 0
    ck = torch.load(_checkpoint_path(cfg, tag), map_location=device, weights_only=False)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    result.history = [EpochMetrics(**h) for h in ck["history"]]
    result.train_seconds = ck["train_seconds"]
    result.train_cpu_seconds = ck.get("train_cpu_seconds", 0.0)
    log.info("%s: resumed from %s at epoch %d", tag, cfg.checkpoint, ck["epoch"])
    return int(ck["epoch"])


def _save_checkpoint(
    cfg: TrainConfig,
    tag: str,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    epoch: int,
    result: TrainResult,
) -> None:
    """Atomic 0600 write at an epoch boundary: a restart resumes from the next epoch."""
    path = _checkpoint_path(cfg, tag)
    tmp = path + ".tmp"
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "epoch": epoch,
            "config": asdict(cfg),
            "history": [asdict(h) for h in result.history],
            "train_seconds": result.train_seconds,
            "train_cpu_seconds": result.train_cpu_seconds,
        },
        tmp,
    )
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def build_for(cfg: TrainConfig, data: DataSplits, num_outputs: int) -> nn.Module:
    """``cfg``'s model (arch, factory, weights, head, mean/std) for ``data``."""
    from exporter.models import build_model

    c, h, _ = data.image_shape
    return build_model(
        cfg.arch,
        c,
        num_outputs,
        h,
        mean=cfg.mean,
        std=cfg.std,
        factory=cfg.model_factory,
        weights=cfg.weights,
        head=cfg.head,
    )


def train_encryip_and_original(
    plan: ProtectionPlan,
    data: TrainData,
    cfg: TrainConfig,
    trigger_x: npt.NDArray[np.uint8],
    *,
    baseline: bool,
    progress: bool | None = None,
    init_model: Callable[[ProtectionPlan, npt.NDArray[np.uint8]], nn.Module] | None = None,
) -> tuple[TrainResult, TrainResult | None]:
    """Algorithm 1 for ``plan`` and, with ``baseline``, the original model with the same
    architecture, seed, initial weights (where shapes allow) and data order."""
    splits = as_splits(data)
    device = resolve_device(cfg.device)
    y_test = splits.test.labels.numpy()

    def eval_encryip(model: nn.Module) -> tuple[float, float]:
        logits = predict_logits(model, splits.test, device, workers=cfg.workers)
        acc = float((decrypted_labels(plan, logits, plan.licensee_keys()[0]) == y_test).mean())
        trig = float(trigger_hits(plan, predict_logits(model, trigger_x, device)).mean())
        return acc, trig

    def eval_plain(model: nn.Module) -> tuple[float, float]:
        logits = predict_logits(model, splits.test, device, workers=cfg.workers)
        return float((np.argmax(logits, axis=1) == y_test).mean()), float("nan")

    torch.manual_seed(cfg.seed)  # seed before building: same initial weights for both
    if init_model is not None:  # `protect`: start from a trained plain model instead
        model = init_model(plan, trigger_x)
    else:
        model = build_for(cfg, splits, plan.output_size)
    enc = train_protected(
        model, splits, plan, cfg, trigger_x, evaluate=eval_encryip, progress=progress
    )
    if not baseline:
        return enc, None
    k = len(splits.class_names)
    torch.manual_seed(cfg.seed)
    plain = build_for(cfg, splits, k)
    base = train_model(
        plain, splits, plain_targets(k), cfg, evaluate=eval_plain, progress=progress, tag="original"
    )
    return enc, base
