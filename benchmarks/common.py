"""Shared helpers for the paper-reproduction benchmarks.

One *cell* = one (dataset, arch, profile, seed): the protection plan, the EncryIP
model trained by the exporter's one training loop (``exporter.train.train_model``),
optionally the original model with the same architecture, seed, data order and
epochs, and the paper's Table-1 metrics. Nothing here is timed by the test suite.

Every benchmark logs progress on stderr and prints one JSON object as its last
stdout line (``emit``); ``benchmarks.run_all`` collects those lines.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "Budget",
    "Cell",
    "attribution",
    "emit",
    "env_info",
    "load_arrays",
    "mean_std",
    "run_cell",
    "setup_logging",
]

log = logging.getLogger("benchmarks")


def setup_logging(verbose: bool = True, threads: int = 1) -> None:
    """Logging on stderr, and torch's intra-op threads.

    One thread by default: on a small shared CPU, two OpenMP threads competing with
    another busy process ran ResNet18 20x slower than one thread (measured: 15 vs
    285 images/s), which would make every timing here meaningless.
    """
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
        # Before any parallel op, so every intra-op thread inherits it (the flag is per
        # thread: exporter.train.enable_flush_denormal).
        torch.set_flush_denormal(True)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx", "matplotlib", "exporter"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_scale_args(parser: argparse.ArgumentParser, *scales: str) -> None:
    """``--quick``/``--full``/``--tiny``/... as one exclusive choice stored in ``scale``
    (None when none is given: each benchmark picks its default)."""
    group = parser.add_mutually_exclusive_group()
    for name in scales or ("quick", "full", "tiny"):
        group.add_argument(f"--{name}", dest="scale", action="store_const", const=name)


def emit(obj: dict[str, Any]) -> None:
    """The benchmark's result: one JSON object, the last line on stdout."""
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def mean_std(values: list[float]) -> dict[str, float]:
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if a.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "n": a.size,
    }


def env_info() -> dict[str, Any]:
    """Machine and library versions, for docs/results.md."""
    import onnxruntime
    import torch

    try:
        import pysodium

        sodium = pysodium.sodium.sodium_version_string().decode()
    except Exception:  # pragma: no cover - libsodium missing
        sodium = None
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "libsodium": sodium,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }


@dataclass(frozen=True)
class Budget:
    """How much of a cell to run. ``None`` subsets mean the whole split."""

    epochs: int = 2
    train_subset: int | None = None
    test_subset: int | None = None
    batch_size: int = 128
    lr: float = 1e-3

    def describe(self) -> str:
        tr = "full" if self.train_subset is None else str(self.train_subset)
        te = "full" if self.test_subset is None else str(self.test_subset)
        return f"{self.epochs} ep, train {tr}, test {te}, batch {self.batch_size}, lr {self.lr}"


def load_arrays(dataset: str, budget: Budget, seed: int = 0) -> Any:
    """The dataset as ``exporter.train.DataArrays`` (stratified seeded subsets)."""
    from exporter.data import load_dataset
    from exporter.job import arrays_from_splits

    splits = load_dataset(
        dataset, train_subset=budget.train_subset, test_subset=budget.test_subset, seed=seed
    )
    return arrays_from_splits(splits)


def attribution(plan: Any, trigger_logits: npt.NDArray[np.float32]) -> float:
    """Paper Eqn. 5 (secret key unavailable): for each licensee j, the plain labels a
    service run with sk_j returns on the triggers are compared with every candidate
    j''s expected trigger decryptions; the fraction of licensees named correctly."""
    from exporter.train import decrypted_labels

    keys = plan.family.keys
    expected = np.stack([plan.scheme.decrypt_labels(sk, plan.trigger_ciphertexts) for sk in keys])
    right = 0
    for j, sk in enumerate(keys):
        returned = decrypted_labels(plan, trigger_logits, sk)
        scores = (expected == returned[None, :]).sum(axis=1)
        right += int(np.argmax(scores) == j and scores[j] > np.sort(scores)[-2])
    return right / len(keys)


@dataclass
class Cell:
    """One trained cell and its metrics (models kept for the attack benchmarks)."""

    dataset: str
    arch: str
    profile: str
    seed: int
    budget: Budget
    metrics: dict[str, Any] = field(default_factory=dict)
    plan: Any = None
    model: Any = None  # the EncryIP model (torch, on cpu)
    original: Any = None  # the original model, when trained
    trigger_x: Any = None
    data: Any = None

    def row(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "arch": self.arch,
            "profile": self.profile,
            "seed": self.seed,
            "budget": asdict(self.budget),
            **self.metrics,
        }


def train_config(arch: str, profile: str, seed: int, budget: Budget, **kw: Any) -> Any:
    from exporter.train import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    import torch

    base = {
        "num_threads": torch.get_num_threads(),
        "profile": profile,
        "arch": arch,
        "epochs": budget.epochs,
        "batch_size": budget.batch_size,
        "lr": budget.lr,
        "seed": seed,
    }
    base.update(kw)
    return TrainConfig(**{k: v for k, v in base.items() if k in names})


def run_cell(
    dataset: str,
    arch: str,
    profile: str,
    seed: int,
    budget: Budget,
    *,
    baseline: bool = True,
    data: Any = None,
    licensees: tuple[str, ...] = ("acme", "globex", "initech"),
    num_triggers: int = 32,
    trigger_source: str = "noise",
    max_trigger_epochs: int = 0,
    trigger_x: Any = None,
    plan: Any = None,
) -> Cell:
    """Plan -> EncryIP training -> (original training) -> Table-1 metrics.

    ``trigger_x``: the trigger inputs (uint8 [T, C, H, W]); else chosen by
    ``trigger_source`` (default: secret noise images).
    ``plan``: a protection plan made by the caller (e.g. another secure format).

    ``trigger_source``/``max_trigger_epochs``: as ``encryip-export`` (``data`` holds the
    trigger images out of the training split for both models; consolidation epochs run
    while trigger recovery < 1.0, as the release self-check does).
    """

    from exporter.job import consolidate_triggers, select_triggers
    from exporter.train import (
        as_splits,
        evaluate_protected,
        make_plan,
        predict_logits,
        resolve_device,
        train_encryip_and_original,
    )

    if data is None:
        data = load_arrays(dataset, budget, seed=0)
    cfg = train_config(arch, profile, seed, budget, licensees=licensees, num_triggers=num_triggers)
    device = resolve_device(cfg.device)
    if plan is None:
        plan = make_plan(cfg, data.class_names)
    if trigger_x is None:
        splits, trigger_x = select_triggers(
            trigger_source, as_splits(data), plan.num_triggers, 10_000 + seed
        )
    else:
        splits = as_splits(data)

    t0 = time.perf_counter()
    enc, base = train_encryip_and_original(plan, splits, cfg, trigger_x, baseline=baseline)
    final = evaluate_protected(plan, enc.model, splits, trigger_x, device)
    rounds = 0
    while final["trigger_accuracy"] < 1.0 and rounds < max_trigger_epochs:
        rounds += 1
        consolidate_triggers(enc.model, plan, splits, cfg, trigger_x, rounds, progress=False)
        final = evaluate_protected(plan, enc.model, splits, trigger_x, device)
    trig_logits = predict_logits(enc.model, trigger_x, device)
    orig_acc = None if base is None else base.history[-1].test_accuracy
    metrics: dict[str, Any] = {
        "original": orig_acc,
        "encryip": final["accuracy"],
        "incorrect_key": final["accuracy_incorrect_key"],
        "delta_pp": None if orig_acc is None else 100 * (final["accuracy"] - orig_acc),
        "trigger_accuracy": final["trigger_accuracy"],
        "attribution": attribution(plan, trig_logits),
        "trigger_source": trigger_source,
        "consolidation_epochs": rounds,
        "train_size": len(splits.train),
        "test_size": len(data.x_test),
        "train_seconds": {
            "encryip": enc.train_seconds,
            "original": None if base is None else base.train_seconds,
        },
        "history": {
            "EncryIP": [asdict(m) for m in enc.history],
            **({"original": [asdict(m) for m in base.history]} if base is not None else {}),
        },
        "wall_seconds": time.perf_counter() - t0,
    }
    for dec, acc in final.get("accuracy_by_decoder", {}).items():  # paper: both Φ⁻¹ rules
        metrics[f"encryip_{dec}"] = acc
        metrics[f"delta_pp_{dec}"] = None if orig_acc is None else 100 * (acc - orig_acc)
    log.info(
        "%s/%s/%s seed %d: original %s, EncryIP %.4f, incorrect %.4f, trig %.3f, attr %.2f (%.0fs)",
        dataset,
        arch,
        profile,
        seed,
        "-" if orig_acc is None else f"{orig_acc:.4f}",
        final["accuracy"],
        final["accuracy_incorrect_key"],
        final["trigger_accuracy"],
        metrics["attribution"],
        metrics["wall_seconds"],
    )
    return Cell(
        dataset,
        arch,
        profile,
        seed,
        budget,
        metrics,
        plan,
        enc.model.cpu(),
        None if base is None else base.model.cpu(),
        trigger_x,
        data,
    )


def with_budget(budget: Budget, **kw: Any) -> Budget:
    return replace(budget, **kw)
