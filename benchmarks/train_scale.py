"""Training from an on-disk ImageFolder: memory that does not grow with the number of
images, EncryIP's throughput against a plain PyTorch loop, time to first batch.

1. Writes an ImageFolder of RGB 64x64 JPEGs made from Fashion-MNIST (each image
   upscaled and tinted with a random colour): ``train/<class>/*.jpg`` for the largest
   size, ``test/<class>/*.jpg`` (1,000 images), in a temporary directory.
2. For each size (10k and 40k training images), a fresh process loads the tree with the
   exporter's streaming loader (``exporter.data.load_dataset``), measures the channel
   statistics (streamed), reads the first batch (time to first batch), trains the EncryIP
   model for ``--steps`` batches (the exporter's loop, trigger rows included) and predicts
   the whole test split; its peak RSS (``ru_maxrss``) is reported. Streaming means the
   40k run's peak is about the 10k run's (target ratio <= 1.10).
3. Throughput: EncryIP's loop (``exporter.train.train_model``) against a plain loop
   (cross-entropy on the class labels, AdamW, no triggers, no soft targets) on the same
   model architecture, images and ``DataLoader`` settings, interleaved, ``--repeats``
   times; images/s of the natural images (target >= 0.95x).

    python -m benchmarks.train_scale [--quick] [--steps 40] [--workers 0]

The last stdout line is JSON with ``peak_rss_ratio_40k_vs_10k`` and ``throughput_vs_plain``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import emit, env_info, setup_logging

log = logging.getLogger("benchmarks.train_scale")

FASHION = Path("/usr/share/datasets/fashion-mnist")
SIZES = (10_000, 40_000)
TEST_SIZE = 1_000


def _idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_image_folder(root: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """RGB 64x64 JPEGs from Fashion-MNIST, tinted, one folder per class."""
    from PIL import Image

    x = _idx(FASHION / "train-images-idx3-ubyte.gz")
    y = _idx(FASHION / "train-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    reps = -(-(n_train + n_test) // len(x))  # reuse images (new tints) beyond 60k
    order = np.concatenate([order] * reps)[: n_train + n_test]
    for split, idx in (("train", order[:n_train]), ("test", order[n_train:])):
        for c in range(10):
            (root / split / str(c)).mkdir(parents=True, exist_ok=True)
        for j, i in enumerate(idx):
            tint = rng.uniform(0.4, 1.0, 3)
            grey = Image.fromarray(x[i]).resize((64, 64), Image.BILINEAR)
            rgb = (np.asarray(grey, dtype=np.float32)[..., None] * tint).astype(np.uint8)
            Image.fromarray(rgb, "RGB").save(root / split / str(int(y[i])) / f"{j}.jpg", quality=90)


def _subset_folder(src: Path, dst: Path, n_train: int) -> None:
    """A tree with the first ``n_train`` training images of ``src`` (symlinks) and its test."""
    files = sorted((src / "train").glob("*/*.jpg"), key=lambda p: int(p.stem))[:n_train]
    for f in files:
        d = dst / "train" / f.parent.name
        d.mkdir(parents=True, exist_ok=True)
        (d / f.name).symlink_to(f)
    (dst / "test").symlink_to(src / "test")


def child(root: Path, steps: int, workers: int, threads: int) -> dict[str, Any]:
    """One measurement process: load, first batch, EncryIP steps, predict; peak RSS."""
    import resource

    import torch

    from exporter.data import load_dataset, make_loader
    from exporter.job import resolve_normalization
    from exporter.train import TrainConfig, build_for, make_plan, predict_logits, train_model
    from exporter.triggers import make_trigger_inputs

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    splits = load_dataset(str(root), image_size=64)
    t_listed = time.perf_counter()
    cfg = TrainConfig(arch="cnn", epochs=1, workers=workers, device="cpu", num_threads=threads)
    loader = make_loader(splits.train, cfg.batch_size, shuffle=True, workers=workers)
    next(iter(loader))
    first_batch = time.perf_counter() - t0
    t1 = time.perf_counter()
    cfg = resolve_normalization(cfg, splits)  # what the CLI does without --mean/--std
    stats_seconds = time.perf_counter() - t1
    n = min(len(splits.train), steps * cfg.batch_size)
    rng = np.random.default_rng(0)
    sub = type(splits)(splits.name, splits.train.subset(rng.permutation(len(splits.train))[:n]),
                       splits.test)  # fmt: skip
    plan = make_plan(cfg, splits.class_names)
    trig = make_trigger_inputs(plan.num_triggers, splits.image_shape, 1)
    torch.manual_seed(0)
    model = build_for(cfg, splits, plan.output_size)
    train_model(model, sub, plan.class_targets(), cfg, trigger_x=trig,
                trigger_targets=plan.trigger_targets(), progress=False)  # fmt: skip
    predict_logits(model, splits.test, torch.device("cpu"), workers=workers)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "train_images": len(splits.train),
        "list_seconds": t_listed - t0,  # listing the tree (no image decoded)
        "first_batch_seconds": first_batch,  # listing + first shuffled batch decoded
        "mean_std_seconds": stats_seconds,  # streamed channel statistics (<= 20k images)
        "peak_rss_mib": peak_kib / 1024,
        "steps": -(-n // cfg.batch_size),
    }


def throughput(root: Path, steps: int, workers: int, threads: int, repeats: int) -> dict[str, Any]:
    """images/s of EncryIP's loop vs a plain loop, same model, images and loader."""
    import torch
    import torch.nn.functional as F

    from exporter.data import load_dataset, make_loader
    from exporter.job import resolve_normalization
    from exporter.train import TrainConfig, build_for, make_plan, train_model
    from exporter.triggers import make_trigger_inputs

    torch.set_num_threads(threads)
    splits = load_dataset(str(root), image_size=64)
    cfg = TrainConfig(arch="cnn", epochs=1, workers=workers, device="cpu", num_threads=threads)
    cfg = resolve_normalization(cfg, splits)
    n = min(len(splits.train), steps * cfg.batch_size)
    sub = type(splits)(splits.name, splits.train.subset(np.arange(n)), splits.test)
    plan = make_plan(cfg, splits.class_names)
    trig = make_trigger_inputs(plan.num_triggers, splits.image_shape, 1)
    k = len(splits.class_names)

    def plain() -> float:
        torch.manual_seed(0)
        model = build_for(cfg, splits, k)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        loader = make_loader(sub.train, cfg.batch_size, shuffle=True, workers=workers)
        model.train()
        t0 = time.perf_counter()
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (len(loader) * cfg.batch_size) / (time.perf_counter() - t0)

    def encryip() -> float:
        torch.manual_seed(0)
        model = build_for(cfg, splits, plan.output_size)
        r = train_model(model, sub, plan.class_targets(), cfg, trigger_x=trig,
                        trigger_targets=plan.trigger_targets(), progress=False)  # fmt: skip
        return (n // cfg.batch_size * cfg.batch_size) / r.train_seconds

    got: dict[str, list[float]] = {"plain": [], "encryip": []}
    for r in range(repeats):
        for name, fn in ((("plain", plain), ("encryip", encryip)) if r % 2 == 0
                         else (("encryip", encryip), ("plain", plain))):  # fmt: skip
            got[name].append(fn())
        log.info("repeat %d: %s", r + 1, {k: round(v[-1], 1) for k, v in got.items()})
    best = {k: max(v) for k, v in got.items()}
    return {"images_per_second": got, "best": best, "ratio": best["encryip"] / best["plain"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="20 steps per run, 2 repeats")
    p.add_argument("--steps", type=int, default=40, help="training steps per measured run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--keep", type=Path, default=None, help="write the ImageFolder here")
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = min(args.steps, 20), min(args.repeats, 2)
    if args.child is not None:  # one isolated measurement; JSON on stdout
        setup_logging(verbose=False, threads=args.threads)
        print(json.dumps(child(args.child, args.steps, args.workers, args.threads)))
        return 0
    setup_logging(threads=args.threads)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="encryip-scale-") as tmp:
        base = args.keep or Path(tmp) / "fashion64"
        t0 = time.perf_counter()
        if not (base / "train").is_dir():
            write_image_folder(base, max(SIZES), TEST_SIZE)
        gen_seconds = time.perf_counter() - t0
        log.info("ImageFolder written in %.1fs: %s", gen_seconds, base)
        runs = {}
        for size in SIZES:
            root = Path(tmp) / f"n{size}"
            _subset_folder(base, root, size)
            cmd = [sys.executable, "-m", "benchmarks.train_scale", "--child", str(root),
                   "--steps", str(args.steps), "--workers", str(args.workers),
                   "--threads", str(args.threads)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[size] = json.loads(out.stdout.strip().splitlines()[-1])
            log.info("%d images: %s", size, runs[size])
        tp = throughput(Path(tmp) / f"n{SIZES[0]}", args.steps, args.workers, args.threads,
                        args.repeats)  # fmt: skip
    small, large = runs[SIZES[0]], runs[SIZES[1]]
    emit(
        {
            "benchmark": "train_scale",
            "config": {
                **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "sizes": SIZES,
                "image": "RGB 64x64 JPEG (Fashion-MNIST, tinted)",
                "arch": "cnn",
            },
            "generate_seconds": gen_seconds,
            "runs": {str(k): v for k, v in runs.items()},
            "throughput": tp,
            "peak_rss_ratio_40k_vs_10k": large["peak_rss_mib"] / small["peak_rss_mib"],
            "time_to_first_batch_seconds": {
                str(k): v["first_batch_seconds"] for k, v in runs.items()
            },
            "throughput_vs_plain": tp["ratio"],
            "wall_seconds": time.perf_counter() - t_start,
            "env": env_info(),
        }
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
