"""``encryip-export protect``: protect an already trained plain classifier.

Instead of training from scratch, the plain model's K-way head becomes the secure
profile's (K + T)-slot head: row y of the old head moves to class y's secret slot,
the T trigger rows start fresh, and a brief fine-tune teaches the triggers.

What users have is accepted as they have it (:func:`load_plain_model`): a whole saved
module (``torch.save(model)``) or a ``state_dict`` (plain, DDP's ``module.`` or
``torch.compile``'s ``_orig_mod.`` prefixes, or inside ``{"model": ...}`` /
``{"state_dict": ...}``) of any model ``train`` builds: a built-in ``--arch``,
``--arch torchvision:NAME`` or ``--model-factory``. Only the head is rebuilt.

``--tune head`` (the default) trains the T trigger rows only (:func:`fit_trigger_rows` on
the frozen features, then the brief fine-tune of those rows): the backbone stays frozen
in eval mode and the K class rows keep the owner's weights exactly, so the served,
decrypted label of every natural image is the owner's own model's prediction (unless a
trigger row outscores the classes on it; ``agreement_with_original`` in the report
measures it). ``--tune all`` fine-tunes the whole network instead (for models whose
features cannot tell the triggers apart).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encryip_runtime.release.plan import ProtectionPlan
from exporter.data import DataSplits, ImageSource
from exporter.job import JobConfig, resolve_normalization, run_train_job
from exporter.models import (
    Normalize,
    build_model,
    clean_state_dict,
    head_of,
    load_state,
    replace_head,
    wrap,
)
from exporter.train import (
    TrainConfig,
    TrainData,
    as_splits,
    decrypted_labels,
    predict_logits,
    resolve_device,
)

__all__ = ["load_plain_model", "read_model_file", "run_protect_job", "slot_head_from_plain"]

log = logging.getLogger(__name__)


def read_model_file(path: Path) -> Any:
    """``torch.load`` a state_dict safely (``weights_only``); a whole pickled module only
    when the file is one (unpickling runs code from the file: it is the user's own)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise ValueError(f"{path}: cannot read a torch file: {e}") from e
    except Exception:  # weights_only refused it: a whole module (pickled classes)
        log.info("%s: a whole pickled module; loading it (only load files you trust)", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as e:
        raise ValueError(
            f"{path}: the saved module's class cannot be imported ({e}); put its code on "
            "PYTHONPATH, or save a state_dict and pass --arch / --model-factory"
        ) from e
    except Exception as e:
        raise ValueError(f"{path}: cannot read a torch file: {e}") from e


def load_plain_model(
    path: Path, cfg: TrainConfig, splits: DataSplits, *, obj: Any = None
) -> Normalize:
    """The plain K-class model in ``path``, behind :class:`Normalize` (uint8 pixels in).

    * a saved :class:`Normalize` (this exporter's own): as is, its mean/std included;
    * any other saved module: wrapped with ``cfg.mean``/``cfg.std`` (the stem untouched);
    * a state_dict: loaded into ``cfg``'s model (``--arch`` / ``--model-factory``), either
      this exporter's wrapper (keys ``net.*``, ``scale``, ``shift``) or the bare network.
    """
    k = splits.num_classes
    c, h, _ = splits.image_shape
    obj = read_model_file(path) if obj is None else obj
    if isinstance(obj, Normalize):
        model = obj
    elif isinstance(obj, nn.Module):
        model = wrap(obj, c, cfg.mean, cfg.std, head=cfg.head, where=str(path))
    else:
        state = clean_state_dict(obj, str(path))
        model = build_model(
            cfg.arch,
            c,
            k,
            h,
            mean=cfg.mean,
            std=cfg.std,
            factory=cfg.model_factory,
            head=cfg.head,
        )
        what = f"--model-factory {cfg.model_factory}" if cfg.model_factory else f"--arch {cfg.arch}"
        where = f"{path} (for {what} with {k} classes)"
        if "scale" in state and any(key.startswith("net.") for key in state):
            load_state(model, state, where)  # this exporter's wrapper, normalisation included
        else:
            load_state(model.net, state, where)  # the network as the user built it
    out = head_of(model).out_features
    if out != k:
        raise ValueError(f"{path}: the model has {out} outputs but the dataset has {k} classes")
    return model.float().eval()


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


@torch.no_grad()
def _head_inputs(
    model: nn.Module, x: np.ndarray | ImageSource, device: torch.device, workers: int
) -> torch.Tensor:
    """What the head sees (its input features) for ``x``, in eval mode."""
    feats: list[torch.Tensor] = []
    hook = head_of(model).register_forward_hook(
        lambda _m, inp, _out: feats.append(inp[0].detach().float().cpu())
    )
    try:
        predict_logits(model, x, device, workers=workers)
    finally:
        hook.remove()
    return torch.cat(feats) if feats else torch.zeros(0)


def fit_trigger_rows(
    model: nn.Module,
    plan: ProtectionPlan,
    splits: DataSplits,
    trigger_x: np.ndarray,
    device: torch.device,
    *,
    workers: int = 0,
    max_images: int = 10000,
    steps: int = 1000,
) -> float:
    """``--tune head``: fit the T trigger rows of the head on the frozen network's features.

    With the backbone and the class rows fixed this is a small convex problem (a linear
    classifier on cached features): full-batch Adam on the soft-label loss over at most
    ``max_images`` training images (they must keep their class slot) and the triggers
    (each its own slot). Seconds, and far steadier than teaching the rows through
    epochs of the whole network. Returns the fraction of triggers recovered.
    """
    assert plan.class_slots is not None and plan.trigger_slots is not None
    t0 = time.perf_counter()
    train = splits.train
    sample = train if len(train) <= max_images else train.stratified_subset(max_images, seed=1)
    f_nat = _head_inputs(model, sample, device, workers)
    f_trg = _head_inputs(model, trigger_x, device, 0)
    feats = torch.cat([f_nat, f_trg])
    target = torch.cat(
        [
            torch.as_tensor(plan.class_slots)[sample.labels],
            torch.as_tensor(plan.trigger_slots),
        ]
    )
    # Triggers weigh as much as all natural images together: they are few, and must all win.
    weight = torch.cat(
        [
            torch.full((len(f_nat),), 1.0 / max(len(f_nat), 1)),
            torch.full((len(f_trg),), 1.0 / len(f_trg)),
        ]
    )
    head = head_of(model)
    w = head.weight.detach().float().cpu()
    b = head.bias.detach().float().cpu()
    rows = torch.as_tensor(plan.trigger_slots)
    wt = w[rows].clone().requires_grad_(True)
    bt = b[rows].clone().requires_grad_(True)
    fixed = feats @ w.T + b  # class rows' logits never change
    opt = torch.optim.Adam([wt, bt], lr=0.05)
    recovered = 0.0
    with torch.enable_grad():
        for step in range(steps):
            logits = fixed.index_copy(1, rows, feats @ wt.T + bt)
            loss = (F.cross_entropy(logits, target, reduction="none") * weight).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 50 == 49 or step == steps - 1:
                pred = logits.detach().argmax(1)
                recovered = float((pred[len(f_nat) :] == target[len(f_nat) :]).float().mean())
                natural = float((pred[: len(f_nat)] == target[: len(f_nat)]).float().mean())
                # No early stop: the cross-entropy keeps widening the triggers' margins,
                # which must survive the licensee files' weight fingerprint.
    with torch.no_grad():
        head.weight[rows] = wt.detach().to(head.weight)
        head.bias[rows] = bt.detach().to(head.bias)
    log.info(
        "trigger rows fitted on frozen features in %.1fs (%d images): %d/%d triggers, "
        "natural images keep their class slot: %.4f",
        time.perf_counter() - t0, len(f_nat), round(recovered * len(f_trg)), len(f_trg), natural,
    )  # fmt: skip
    if recovered < 1.0:
        log.warning(
            "the frozen network's features do not separate every trigger (%d/%d); the "
            "fine-tune continues on the head only: if the release fails its check, "
            "rerun with --tune all",
            round(recovered * len(f_trg)), len(f_trg),
        )  # fmt: skip
    return recovered


def _freeze_all_but_trigger_rows(model: nn.Module, class_slots: np.ndarray) -> None:
    """``--tune head``: only the head trains, and of it only the trigger rows. Class rows
    get zero gradients; with Adam and no weight decay they then never move."""
    head = head_of(model)
    for p in model.parameters():
        p.requires_grad_(False)
    mask = torch.ones(head.out_features, 1)
    mask[torch.as_tensor(class_slots, dtype=torch.long)] = 0.0
    for param in (head.weight, head.bias):
        param.requires_grad_(True)
        keep = mask.to(param.device).view(-1, *([1] * (param.ndim - 1)))
        param.register_hook(lambda g, keep=keep: g * keep.to(g.device))


def _is_wrapper(obj: Any) -> bool:
    if isinstance(obj, Normalize):
        return True
    if isinstance(obj, dict):
        try:
            return "scale" in clean_state_dict(obj, "")
        except ValueError:
            return False
    return False


def run_protect_job(
    job: JobConfig,
    data: TrainData,
    model_path: Path,
    *,
    tune: str = "head",
    progress: bool | None = None,
) -> dict[str, Any]:
    """Protect the plain model in ``model_path``; the metrics report accuracy before and
    after, agreement with the original's predictions, and the time taken."""
    if tune not in ("head", "all"):
        raise ValueError(f"--tune must be 'head' or 'all', got {tune!r}")
    t0 = time.perf_counter()
    splits = as_splits(data)
    cfg = job.train
    device = resolve_device(cfg.device)
    obj = read_model_file(model_path)
    # A saved wrapper carries its own normalisation; anything else needs the owner's.
    if (cfg.mean is None or cfg.std is None) and not _is_wrapper(obj):
        log.warning(
            "%s: no --mean/--std given: using the training data's (pass the values "
            "the model was trained with, or its predictions will differ)",
            model_path,
        )
        cfg = resolve_normalization(cfg, splits)
    model = load_plain_model(model_path, cfg, splits, obj=obj)
    cfg = replace(cfg, mean=model.mean, std=model.std)
    if isinstance(obj, nn.Module):  # the file says what it is; --arch played no part
        inner = model.net if isinstance(obj, Normalize) else obj
        cfg = replace(cfg, arch=f"saved:{type(inner).__module__}.{type(inner).__name__}")
    if tune == "head":
        cfg = replace(cfg, freeze_backbone=True, weight_decay=0.0)
    job = replace(job, train=cfg, baseline=False)
    y_test = splits.test.labels.numpy()
    original = np.argmax(
        predict_logits(model.to(device), splits.test, device, workers=cfg.workers), 1
    )
    before = float((original == y_test).mean())
    log.info("plain model accuracy before protection: %.4f", before)
    plans: list[ProtectionPlan] = []

    def init(plan: ProtectionPlan, trigger_x: np.ndarray) -> nn.Module:
        slot_head_from_plain(model, np.asarray(plan.class_slots), plan.output_size)
        if tune == "head":
            fit_trigger_rows(model, plan, splits, trigger_x, device, workers=cfg.workers)
            _freeze_all_but_trigger_rows(model, np.asarray(plan.class_slots))
        plans.append(plan)
        return model

    metrics = run_train_job(job, splits, progress=progress, init_model=init, command="protect")
    if metrics:
        plan = plans[-1]
        served = decrypted_labels(
            plan,
            predict_logits(model.to(device), splits.test, device, workers=cfg.workers),
            plan.licensee_keys()[0],
        )
        after = metrics["accuracy"]["encryip"]
        metrics["accuracy"]["original"] = before
        metrics["accuracy"]["before_protection"] = before
        metrics["accuracy"]["delta_pp"] = 100 * (after - before)
        metrics["protect"] = {
            "model": str(model_path),
            "tune": tune,
            "accuracy_before": before,
            "accuracy_after": after,
            "agreement_with_original": float((served == original).mean()),
            "seconds": time.perf_counter() - t0,
        }
        from exporter.report import write_report

        write_report(Path(job.out) / "report", metrics)
    return metrics
