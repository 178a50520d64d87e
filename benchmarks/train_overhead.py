"""EncryIP's training-time overhead over the original model (issue 3 target: <= 1.05x).

Same architecture, seed, initial weights, data order and epochs; the runs are
interleaved (original, EncryIP, EncryIP without triggers, repeated) so load changes
on a shared machine hit all three alike, and the minimum over repeats is compared.
Last stdout line: JSON with ``ratio_min`` (EncryIP / original) and its parts.

    python -m benchmarks.train_overhead [--arch cnn] [--epochs 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
from typing import Any

from benchmarks.common import emit, env_info, setup_logging

log = logging.getLogger("benchmarks.train_overhead")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--arch", default="cnn")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    setup_logging(threads=args.threads)

    import torch

    from exporter.data import load_dataset
    from exporter.job import arrays_from_splits
    from exporter.models import build_model
    from exporter.train import TrainConfig, make_plan, plain_targets, train_model
    from exporter.triggers import make_trigger_inputs

    data = arrays_from_splits(load_dataset(args.dataset, train_subset=args.train_subset))
    cfg = TrainConfig(arch=args.arch, epochs=args.epochs, device="cpu", num_threads=args.threads)
    plan = make_plan(cfg, data.class_names)
    c, h, _ = data.input_shape
    trig = make_trigger_inputs(plan.num_triggers, data.input_shape, seed=1)
    k = len(data.class_names)

    def original() -> float:
        torch.manual_seed(0)
        m = build_model(args.arch, c, k, h)
        return train_model(
            m, data, plain_targets(k), cfg, progress=False, tag="original"
        ).train_seconds

    def encryip(with_triggers: bool) -> float:
        torch.manual_seed(0)
        m = build_model(args.arch, c, plan.output_size, h)
        kw: dict[str, Any] = {}
        if with_triggers:
            kw = {"trigger_x": trig, "trigger_targets": plan.trigger_targets()}
        return train_model(
            m, data, plan.class_targets(), cfg, progress=False, tag="encryip", **kw
        ).train_seconds

    times: dict[str, list[float]] = {"original": [], "encryip": [], "encryip_no_triggers": []}
    for r in range(args.repeats):
        times["original"].append(original())
        times["encryip"].append(encryip(True))
        times["encryip_no_triggers"].append(encryip(False))
        log.info("repeat %d: %s", r + 1, {n: round(v[-1], 2) for n, v in times.items()})
    best = {n: min(v) for n, v in times.items()}
    result = {
        "benchmark": "train_overhead",
        "config": vars(args),
        "seconds_min": best,
        "seconds_median": {n: statistics.median(v) for n, v in times.items()},
        "ratio_min": best["encryip"] / best["original"],
        "ratio_min_no_triggers": best["encryip_no_triggers"] / best["original"],
        "env": env_info(),
    }
    print(
        f"EncryIP / original training time (min of {args.repeats}): {result['ratio_min']:.3f} "
        f"(without trigger rows: {result['ratio_min_no_triggers']:.3f})"
    )
    emit(result)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
