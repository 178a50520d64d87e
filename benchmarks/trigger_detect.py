"""Can the trigger queries be told from ordinary queries by looking at the images?

For each trigger source (``data``: held-out training images, the default; ``noise``:
synthetic patterns), train the EncryIP model as the exporter does (triggers held out,
consolidation epochs while recovery < 1.0), then score the triggers and natural test
images with the input-side detectors of ``encryip_runtime.attacks.inputs``, each fitted
only on what an attacker has: half of the test split (its own natural images), with the
other half as the natural queries. AUROC 0.5 = chance (target for data triggers: <= 0.6).

The release's 32 triggers give a noisy AUROC, so each detector is also scored on 8 more
independent draws of the same trigger generator (``pooled``). Also reported: accuracy
against the original model trained on the same (reduced) training set, trigger recovery,
and how many natural test images land on a trigger output (captured look-alikes).

    python -m benchmarks.trigger_detect [--quick] [--dataset mnist] [--epochs 2]
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import numpy as np

from benchmarks.common import Budget, emit, env_info, load_arrays, setup_logging, train_config

log = logging.getLogger("benchmarks.trigger_detect")

EXTRA_DRAWS = 8


def detector_aurocs(
    triggers: np.ndarray, pooled: np.ndarray, attacker_x: np.ndarray, attacker_y: np.ndarray,
    natural: np.ndarray,
) -> dict[str, dict[str, float]]:  # fmt: skip
    from encryip_runtime.attacks.inputs import (
        MaxSoftmaxDetector,
        NearestNeighbourDetector,
        PixelStatsDetector,
        auroc,
        softmax_regression,
    )

    dets = {
        "max_softmax": MaxSoftmaxDetector(softmax_regression(attacker_x, attacker_y)),
        "pixel_stats": PixelStatsDetector(attacker_x),
        "nearest_neighbour": NearestNeighbourDetector(attacker_x),
    }
    out = {}
    for name, d in dets.items():
        neg = d.score(natural)
        out[name] = {
            "release_triggers": auroc(neg, d.score(triggers)),
            "pooled": auroc(neg, d.score(pooled)),
        }
        log.info("%s: AUROC release %.3f, pooled %.3f", name, *out[name].values())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="10k training images, 2 epochs")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--arch", default="cnn")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--triggers", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-trigger-epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    setup_logging(threads=args.threads)
    if args.quick:
        args.epochs = args.epochs or 2
        args.train_subset = args.train_subset or 10_000
    budget = Budget(epochs=args.epochs or 3, train_subset=args.train_subset)

    import torch

    from exporter.job import consolidate_triggers, select_triggers
    from exporter.train import (
        as_splits,
        build_for,
        evaluate_protected,
        make_plan,
        plain_targets,
        predict_logits,
        resolve_device,
        train_encryip_and_original,
        train_model,
    )
    from exporter.triggers import holdout_indices, make_trigger_inputs

    t_start = time.perf_counter()
    full = load_arrays(args.dataset, budget, seed=args.seed)
    half = len(full.x_test) // 2
    attacker_x, attacker_y = full.x_test[:half], full.y_test[:half]
    natural = full.x_test[half:]
    results: dict[str, Any] = {}
    for source in ("data", "noise"):
        cfg = train_config(args.arch, "secure", args.seed, budget, num_triggers=args.triggers)
        plan = make_plan(cfg, full.class_names)
        seed = 10_000 + args.seed
        data, trig = select_triggers(source, as_splits(full), plan.num_triggers, seed)
        device = resolve_device(cfg.device)
        enc, _ = train_encryip_and_original(plan, data, cfg, trig, baseline=False, progress=False)
        final = evaluate_protected(plan, enc.model, data, trig, device)
        rounds = 0
        while final["trigger_accuracy"] < 1.0 and rounds < args.max_trigger_epochs:
            rounds += 1
            consolidate_triggers(enc.model, plan, data, cfg, trig, rounds, progress=False)
            final = evaluate_protected(plan, enc.model, data, trig, device)
        # The original model on the same reduced training set, same seed and data order.
        k = len(full.class_names)
        torch.manual_seed(cfg.seed)
        plain = train_model(build_for(cfg, data, k), data, plain_targets(k), cfg,
                            progress=False, tag="original").model  # fmt: skip
        orig = float((predict_logits(plain, full.x_test, device).argmax(1) == full.y_test).mean())
        slots = np.argmax(predict_logits(enc.model, full.x_test, device), axis=1)
        captured = int(np.isin(slots, np.asarray(plan.trigger_slots)).sum())
        if source == "data":
            pool = np.concatenate(
                [trig] + [full.x_train[holdout_indices(full.y_train, args.triggers, seed + 1 + i)]
                 for i in range(EXTRA_DRAWS)]
            )  # fmt: skip
        else:
            pool = np.concatenate(
                [trig] + [make_trigger_inputs(args.triggers, full.input_shape, seed + 1 + i)
                 for i in range(EXTRA_DRAWS)]
            )  # fmt: skip
        results[source] = {
            "accuracy_original": orig,
            "accuracy_encryip": final["accuracy"],
            "delta_pp": 100 * (final["accuracy"] - orig),
            "trigger_accuracy": final["trigger_accuracy"],
            "consolidation_epochs": rounds,
            "natural_test_on_trigger_outputs": captured,
            "test_size": len(full.x_test),
            "train_size": len(data.train),
            "trigger_pixel_mean": float(trig.mean()),
            "trigger_pixel_std": float(trig.std()),
            "auroc": detector_aurocs(trig, pool, attacker_x, attacker_y, natural),
        }
        log.info("%s triggers: %s", source, {k: v for k, v in results[source].items()
                                             if k != "auroc"})  # fmt: skip
    data_max = max(v["pooled"] for v in results["data"]["auroc"].values())
    emit(
        {
            "benchmark": "trigger_detect",
            "config": {
                "dataset": args.dataset,
                "arch": args.arch,
                "budget": budget.describe(),
                "triggers": args.triggers,
                "quick": args.quick,
                "attacker": f"test split [:{half}] (fit), natural queries test split [{half}:]",
                "pooled_draws": EXTRA_DRAWS + 1,
            },
            "results": results,
            "data_trigger_max_auroc": data_max,
            "data_trigger_auroc_le_0_6": data_max <= 0.6,
            "wall_seconds": time.perf_counter() - t_start,
            "env": env_info(),
        }
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
